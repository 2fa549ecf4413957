"""The Kafka topics tandem uses: `interactions` (keyed by user id) and its dead-letter queue."""

from __future__ import annotations

from tandem.settings import Settings


def ensure_topics(settings: Settings) -> list[str]:
    """Create the interactions topic and its DLQ if they are missing; return the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        wanted = {settings.topic: settings.kafka_partitions, settings.dlq_topic: 1}
        new = [NewTopic(name, num_partitions=n, replication_factor=1)
               for name, n in wanted.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()
