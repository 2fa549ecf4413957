"""The stream's online-learning sink wired to the settings: `tandem stream run --example-sink
pipelines.stream.online_learning:from_settings`.

The sink (models/online_sink.py) scores its examples on what the batch path has put online — the
rows the last batch run's materialize step wrote to Redis, selected from the offline store — with the
registered batch champion, continues the online champion if there is one, and publishes the updates
that pass their sanity check to MLflow. It reads the batch side once, when the processor starts.
"""

from __future__ import annotations

import copy
import logging

from models.online_sink import OnlineExampleSink, mlflow_publisher
from models.registry import ONLINE_MODEL, RegistryError, champion_version, load_champion
from models.replay_store import ReplayStore
from pipelines.batch.outputs import BatchOutputsError, last_published, read_online_outputs
from tandem.settings import get_settings

log = logging.getLogger("tandem.stream")


def from_settings() -> OnlineExampleSink:
    """The online ranker's example sink over the settings' offline store, batch champion and MLflow registry."""
    settings = get_settings()
    as_of = last_published()
    if as_of is None:
        raise BatchOutputsError(f"nothing published under {settings.offline_dir} yet: run `tandem batch run` "
                                "before streaming into the online model")
    outputs = read_online_outputs(as_of, settings.mlflow_uri, require_champion=False)
    if outputs.batch is None:
        log.warning("no batch-ranker champion yet: the online examples carry batch score 0, as serving scores "
                    "without a batch model")
    try:
        online = load_champion(ONLINE_MODEL, settings.mlflow_uri).model \
            if champion_version(ONLINE_MODEL, settings.mlflow_uri) else None
    except RegistryError as exc:  # e.g. a champion trained on an older feature set: start a new model
        log.warning("not continuing the online champion: %s", exc)
        online = None
    log.info("online learning over %d items and %d users online, batch champion %s",
             len(outputs.item_ids), len(outputs.users),
             f"v{outputs.batch.version}" if outputs.batch else "none")
    return OnlineExampleSink(ReplayStore(outputs), publish=mlflow_publisher(settings.mlflow_uri),
                             model=copy.deepcopy(online) if online is not None else None, champion=online)
