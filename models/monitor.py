"""`tandem monitor`: feature drift (PSI), model drift over time, stream freshness — an HTML + JSON report.

Feature drift compares a *reference* sample (what the model was trained on) with a *recent* one:

* ``window`` (default): the dataset's events. The reference is the earliest `window` share of the event
  time span, the recent sample the latest share of the same length. Per window: the event-type mix,
  the category mix of interactions, the price of carted/purchased items, events per active user per
  day, events per session, the hour of day, and ``profile_affinity`` — for every non-view interaction
  of a user, the share of its category in that user's profile from the first half of the reference
  window (the training-time profile; the reference side is measured on the second half, so neither
  side is in-sample). A user whose taste drifts away from the training-time profile lowers it.
* ``offline``: the batch path's feature tables in the offline store (`user_features/`,
  `item_features/`): every numeric column of the earliest snapshot (or the one on `reference_date`)
  against the latest snapshot, except those that grow by construction (`*_total`, tenure, age).

Model drift: per day, the hit rate of a model frozen at training time — each user's top-k items by
(profile category share × item popularity), both from the reference window — on the interactions of
that day; the recent window's rate against the reference half-window's rate. Cheap (numpy), no MLflow.

Stream: the stream processor's Prometheus endpoint is scraped for consumer lag and freshness; if it
does not answer the report says "not running".

A feature whose PSI exceeds the threshold is flagged; any flag writes `retrain_requested.json` beside
the reports (features, PSI, threshold, report path) for the next batch run or an operator to act on.
"""

from __future__ import annotations

import base64
import html
import io
import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from models.monitoring import DEFAULT_THRESHOLD, Binned, bin_categorical, bin_numeric, psi_from_shares
from pipelines.dataset import read_events, read_items

RETRAIN_MARKER = "retrain_requested.json"
INTERACTIONS = ("click", "add_to_cart", "purchase")
PRICED = ("add_to_cart", "purchase")
MIN_SAMPLES = 50  # fewer values than this on either side: the feature is reported but never flagged
# offline mode skips columns that grow with time by construction (totals, ages): they always "drift"
GROWING = ("tenure_days", "age_days")
MODEL_DROP_TOLERANCE = 0.4  # recent hit rate below (1 - this) × reference = model drift (new items alone: ~0.2-0.3)


class MonitorError(ValueError):
    """Nothing to monitor (no data, no snapshots); the message says what is missing."""


@dataclass
class FeatureDrift:
    """One feature's PSI and the shares behind it."""

    name: str
    kind: str  # numeric | categorical
    source: str  # window | offline:<table>
    psi: float
    n_reference: int
    n_recent: int
    flagged: bool
    binned: Binned = field(repr=False)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": self.source, "psi": round(self.psi, 6),
                "n_reference": self.n_reference, "n_recent": self.n_recent, "flagged": self.flagged,
                "bins": self.binned.labels, "reference_shares": self.binned.reference.round(6).tolist(),
                "recent_shares": self.binned.recent.round(6).tolist()}


@dataclass
class MonitorResult:
    """Everything the report shows."""

    threshold: float
    reference: str
    windows: dict[str, str]
    features: list[FeatureDrift]
    model: dict[str, Any]
    stream: dict[str, Any]
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def flagged(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.flagged]

    def as_json(self) -> dict[str, Any]:
        return {"created": self.created, "threshold": self.threshold, "reference": self.reference,
                "windows": self.windows, "features": [f.as_json() for f in self.features],
                "flagged": [f.name for f in self.flagged], "model": self.model, "stream": self.stream}


def feature_drift(name: str, kind: str, reference: Any, recent: Any, threshold: float, source: str
                  ) -> FeatureDrift | None:
    """PSI of one feature (None when either side has no values)."""
    ref = np.asarray(reference)
    rec = np.asarray(recent)
    if kind == "numeric":
        ref = ref.astype(np.float64)
        rec = rec.astype(np.float64)
        ref, rec = ref[np.isfinite(ref)], rec[np.isfinite(rec)]
    if len(ref) == 0 or len(rec) == 0:
        return None
    binned = bin_numeric(ref, rec) if kind == "numeric" else bin_categorical(list(ref), list(rec))
    psi = psi_from_shares(binned.reference, binned.recent)
    enough = min(len(ref), len(rec)) >= MIN_SAMPLES
    return FeatureDrift(name, kind, source, psi, len(ref), len(rec), bool(enough and psi > threshold), binned)


