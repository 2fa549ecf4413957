"""How the processor orders one partition's records before applying them (no services)."""

from collections import namedtuple

from pipelines.stream.processor import in_offset_order

Record = namedtuple("Record", "offset value")


def test_records_in_order_stay_as_they_are():
    records = [Record(o, f"v{o}") for o in (3, 4, 7)]
    assert in_offset_order(records) == records


def test_records_refetched_after_a_rebalance_are_ordered_and_applied_once():
    # fetched before the rebalance: 10..12; after it the position was reset to the committed offset 9
    records = [Record(o, f"v{o}") for o in (10, 11, 12, 9, 10, 11, 12, 13)]
    ordered = in_offset_order(records)
    assert [r.offset for r in ordered] == [9, 10, 11, 12, 13]
    assert ordered[-1].offset == max(r.offset for r in records)


class StubConsumer:
    def __init__(self):
        self.closed = False

    def close(self, autocommit=True, timeout_ms=None):
        self.closed = True


def test_a_rebalance_that_never_completes_replaces_the_consumer(monkeypatch):
    import time

    from kafka.structs import TopicPartition

    from pipelines.stream.processor import ProcessorConfig, StreamProcessor
    from tandem.settings import get_settings

    proc = StreamProcessor(get_settings(), ProcessorConfig(rebalance_stall_s=0.05))
    first, second = StubConsumer(), StubConsumer()
    proc._consumer = first
    monkeypatch.setattr(proc, "_new_consumer", lambda: second)
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)

    proc._rebalances.put(("assigned", [tp0]))
    proc._apply_rebalance()
    proc._check_rebalance_stall()
    assert sorted(proc.partitions) == [0] and proc._consumer is first

    # a delta: once BentoML is imported, prometheus_client is in multiprocess mode and counters of one name
    # are shared by every registry of the process
    stalls_before = proc.metrics.rebalance_stalls._value.get()
    proc._rebalances.put(("revoked", [tp0]))  # ... and the assignment that should follow never comes
    proc._apply_rebalance()
    proc._check_rebalance_stall()
    assert proc._consumer is first, "replaced before rebalance_stall_s"
    time.sleep(0.06)
    proc._check_rebalance_stall()
    assert first.closed and proc._consumer is second
    assert proc.metrics.rebalance_stalls._value.get() == stalls_before + 1

    proc._rebalances.put(("assigned", [tp0, tp1]))  # the new consumer joins
    proc._apply_rebalance()
    time.sleep(0.06)
    proc._check_rebalance_stall()
    assert proc._consumer is second and sorted(proc.partitions) == [0, 1]


def test_partition_for_agrees_with_the_default_partitioner():
    from kafka.partitioner.default import DefaultPartitioner

    from pipelines.stream.processor import partition_for

    class Cluster:
        def topics(self):
            return {"t"}

        def partitions_for_topic(self, topic):
            return set(range(7))

        available_partitions_for_topic = partitions_for_topic

    for user in ("u1", "u0001", "ünïcode-ü", "x" * 128):
        key = user.encode()
        assert partition_for(key, 7) == DefaultPartitioner().partition("t", user, key, None, None, Cluster())
