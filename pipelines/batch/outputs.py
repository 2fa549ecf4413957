"""What the batch path has put online, read back from the offline store: the values serving reads, in memory.

`read_online_outputs(as_of, tracking_uri)` selects, for every view `tandem batch run` publishes online
(`ONLINE_VIEWS`), each entity's latest row within the view's TTL before `as_of` — the materializer's
own selection (`latest_offline_rows` over `materialize_interval`) — decoded to the Python values
Feast's Redis rows decode to, and loads the registered batch champion, checking its columns against
its feature service as serving does. `tandem evaluate` reads its workspace's run this way; the
stream's online-learning sink reads the live offline store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds

from models.jobs import NEIGHBOURS_VIEW
from models.ranking import Ranker, catalogue_columns
from models.registry import BATCH_MODEL, RegistryError, champion_version, load_champion
from models.replay_store import BatchOutputs
from models.rows import check_columns, service_columns
from pipelines.batch import feast_repo
from pipelines.batch.materialize import latest_offline_rows
from pipelines.batch.run import ONLINE_VIEWS, materialize_interval


class BatchOutputsError(ValueError):
    """The offline store or registry holds nothing serving could read; the message says what is missing."""


def _online_rows(view: str, start: datetime, end: datetime) -> tuple[str, dict[str, dict[str, Any]]]:
    """What materializing `view` over [start, end] would write (the materializer's own selection), by entity and
    full feature name, as Python values."""
    key = feast_repo.arrow_schema(view).names[0]  # the entity's join key comes first
    names = feast_repo.feature_names(view)
    if not feast_repo.source_path(view).exists():
        return key, {}
    latest, _ = latest_offline_rows(feast_repo.feature_view(view), key, names, start, end)
    rows = latest.select([key, *names]).to_pylist()
    return key, {str(r.pop(key)): {f"{view}__{n}": v for n, v in r.items()} for r in rows}


def load_batch_champion(tracking_uri: str, required: bool = True) -> Ranker | None:
    """The batch-ranker champion, checked against its feature service as serving checks it (None if there is
    none and it is not `required`)."""
    try:
        if not required and champion_version(BATCH_MODEL, tracking_uri) is None:
            return None
        champion = Ranker(load_champion(BATCH_MODEL, tracking_uri))
    except RegistryError as exc:
        raise BatchOutputsError(f"no batch-ranker champion to score with: {exc}") from None
    service = champion.feature_service
    try:
        columns = service_columns(feast_repo.feature_service(service))
    except KeyError:
        columns = None
    check_columns(champion.feature_columns, columns, service)  # what serving checks before scoring
    return champion


def last_published(view: str = NEIGHBOURS_VIEW) -> datetime | None:
    """When the last batch run published `view` (its offline table's newest event timestamp), None if never: the
    as-of time whose materialize interval selects what that run put online. The default view is the candidate
    step's, which writes one row per item at exactly the run's as_of."""
    path = feast_repo.source_path(view)
    if not path.exists():
        return None
    ts_field = feast_repo.feature_view(view).batch_source.timestamp_field
    column = ds.dataset(str(path), format="parquet", partitioning="hive").to_table(columns=[ts_field])[ts_field]
    newest = pc.max(column).as_py() if len(column) else None
    return None if newest is None else newest.astimezone(UTC)


def read_online_outputs(as_of: datetime, tracking_uri: str, require_champion: bool = True) -> BatchOutputs:
    """What the batch path's materialize step publishes as of `as_of`, and the batch champion."""
    users: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[str, Any]] = {}
    start, end = materialize_interval(as_of)
    for view in ONLINE_VIEWS:
        key, rows = _online_rows(view, start, end)
        target = users if key == "user_id" else items
        for entity, values in rows.items():
            target.setdefault(entity, {}).update(values)
    champion = load_batch_champion(tracking_uri, required=require_champion)
    if not items:
        raise BatchOutputsError(f"no item rows online as of {as_of.isoformat()} (from {start.isoformat()}): run "
                                "`tandem batch run` first")
    item_ids = sorted(items)
    return BatchOutputs(as_of=as_of.timestamp(), users=users, item_ids=item_ids,
                        items=catalogue_columns(item_ids, [items[i] for i in item_ids]), batch=champion,
                        run={"as_of": as_of.isoformat(), "users_online": len(users), "items_online": len(item_ids)})