# ---------------------------------------------------------------------------------------------- dataset windows


def _window_features(w: pd.DataFrame, profile: pd.DataFrame) -> dict[str, np.ndarray]:
    days = max((w["t"].max() - w["t"].min()) / 86_400.0, 1.0 / 24)
    inter = w[w["event_type"].isin(INTERACTIONS)]
    merged = inter.merge(profile, on=["user_id", "category"], how="left")
    merged = merged[merged["user_id"].isin(profile["user_id"].unique())]
    return {
        "event_type": w["event_type"].to_numpy(),
        "category": inter["category"].to_numpy(),
        "price": w.loc[w["event_type"].isin(PRICED), "value"].to_numpy(dtype=np.float64),
        "events_per_user_day": (w.groupby("user_id").size() / days).to_numpy(),
        "session_length": w.groupby("session_id").size().to_numpy(dtype=np.float64),
        "hour_of_day": w["hour"].to_numpy(),
        "profile_affinity": merged["share"].fillna(0.0).to_numpy(),
    }


FEATURE_KINDS = {"event_type": "categorical", "category": "categorical", "price": "numeric",
                 "events_per_user_day": "numeric", "session_length": "numeric", "hour_of_day": "categorical",
                 "profile_affinity": "numeric"}


def _category_profile(events: pd.DataFrame) -> pd.DataFrame:
    counts = events.groupby(["user_id", "category"]).size()
    share = counts / counts.groupby(level="user_id").transform("sum")
    return share.rename("share").reset_index()


def load_events(dataset_dir: Path) -> pd.DataFrame:
    """The dataset's events with the item category, `t` (epoch seconds) and `hour`."""
    events = read_events(dataset_dir).to_pandas()
    items = read_items(dataset_dir).to_pandas()[["item_id", "category"]]
    events = events.merge(items, on="item_id", how="left")
    events["category"] = events["category"].fillna("unknown")
    ts = pd.to_datetime(events["ts"], utc=True).astype("datetime64[ns, UTC]")  # whatever unit parquet held
    events["t"] = ts.astype("int64") / 1e9
    events["hour"] = ts.dt.hour
    return events.sort_values("t", kind="stable").reset_index(drop=True)


def window_drift(events: pd.DataFrame, threshold: float, window: float = 0.25
                 ) -> tuple[list[FeatureDrift], dict[str, str], dict[str, Any]]:
    """Feature drift between the earliest and the latest `window` share of the events, plus model drift."""
    if not 0.05 <= window <= 0.5:
        raise MonitorError(f"window: expected a share of the time span in [0.05, 0.5], got {window}")
    if len(events) == 0:
        raise MonitorError("no events to monitor")
    lo, hi = float(events["t"].min()), float(events["t"].max())
    span = hi - lo
    if span <= 0:
        raise MonitorError("all events share one timestamp: no early and recent window to compare")
    ref_end, rec_start, profile_end = lo + window * span, hi - window * span, lo + window * span / 2
    reference = events[events["t"] < ref_end]
    recent = events[events["t"] >= rec_start]
    profile = _category_profile(events[(events["t"] < profile_end) & events["event_type"].isin(INTERACTIONS)])
    ref_f = _window_features(reference, profile)
    ref_f["profile_affinity"] = _window_features(reference[reference["t"] >= profile_end], profile)[
        "profile_affinity"]
    rec_f = _window_features(recent, profile)
    results = [d for name, kind in FEATURE_KINDS.items()
               if (d := feature_drift(name, kind, ref_f[name], rec_f[name], threshold, "window")) is not None]
    windows = {"reference": f"{_iso(lo)} → {_iso(ref_end)}", "recent": f"{_iso(rec_start)} → {_iso(hi)}",
               "profile": f"{_iso(lo)} → {_iso(profile_end)}"}
    return results, windows, model_drift(events, profile_end, ref_end, rec_start)


