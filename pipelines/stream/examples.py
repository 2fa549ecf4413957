"""The hook that feeds the online model: labelled examples out of the stream processor.

For every valid event the processor can hand a `LabelledExample` to a sink: who
(user), what (item), the label (event_type, value), when (event time) and the
user's session features *just before* the event — what a model scoring that item
for that user at that moment would have seen. The online model (models/online.py)
implements `ExampleSink`; the default `NullExampleSink` drops everything, and the
processor skips building examples entirely when `wants_examples` is False.

Delivery is at-least-once: examples of a micro-batch are emitted before its writes
are committed, so a crash or a Redis retry can emit a batch again. `event_id` is
there to de-duplicate.

Select a sink with `tandem stream run --example-sink package.module:factory`;
the factory is called with no arguments and returns an ExampleSink.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class LabelledExample:
    event_id: str
    user_id: str
    item_id: str
    event_type: str  # the label: view (exposure) or a positive type from tandem.schema.POSITIVE_EVENT_TYPES
    value: float | None
    ts: datetime
    user_features: dict[str, Any] | None  # user_session_v1 values before this event; None for a user's first event


@runtime_checkable
class ExampleSink(Protocol):
    """Receives labelled examples in event-time order per user, one micro-batch per `emit` call."""

    wants_examples: bool

    def emit(self, examples: Sequence[LabelledExample]) -> None: ...

    def flush(self) -> None:
        """Called when the processor stops; persist anything buffered."""
        ...


class NullExampleSink:
    """The default: no online model attached, nothing is built or kept."""

    wants_examples = False

    def emit(self, examples: Sequence[LabelledExample]) -> None:
        return None

    def flush(self) -> None:
        return None


def load_example_sink(spec: str | None) -> ExampleSink:
    """Build the sink named by `package.module:factory` (None or "" gives the NullExampleSink)."""
    if not spec:
        return NullExampleSink()
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"example sink {spec!r}: expected package.module:factory")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"example sink {spec!r}: cannot load it ({exc})") from None
    sink = factory()
    if not isinstance(sink, ExampleSink):
        raise ValueError(f"example sink {spec!r}: {type(sink).__name__} lacks wants_examples/emit/flush")
    return sink
