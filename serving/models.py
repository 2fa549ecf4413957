"""The batch and online champions serving scores with, swapped in place when their MLflow alias moves.

A background thread polls the `champion` alias of `batch-ranker` and `online-ranker` every
`TANDEM_MODEL_POLL_S` seconds. A new version is loaded beside the old one and then published as
one immutable `Champions` value: a request reads that value once, so it finishes with the pair it
started with, and nothing in flight fails during a swap. Loading is models/registry.py's
(`champion_version`, `load_version`, the same loaders behind its `ChampionWatcher`); the poller is
serving's own so that both champions are swapped as one pair, off the request path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from models.ranking import Ranker
from models.registry import BATCH_MODEL, ONLINE_MODEL, champion_version, load_version
from tandem.settings import Settings

log = logging.getLogger("tandem.serving.models")


@dataclass(frozen=True)
class Champions:
    batch: Ranker | None = None
    online: Ranker | None = None


class ChampionHolder:
    """Holds the current champions and follows their aliases in the registry."""

    def __init__(self, settings: Settings, names: Sequence[str] = (BATCH_MODEL, ONLINE_MODEL)):
        self.settings = settings
        self.batch_name, self.online_name = names
        self.current = Champions()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.polled_once = threading.Event()
        self.on_change: list[Callable[[Champions], None]] = []

    def start(self) -> ChampionHolder:
        self.poll()
        threading.Thread(target=self._loop, name="champion-poll", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.model_poll_s):
            self.poll()

    def poll(self) -> Champions:
        """Check both aliases once; load and publish whatever moved. MLflow being down keeps what is loaded."""
        with self._lock:
            champions = self.current
            for slot, name in (("batch", self.batch_name), ("online", self.online_name)):
                held: Ranker | None = getattr(champions, slot)
                try:
                    version = champion_version(name, self.settings.mlflow_uri)
                    if version == (held.version if held else None):
                        continue
                    ranker = Ranker(load_version(name, version, self.settings.mlflow_uri)) if version else None
                except Exception as exc:  # registry unreachable or a broken artifact: keep serving the old one
                    log.warning("could not refresh %s@champion: %s", name, exc)
                    continue
                champions = replace(champions, **{slot: ranker})
                log.info("%s@champion: %s → %s", name, held.version if held else None,
                         ranker.version if ranker else None)
            if champions is not self.current:
                self.current = champions
                for callback in self.on_change:
                    callback(champions)
            self.polled_once.set()
            return champions