def model_drift(events: pd.DataFrame, profile_end: float, ref_end: float, rec_start: float, k: int = 10
                ) -> dict[str, Any]:
    """Per-day hit rate@k of a model frozen at `profile_end`; reference = [profile_end, ref_end), recent ≥ rec_start."""
    train = events[(events["t"] < profile_end) & events["event_type"].isin(INTERACTIONS)]
    later = events[(events["t"] >= profile_end) & events["event_type"].isin(INTERACTIONS)]
    if train.empty or later.empty:
        return {"metric": f"hitrate@{k}", "days": [], "note": "not enough interactions"}
    items = pd.Index(sorted(events["item_id"].unique()))
    cats = pd.Index(sorted(events["category"].unique()))
    item_cat = events.drop_duplicates("item_id").set_index("item_id")["category"].reindex(items)
    pop = train.groupby("item_id").size().reindex(items, fill_value=0).to_numpy(dtype=np.float64) + 1e-3
    prof = _category_profile(train)
    users = pd.Index(sorted(prof["user_id"].unique()))
    share = np.zeros((len(users), len(cats)))
    share[users.get_indexer(prof["user_id"]), cats.get_indexer(prof["category"])] = prof["share"].to_numpy()
    item_cat_idx = cats.get_indexer(item_cat.to_numpy())
    top = np.zeros((len(users), min(k, len(items))), dtype=np.int64)
    for start in range(0, len(users), 2_000):  # bounded memory: users × items scores per block
        scores = share[start:start + 2_000][:, item_cat_idx] * pop[None, :]
        top[start:start + 2_000] = np.argsort(-scores, axis=1, kind="stable")[:, :top.shape[1]]
    known = later[later["user_id"].isin(users)]
    u = users.get_indexer(known["user_id"])
    i = items.get_indexer(known["item_id"])
    hit = (top[u] == i[:, None]).any(axis=1)
    frame = pd.DataFrame({"day": pd.to_datetime(known["t"].to_numpy(), unit="s", utc=True).strftime("%Y-%m-%d"),
                          "hit": hit, "t": known["t"].to_numpy()})
    daily = frame.groupby("day")["hit"].agg(["mean", "size"]).reset_index()
    ref_rate = float(frame.loc[frame["t"] < ref_end, "hit"].mean()) if (frame["t"] < ref_end).any() else float("nan")
    rec_rate = float(frame.loc[frame["t"] >= rec_start, "hit"].mean()) if (frame["t"] >= rec_start).any() else float(
        "nan")
    drop = (ref_rate - rec_rate) / ref_rate if ref_rate > 0 else float("nan")
    return {"metric": f"hitrate@{k}", "model": "frozen profile × popularity at the end of the profile window",
            "days": [{"day": d, "hitrate": round(float(m), 6), "queries": int(n)}
                     for d, m, n in daily.itertuples(index=False)],
            "reference_hitrate": ref_rate, "recent_hitrate": rec_rate, "relative_drop": drop,
            "tolerance": MODEL_DROP_TOLERANCE, "flagged": bool(np.isfinite(drop) and drop > MODEL_DROP_TOLERANCE)}


# ---------------------------------------------------------------------------------------------- offline store


def offline_drift(offline_dir: Path, threshold: float, reference_date: str | None = None,
                  tables: tuple[str, ...] = ("user_features", "item_features")) -> tuple[list[FeatureDrift], dict]:
    """PSI of every numeric column of each feature table: the reference snapshot date against the latest."""
    results: list[FeatureDrift] = []
    windows: dict[str, str] = {}
    for table in tables:
        root = Path(offline_dir) / table
        dates = sorted(p.name.split("=", 1)[1] for p in root.glob("date=*") if p.is_dir())
        if len(dates) < 2:
            continue
        ref_date = reference_date if reference_date in dates else dates[0]
        if reference_date and reference_date not in dates:
            raise MonitorError(f"{root}: no snapshot dated {reference_date} (have {dates[0]} … {dates[-1]})")
        ref = pads.dataset(root / f"date={ref_date}", format="parquet").to_table().to_pandas()
        rec = pads.dataset(root / f"date={dates[-1]}", format="parquet").to_table().to_pandas()
        windows[table] = f"{ref_date} → {dates[-1]}"
        for col in ref.columns:
            growing = col.endswith("_total") or col in GROWING
            if (col in rec.columns and not growing and pd.api.types.is_numeric_dtype(ref[col])
                    and not pd.api.types.is_bool_dtype(ref[col])):
                d = feature_drift(col, "numeric", ref[col].to_numpy(), rec[col].to_numpy(), threshold,
                                  f"offline:{table}")
                if d is not None:
                    results.append(d)
    if not windows:
        raise MonitorError(f"no feature table under {offline_dir} has two snapshot dates: run `tandem batch run` "
                           "on two days (or --since) first")
    return results, windows


