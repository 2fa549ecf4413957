"""The model steps of `tandem batch run` (Feast path): train + register, then candidates, before materialize.

pipelines/batch/run.py runs named steps over a shared context; these are inserted between
"training_set" and "materialize" with `insert_steps(default_steps(), before="materialize",
new=model_steps())`. The training set arrives with the FeatureService's columns named
"<view>__<feature>"; the ranker trains on its numeric ones plus one derived cross feature,
`user_item_category_affinity` (the user's affinity share for the item's category), which is
what the monotone constraint applies to.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.train import KEY_COLUMNS, TrainingError

USER_CATEGORIES = "user_features_v1__top_categories"
USER_CATEGORY_SHARES = "user_features_v1__top_category_shares"
ITEM_CATEGORY = "item_features_v1__category"
CATEGORY_AFFINITY = "user_item_category_affinity"
HOLDOUT_FRACTION = 0.2


def category_affinity(user_categories: Sequence[str] | None, user_shares: Sequence[float] | None,
                      item_categories: Sequence[str | None]) -> np.ndarray:
    """One user's affinity share for each item's category (0 where the category is not among the user's top).

    What serving computes per request for `user_item_category_affinity`, from the user's
    user_features_v1 top_categories / top_category_shares and the candidates' item category.
    """
    shares = {c: float(v) for c, v in zip(user_categories or [], user_shares or [], strict=False)
              if c is not None and v is not None}
    return np.array([shares.get(c, 0.0) if c is not None else 0.0 for c in item_categories], dtype=float)


def add_category_affinity(frame: pd.DataFrame, categories: str = USER_CATEGORIES, shares: str = USER_CATEGORY_SHARES,
                          item_category: str = ITEM_CATEGORY, out: str = CATEGORY_AFFINITY) -> pd.DataFrame:
    """Add `out`: the share of the user's affinity in the row's item category (0 when not among the user's top)."""
    missing = [c for c in (categories, shares, item_category) if c not in frame.columns]
    if missing:
        raise TrainingError(f"cannot derive {out}: frame lacks {', '.join(missing)}")

    result = frame.copy()
    # row by row through the same function serving calls per request, so the two cannot disagree
    result[out] = [category_affinity(_listish(c), _listish(v), [i if isinstance(i, str) else None])[0]
                   for c, v, i in zip(frame[categories], frame[shares], frame[item_category], strict=True)]
    return result


def _listish(value: Any) -> list | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else list(value)


def model_feature_columns(frame: pd.DataFrame, service_columns: Sequence[str]) -> list[str]:
    """The service's numeric columns present in the frame (strings and lists dropped), plus derived ones."""
    columns = [c for c in service_columns if c in frame.columns and c not in KEY_COLUMNS
               and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    if CATEGORY_AFFINITY in frame.columns and CATEGORY_AFFINITY not in columns:
        columns.append(CATEGORY_AFFINITY)
    if not columns:
        raise TrainingError(f"none of the feature service's columns is numeric: {list(service_columns)[:8]}")
    return columns


def split_by_time(frame: pd.DataFrame, holdout_fraction: float = HOLDOUT_FRACTION
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): the holdout is the latest `holdout_fraction` of the frame by event_timestamp."""
    if not 0 < holdout_fraction < 1:
        raise TrainingError(f"holdout_fraction: expected a value in (0, 1), got {holdout_fraction!r}")
    ts = pd.to_datetime(frame["event_timestamp"], utc=True)
    cut = ts.quantile(1 - holdout_fraction)
    train, holdout = frame[ts < cut], frame[ts >= cut]
    for name, part in (("training", train), ("holdout", holdout)):
        if part.empty or part["label"].nunique() < 2:
            raise TrainingError(f"the {name} part of the time split (cut at {cut}) lacks positives or negatives")
    return train, holdout


def prepare_feast_frame(frame: pd.DataFrame, service_columns: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """The Feast training set with derived features added, and the columns the ranker trains on."""
    if all(c in frame.columns for c in (USER_CATEGORIES, USER_CATEGORY_SHARES, ITEM_CATEGORY)):
        frame = add_category_affinity(frame)
    return frame, model_feature_columns(frame, service_columns)


def step_train_batch(ctx: Any) -> str:
    """Train on the run's training set (earlier 80%), gate on its latest 20%, register `batch-ranker`."""
    from models.jobs import train_and_register_batch
    from pipelines.batch.training import feature_columns

    if ctx.training_set is None:
        raise TrainingError("no training set in the batch context: the training_set step must run first")
    service = ctx.options.feature_service
    frame, columns = prepare_feast_frame(ctx.training_set, feature_columns(ctx.store, service))
    train, holdout = split_by_time(frame)
    validation = {"success": True, "checkpoint": "training_set (GX) passed in the training_set step"}
    ranker, reg = train_and_register_batch(train, holdout, columns, service, ctx.settings.mlflow_uri,
                                           validation=validation)
    ctx.extras["batch_ranker"], ctx.extras["batch_registration"] = ranker, reg
    return (f"batch-ranker v{reg.version} ({'champion' if reg.champion else 'not champion'}: {reg.reason}); "
            f"holdout AUC {reg.metrics['auc']:.4f}, NDCG@10 {reg.metrics['ndcg@10']:.4f}")


def _features_by_entity(store, service) -> dict[str, list[str]]:
    """The service's feature references ("view:feature") grouped by their view's one join key."""
    groups: dict[str, list[str]] = {}
    for projection in service.feature_view_projections:
        keys = [c.name for c in store.get_feature_view(projection.name).entity_columns]
        if len(keys) != 1 or keys[0] not in ("user_id", "item_id"):
            raise TrainingError(f"candidate scoring reads per-user and per-item views; {projection.name} is keyed "
                                f"by {', '.join(keys) or 'nothing'}")
        groups.setdefault(keys[0], []).extend(f"{projection.name}:{f.name}" for f in projection.features)
    return groups


def _latest_features(store, key: str, ids: np.ndarray, refs: list[str], as_of: pd.Timestamp) -> pd.DataFrame:
    """Each id's features as of `as_of` through Feast's point-in-time retrieval, one row per id in `ids` order."""
    entity = pd.DataFrame({key: ids, "event_timestamp": as_of})
    if not refs:
        return entity[[key]]
    frame = store.get_historical_features(entity_df=entity, features=refs, full_feature_names=True).to_df()
    return entity[[key]].merge(frame.drop(columns=["event_timestamp"]), on=key, how="left")


def score_candidates(store, feature_service: str, user_ids: np.ndarray, item_ids: np.ndarray,
                     as_of: pd.Timestamp, ranker, chunk_rows: int = 1_000_000) -> np.ndarray:
    """The ranker's score of each (user_ids[k], item_ids[k]) pair, on the service's features as of `as_of`.

    The same point-in-time features Feast would join to every pair, fetched once per distinct user
    and per distinct item (on 10M events, 303k users' 32M candidates would be one Spark join), then
    assembled and scored chunk by chunk. `user_item_category_affinity` comes from the function serving
    calls, once per user and category.
    """
    groups = _features_by_entity(store, store.get_feature_service(feature_service))
    users, user_pos = np.unique(user_ids, return_inverse=True)
    items, item_pos = np.unique(item_ids, return_inverse=True)
    user_frame = _latest_features(store, "user_id", users, groups.get("user_id", []), as_of)
    item_frame = _latest_features(store, "item_id", items, groups.get("item_id", []), as_of)
    columns = list(ranker.feature_columns)
    sources = []  # per model column: (which side, values array)
    for column in columns:
        if column == CATEGORY_AFFINITY:
            missing = [c for c in (USER_CATEGORIES, USER_CATEGORY_SHARES) if c not in user_frame.columns]
            missing += [ITEM_CATEGORY] if ITEM_CATEGORY not in item_frame.columns else []
            if missing:
                raise TrainingError(f"cannot derive {CATEGORY_AFFINITY}: feature service {feature_service} lacks "
                                    f"{', '.join(missing)}")
            codes, names = pd.factorize(item_frame[ITEM_CATEGORY])
            table = np.array([category_affinity(_listish(c), _listish(v), list(names))
                              for c, v in zip(user_frame[USER_CATEGORIES], user_frame[USER_CATEGORY_SHARES],
                                              strict=True)], dtype=np.float32).reshape(len(users), len(names))
            sources.append(("affinity", (table, codes)))
        elif column in user_frame.columns:
            sources.append(("user", user_frame[column].to_numpy(dtype=np.float32, na_value=np.nan)))
        elif column in item_frame.columns:
            sources.append(("item", item_frame[column].to_numpy(dtype=np.float32, na_value=np.nan)))
        else:
            raise TrainingError(f"the ranker reads {column}, which feature service {feature_service} does not give")
    scores = np.empty(len(user_ids))
    for lo in range(0, len(user_ids), chunk_rows):
        u, i = user_pos[lo:lo + chunk_rows], item_pos[lo:lo + chunk_rows]
        x = np.empty((len(u), len(columns)), dtype=np.float32)
        for j, (side, values) in enumerate(sources):
            if side == "affinity":  # 0 for an item without a category, as category_affinity gives
                table, codes = values
                code = codes[i]
                x[:, j] = np.where(code >= 0, table[u, np.maximum(code, 0)] if table.shape[1] else 0.0, 0.0)
            else:
                x[:, j] = values[u] if side == "user" else values[i]
        scores[lo:lo + chunk_rows] = ranker.predict(x)
    return scores


def step_candidates(ctx: Any, limit: int = 100) -> str:
    """Each user's candidate list as of the run, scored by the batch champion on Feast features, written offline."""
    from models.candidates import (
        NEIGHBOURS_PER_ITEM,
        candidates_frame,
        covisitation_matrix,
        ease_matrix,
        generate_candidates,
        item_neighbours_frame,
        sequence_neighbours_frame,
        sequence_neighbours_matrix,
    )
    from models.jobs import read_dataset, write_offline_tables
    from models.registry import BATCH_MODEL, load_champion
    from models.replay_store import encode_dataset

    events, items = read_dataset(ctx.options.dataset_dir)
    catalog, log = encode_dataset(events, items)
    as_of = ctx.as_of.timestamp()
    covisit = covisitation_matrix(log.before(as_of), catalog.n_items)
    cand = generate_candidates(log, catalog, as_of, covisit=covisit)
    champion = load_champion(BATCH_MODEL, ctx.settings.mlflow_uri)
    champion.model.booster.set_param({"nthread": os.cpu_count() or 1})  # millions of rows, not one request's
    users = np.repeat(np.arange(len(cand.offsets) - 1), np.diff(cand.offsets))
    ts = pd.Timestamp(ctx.as_of)
    scores = score_candidates(ctx.store, ctx.options.feature_service, log.user_ids[users].astype(str),
                              catalog.item_ids[cand.items].astype(str), ts, champion.model)
    frame = candidates_frame(cand, log, catalog, scores, ts, limit, f"{BATCH_MODEL} v{champion.version}")
    popular = pd.DataFrame({"rank": np.arange(1, len(cand.popular) + 1),
                            "item_id": catalog.item_ids[cand.popular].astype(str),
                            "event_timestamp": pd.Series([ts] * len(cand.popular), dtype="datetime64[us, UTC]")})
    ease = ease_matrix(log.before(as_of), catalog.n_items, top=NEIGHBOURS_PER_ITEM)
    neighbours = item_neighbours_frame(ease, catalog, ts)
    sequence = sequence_neighbours_frame(sequence_neighbours_matrix(log.before(as_of), catalog.n_items), catalog, ts)
    path = write_offline_tables(frame, popular, neighbours, ctx.as_of, sequence)
    return f"{len(frame):,} users' lists (≤{limit} items, scored by v{champion.version}) -> {path.parent}"


def model_steps() -> list:
    """The Step objects to insert before "materialize" in pipelines.batch.run."""
    from pipelines.batch.run import Step

    return [Step("train_batch", "train, log and register the batch ranker", step_train_batch),
            Step("candidates", "precompute each user's candidate list", step_candidates)]
