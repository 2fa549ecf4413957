"""The Kafka producer behind POST /feedback: schema events to the interactions topic, keyed by user id.

Keyed by user id so one user's events stay in order on one partition, which the stream
processor's per-user session state relies on.
"""

from __future__ import annotations

from typing import Any

from tandem.schema import Event
from tandem.settings import Settings


class EventProducer:
    """An idempotent (acks=all) Kafka producer of schema events to the interactions topic."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        from kafka import KafkaProducer

        config: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap, "acks": "all",
                                  "enable_idempotence": True, "linger_ms": 5}
        config.update(overrides)
        self.topic = settings.topic
        self._producer = KafkaProducer(**config)

    def send(self, event: Event) -> Any:
        """Queue one event (returns kafka-python's future)."""
        return self._producer.send(self.topic, key=event.user_id.encode(), value=event.to_json())

    def close(self) -> None:
        self._producer.close(timeout=5)