# ---------------------------------------------------------------------------------------------- stream


def scrape_stream(url: str, timeout: float = 2.0) -> dict[str, Any]:
    """Consumer lag and freshness from the stream processor's Prometheus endpoint, or state 'not running'."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - an operator-given URL
            text = response.read().decode()
    except (OSError, ValueError) as exc:
        return {"state": "not running", "url": url, "detail": str(exc)}
    lag: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    events = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "tandem_stream_consumer_lag":
                lag[s.labels.get("partition", "?")] = s.value
            elif s.name == "tandem_stream_freshness_seconds_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == "tandem_stream_freshness_seconds_count":
                count = s.value
            elif s.name == "tandem_stream_freshness_seconds_sum":
                total = s.value
            elif s.name == "tandem_stream_events_total":
                events += s.value
    return {"state": "running", "url": url, "consumer_lag": lag, "lag_total": sum(lag.values()),
            "events_total": events, "freshness_mean_s": total / count if count else None,
            "freshness_p99_s": histogram_quantile(buckets, 0.99) if count else None}


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the first cumulative bucket holding the q-quantile (Prometheus-style, no interpolation)."""
    if not buckets:
        return None
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total <= 0:
        return None
    for le, cum in buckets:
        if cum >= q * total:
            return le
    return buckets[-1][0]


# ---------------------------------------------------------------------------------------------- run + report


