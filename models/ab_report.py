"""`tandem ab-report`: CTR and conversion per serving variant, with 95% Wilson intervals and differences.

Inputs: serving's decision log (one JSON line per /recommend answer: ``ts`` in epoch seconds, ``user_id``,
``variant``, ``items`` — see serving/service.py) and the feedback events (a dataset directory, or a
JSON-lines / parquet file in the event schema).

Attribution: a response is *clicked* if the same user clicks (or carts, or buys — each implies a click)
one of its shown items within `window_s` seconds after it, and *converts* if the user buys one of them in
that window. CTR = clicked responses / responses, conversion = converted responses / responses, per variant.
Each variant other than the control is compared with it: difference of proportions with Newcombe's
interval (models/monitoring.py). An event can count for several responses that showed the item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from models.monitoring import Interval, difference_interval, wilson_interval

CLICKS = ("click", "add_to_cart", "purchase")
CONVERSIONS = ("purchase",)
DEFAULT_WINDOW_S = 1_800.0


class ABReportError(ValueError):
    """Unreadable or empty inputs; the message names the file and the problem."""


@dataclass(frozen=True)
class VariantStats:
    """Counts and rates of one variant."""

    variant: str
    responses: int
    clicked: int
    converted: int

    @property
    def ctr(self) -> Interval:
        return wilson_interval(self.clicked, self.responses)

    @property
    def conversion(self) -> Interval:
        return wilson_interval(self.converted, self.responses)

    def as_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "responses": self.responses, "clicked": self.clicked,
                "converted": self.converted, "ctr": self.ctr.as_json(), "conversion": self.conversion.as_json()}


@dataclass(frozen=True)
class Comparison:
    """A variant against the control: differences of CTR and of conversion, with intervals."""

    variant: str
    control: str
    ctr_diff: Interval
    conversion_diff: Interval

    def as_json(self) -> dict[str, Any]:
        return {"variant": self.variant, "control": self.control, "ctr_diff": self.ctr_diff.as_json(),
                "conversion_diff": self.conversion_diff.as_json()}


def compare(stats: list[VariantStats], control: str | None = None) -> list[Comparison]:
    """Every variant against `control` (default: `batch_only` if present, else the first variant by name)."""
    by_name = {s.variant: s for s in stats}
    if not by_name:
        return []
    control = control or ("batch_only" if "batch_only" in by_name else sorted(by_name)[0])
    if control not in by_name:
        raise ABReportError(f"control variant {control!r} is not in the decision log (have {', '.join(by_name)})")
    c = by_name[control]
    return [Comparison(s.variant, control, difference_interval(s.clicked, s.responses, c.clicked, c.responses),
                       difference_interval(s.converted, s.responses, c.converted, c.responses))
            for s in sorted(stats, key=lambda s: s.variant) if s.variant != control]


def read_decisions(path: Path) -> pd.DataFrame:
    """The decision log as a frame: decision (line number), ts, user_id, variant, items."""
    path = Path(path)
    if not path.is_file():
        raise ABReportError(f"no decision log at {path} (serving writes it to TANDEM_DECISION_LOG)")
    rows = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                rows.append({"decision": n, "ts": float(d["ts"]), "user_id": str(d["user_id"]),
                             "variant": str(d["variant"]), "items": [str(i) for i in d.get("items") or []]})
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ABReportError(f"{path}:{n}: not a decision record ({exc!r})") from None
    if not rows:
        raise ABReportError(f"{path}: no decisions")
    return pd.DataFrame(rows)


def read_feedback(path: Path) -> pd.DataFrame:
    """Feedback events (user_id, item_id, event_type, t in epoch seconds) from a dataset dir, JSONL or parquet."""
    path = Path(path)
    try:
        if path.is_dir():
            from pipelines.dataset import read_events

            frame = read_events(path).to_pandas()
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.is_file():
            frame = pd.read_json(path, lines=True, dtype={"user_id": str, "item_id": str})
        else:
            raise ABReportError(f"no events at {path}")
    except ABReportError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad input file
        raise ABReportError(f"cannot read events from {path}: {exc}") from None
    missing = [c for c in ("user_id", "item_id", "event_type", "ts") if c not in frame.columns]
    if missing:
        raise ABReportError(f"{path}: events lack column(s) {', '.join(missing)}")
    ts = pd.to_datetime(frame["ts"], utc=True, format="ISO8601" if frame["ts"].dtype == object else None)
    return pd.DataFrame({"user_id": frame["user_id"].astype(str), "item_id": frame["item_id"].astype(str),
                         "event_type": frame["event_type"].astype(str),
                         "t": ts.astype("datetime64[ns, UTC]").astype("int64") / 1e9})


def variant_stats(decisions: pd.DataFrame, events: pd.DataFrame, window_s: float = DEFAULT_WINDOW_S
                  ) -> list[VariantStats]:
    """Per variant: responses, responses with a click on a shown item within the window, with a purchase."""
    shown = decisions[["decision", "ts", "user_id", "items"]].explode("items").dropna(subset=["items"])
    shown = shown.rename(columns={"items": "item_id"})
    ev = events[events["event_type"].isin(CLICKS)]
    joined = shown.merge(ev, on=["user_id", "item_id"], how="inner")
    joined = joined[(joined["t"] >= joined["ts"]) & (joined["t"] <= joined["ts"] + window_s)]
    clicked = set(joined["decision"])
    converted = set(joined.loc[joined["event_type"].isin(CONVERSIONS), "decision"])
    out = []
    for variant, group in decisions.groupby("variant", sort=True):
        ids = set(group["decision"])
        out.append(VariantStats(str(variant), len(ids), len(ids & clicked), len(ids & converted)))
    return out


def ab_report(decisions_path: Path, events_path: Path, window_s: float = DEFAULT_WINDOW_S,
              control: str | None = None) -> dict[str, Any]:
    """The whole report as JSON-ready data: per-variant stats and comparisons with the control."""
    decisions = read_decisions(decisions_path)
    events = read_feedback(events_path)
    stats = variant_stats(decisions, events, window_s)
    return {"decisions": str(decisions_path), "events": str(events_path), "window_s": window_s,
            "variants": [s.as_json() for s in stats], "comparisons": [c.as_json() for c in compare(stats, control)]}
