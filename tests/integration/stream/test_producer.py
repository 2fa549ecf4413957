"""The event producer never loses an event silently: a delivery the broker refuses surfaces in flush()."""

import pytest

from pipelines.stream.producer import DeliveryError, EventProducer


def test_a_refused_delivery_raises_in_flush(stream_settings):
    # the client accepts 3 MB; the broker's limit (message.max.bytes, 1 MB by default) refuses it
    with EventProducer(stream_settings, max_request_size=8 * 1024 * 1024) as producer:
        producer.send_raw(b'{"ok": true}', key=b"u1")
        producer.send_raw(b"x" * (3 * 1024 * 1024), key=b"u2")
        with pytest.raises(DeliveryError, match=r"1 event\(s\) were not delivered.*MessageSizeTooLarge"):
            producer.flush()