def run_monitor(dataset_dir: Path | None, offline_dir: Path | None, reference: str = "window",
                threshold: float = DEFAULT_THRESHOLD, window: float = 0.25, stream_url: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> MonitorResult:
    """Compute feature drift (`reference` = window | offline | offline:YYYY-MM-DD), model drift, stream state."""
    steps = 3
    features: list[FeatureDrift] = []
    windows: dict[str, str] = {}
    model: dict[str, Any] = {"note": "model drift needs the dataset (reference=window)"}
    if reference == "window":
        if dataset_dir is None:
            raise MonitorError("reference=window needs a dataset directory (--data)")
        events = load_events(dataset_dir)
        _tick(progress, 1, steps)
        features, windows, model = window_drift(events, threshold, window)
    elif reference == "offline" or reference.startswith("offline:"):
        if offline_dir is None:
            raise MonitorError("reference=offline needs the offline store directory")
        date = reference.split(":", 1)[1] if ":" in reference else None
        _tick(progress, 1, steps)
        features, windows = offline_drift(offline_dir, threshold, date)
    else:
        raise MonitorError(f"reference {reference!r}: expected window, offline or offline:YYYY-MM-DD")
    _tick(progress, 2, steps)
    stream = scrape_stream(stream_url) if stream_url else {"state": "not running", "detail": "no metrics URL"}
    _tick(progress, 3, steps)
    return MonitorResult(threshold, reference, windows, features, model, stream)


def _tick(progress: Callable[[int, int], None] | None, done: int, total: int) -> None:
    if progress:
        progress(done, total)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(result: MonitorResult) -> dict[str, str]:
    """Base64 PNGs: one per feature (reference vs recent shares), the PSI bar chart, the model's daily hit rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    if result.features:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(result.features) + 1.2))
        names = [f"{f.name} ({f.source})" for f in result.features]
        ax.barh(names, [f.psi for f in result.features],
                color=["tab:red" if f.flagged else "tab:blue" for f in result.features])
        ax.axvline(result.threshold, color="black", linestyle="--", label=f"threshold {result.threshold}")
        ax.set_xlabel("PSI")
        ax.legend()
        out["psi"] = _png(fig)
    for f in result.features:
        fig, ax = plt.subplots(figsize=(6, 2.6))
        x = np.arange(len(f.binned.labels))
        ax.bar(x - 0.2, f.binned.reference, width=0.4, label="reference")
        ax.bar(x + 0.2, f.binned.recent, width=0.4, label="recent")
        ax.set_xticks(x, f.binned.labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("share")
        ax.set_title(f"{f.name}: PSI {f.psi:.3f}")
        ax.legend(fontsize=7)
        out[f"feature:{f.source}:{f.name}"] = _png(fig)
    days = result.model.get("days") or []
    if days:
        fig, ax = plt.subplots(figsize=(7, 2.8))
        ax.plot([d["day"] for d in days], [d["hitrate"] for d in days], marker="o")
        ax.set_ylabel(result.model["metric"])
        ax.set_title("model drift: frozen model's daily hit rate")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        out["model"] = _png(fig)
    return out


def write_report(result: MonitorResult, reports_dir: Path) -> tuple[Path, Path, Path | None]:
    """Write monitor-<timestamp>.html and .json; flagged drift also writes (or refreshes) the retrain marker."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    html_path = reports_dir / f"monitor-{stamp}.html"
    json_path = reports_dir / f"monitor-{stamp}.json"
    json_path.write_text(json.dumps(result.as_json(), indent=2, default=_json_default) + "\n")
    html_path.write_text(render_html(result, plots(result)))
    marker = None
    if result.flagged:
        marker = reports_dir / RETRAIN_MARKER
        marker.write_text(json.dumps({
            "requested": result.created, "report": str(html_path), "threshold": result.threshold,
            "features": [{"name": f.name, "source": f.source, "psi": round(f.psi, 6)} for f in result.flagged],
            "model_drift": bool(result.model.get("flagged", False))}, indent=2) + "\n")
    return html_path, json_path, marker


def retrain_request(reports_dir: Path) -> dict[str, Any] | None:
    """The pending retrain marker's contents (None if there is none or it is unreadable)."""
    path = Path(reports_dir) / RETRAIN_MARKER
    try:
        request = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return request if isinstance(request, dict) else None


def consume_retrain_request(reports_dir: Path) -> Path | None:
    """Mark the pending request as handled: rename it to retrain_requested-<time>.done.json (kept for audit)."""
    path = Path(reports_dir) / RETRAIN_MARKER
    if not path.is_file():
        return None
    done = path.with_name(f"retrain_requested-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.done.json")
    path.replace(done)
    return done


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def render_html(result: MonitorResult, images: dict[str, str]) -> str:
    """A self-contained HTML page (PNG plots embedded as data URIs)."""
    esc = html.escape

    def img(key: str) -> str:
        return f'<img src="data:image/png;base64,{images[key]}">' if key in images else ""

    rows = "".join(
        f"<tr{' class=flag' if f.flagged else ''}><td>{esc(f.name)}</td><td>{esc(f.source)}</td><td>{f.kind}</td>"
        f"<td>{f.psi:.4f}</td><td>{f.n_reference:,}</td><td>{f.n_recent:,}</td>"
        f"<td>{'DRIFT' if f.flagged else 'ok'}</td></tr>" for f in result.features)
    model = result.model
    model_text = esc(model.get("note", "")) if not model.get("days") else (
        f"{esc(model['metric'])} of {esc(model['model'])}: reference {model['reference_hitrate']:.4f}, recent "
        f"{model['recent_hitrate']:.4f} (relative drop {model['relative_drop']:.1%}, tolerance "
        f"{model['tolerance']:.0%}) — {'<b>DRIFT</b>' if model['flagged'] else 'ok'}")
    stream = result.stream
    stream_text = (f"not running ({esc(str(stream.get('detail', '')))})" if stream["state"] != "running" else
                   f"lag {stream['lag_total']:,.0f} records {esc(json.dumps(stream['consumer_lag']))}; freshness "
                   f"mean {stream['freshness_mean_s']} s, p99 ≤ {stream['freshness_p99_s']} s")
    flagged = ", ".join(esc(f.name) for f in result.flagged) or "none"
    windows = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in result.windows.items())
    details = "".join(f"<div>{img(f'feature:{f.source}:{f.name}')}</div>" for f in result.features)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>tandem monitor {result.created}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left}}
tr.flag{{background:#fdd}}</style></head><body>
<h1>tandem monitor — {result.created}</h1>
<p>Reference: {esc(result.reference)}; PSI threshold {result.threshold}. Flagged: <b>{flagged}</b>.</p>
<ul>{windows}</ul>
<h2>Feature drift (PSI)</h2>
<table><tr><th>feature</th><th>source</th><th>kind</th><th>PSI</th><th>n reference</th><th>n recent</th>
<th></th></tr>{rows}</table>
{img("psi")}
<h2>Model drift</h2><p>{model_text}</p>{img("model")}
<h2>Stream</h2><p>{stream_text}</p>
<h2>Distributions</h2>{details}
</body></html>
"""
