"""How `POST /feedback` puts an event into Kafka: within a deadline, and a failure means "not produced".

The contract a client relies on:

* **202**: the event is in the `interactions` topic (acknowledged by all in-sync replicas).
* **503**: the event was not produced and will not be: the client may retry it. A retry carries the
  same `event_id`, the idempotency key: the stream counts an event_id once, in every feature, so even
  the one case Kafka cannot rule out — a broker that wrote the event and died before acknowledging
  it — counts once after a retry.

How it holds under a Kafka outage:

* One long-lived producer per server worker, connected by a background thread, never inside a
  request. Until it has the topic's metadata, a request is answered 503 at once.
* Each record's delivery is bounded by the producer itself (`delivery_timeout_ms`): a record that is
  not acknowledged by then expires in the client's buffer and is never sent afterwards. The request
  waits a little longer than that, without holding a server thread (the endpoint is async), so
  `/recommend`'s threads never wait on Kafka.
* Should the client's own expiry ever be late, the request does not guess: the producer is closed
  at once (which drops what it still buffers), the answer is 503, and a new producer connects in
  the background.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from pipelines.stream.producer import EventProducer
from tandem.schema import Event
from tandem.settings import Settings

log = logging.getLogger("tandem.serving.feedback")

# the producer's own bound on one record (buffering, sending, acknowledgement, retries) ...
DELIVERY_TIMEOUT_MS = 1200
REQUEST_TIMEOUT_MS = 1000  # kafka-python requires delivery >= request + linger
# ... and how long a request waits for it before it stops trusting the producer
ANSWER_DEADLINE_S = 1.6
SEND_MAX_BLOCK_MS = 100  # send() waits at most this for buffer space (metadata is known before any request)
RECONNECT_DELAY_S = 1.0


class FeedbackUnavailable(Exception):
    """The event was not produced (and will not be); the message says why, for the 503 body."""


class FeedbackProducer:
    """The server's producer of /feedback events; `produce` is awaited by the async endpoint."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: EventProducer | None = None
        self._lock = threading.Lock()
        self._reconnect = threading.Event()  # set while there is no producer: the thread connects one
        self._reconnect.set()
        threading.Thread(target=self._keep_connected, name="feedback-producer", daemon=True).start()

    def _keep_connected(self) -> None:
        while True:
            self._reconnect.wait()
            producer = self._connect()
            with self._lock:
                self._producer = producer
                self._reconnect.clear()
            log.info("/feedback producer connected to %s", self.settings.kafka_bootstrap)

    def _connect(self) -> EventProducer:
        """A producer that knows the topic's partitions (so send() never waits on metadata); retries until then."""
        while True:
            try:
                producer = EventProducer(self.settings, linger_ms=0, delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                                         request_timeout_ms=REQUEST_TIMEOUT_MS, max_block_ms=SEND_MAX_BLOCK_MS,
                                         reconnect_backoff_max_ms=1000)
            except Exception as exc:  # noqa: BLE001 - NoBrokersAvailable and friends: try again shortly
                log.warning("Kafka not reachable for /feedback, retrying: %s", exc)
                time.sleep(RECONNECT_DELAY_S)
                continue
            while True:
                try:
                    if producer.partitions():
                        return producer
                except Exception as exc:  # noqa: BLE001 - KafkaTimeoutError while the broker is away
                    log.warning("waiting for topic %r metadata: %s", self.settings.topic, exc)
                time.sleep(RECONNECT_DELAY_S)

    async def produce(self, event: Event) -> Any:
        """Produce one event; its RecordMetadata, or FeedbackUnavailable (then it was not produced)."""
        producer = self._producer
        if producer is None:
            raise FeedbackUnavailable("Kafka is not connected (the server is connecting in the background)")
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(outcome: Any, failed: bool) -> None:
            if not done.done():
                (done.set_exception if failed else done.set_result)(outcome)

        try:
            future = producer.send(event)
        except Exception as exc:  # noqa: BLE001 - buffer full or the producer closing: nothing was queued
            raise FeedbackUnavailable(f"Kafka unavailable ({type(exc).__name__})") from exc
        future.add_callback(lambda meta: loop.call_soon_threadsafe(settle, meta, False))
        future.add_errback(lambda exc: loop.call_soon_threadsafe(settle, exc, True))
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout=ANSWER_DEADLINE_S)
        except TimeoutError:
            # the client's expiry is late: drop everything it still buffers before answering
            await asyncio.to_thread(self._discard, producer)
            if done.done() and not done.cancelled() and done.exception() is None:
                return done.result()  # delivered just before the close
            raise FeedbackUnavailable("Kafka did not acknowledge the event in time; it was not produced") from None
        except Exception as exc:  # noqa: BLE001 - the delivery failed (expired, refused): not produced
            raise FeedbackUnavailable(f"Kafka unavailable ({type(exc).__name__}: {exc})") from exc

    def _discard(self, producer: EventProducer) -> None:
        with self._lock:
            if self._producer is producer:
                self._producer = None
                self._reconnect.set()
        producer.close(timeout=0)
        log.warning("/feedback producer closed after a late delivery; reconnecting in the background")
