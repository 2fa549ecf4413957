"""HTTP load for the serving benchmark: an open-loop constant-rate generator and a closed-loop one (asyncio + aiohttp).

Open loop (`open_loop`): request i is due at start + i / rate, whatever happened to the requests before it,
and its latency is counted from that *scheduled* time, not from when it actually left. A server that
stalls therefore shows the stall in every request that was due meanwhile (no coordinated omission), and
so does a client that cannot keep up: the requests it sends late count as late. `send_lag_ms` in the
summary says how far behind schedule the generator itself ran, so the two can be told apart. Connections
come from a bounded pool: when all are busy a due request waits for one, and that wait is latency too.

Closed loop (`closed_loop`): C connections each send the next request as soon as the previous answer is
read; the completion rate is the server's maximum throughput at that concurrency (latency there is
service time under saturation, not a target figure).

The scheduling maths and the summary (`schedule`, `summarize`) are pure and unit-tested.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.core import percentiles

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Sample:
    """One request: when it was due, when it left, when its whole response had been read (event-loop clock, s)."""

    scheduled: float
    sent: float
    done: float
    status: int  # HTTP status; 0 when the request failed without one (connection error, timeout)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def latency_s(self) -> float:
        """From the scheduled send time to the end of the response: what a client on that schedule waited."""
        return self.done - self.scheduled

    @property
    def send_lag_s(self) -> float:
        """How late the generator sent it (0 for a generator that keeps up)."""
        return self.sent - self.scheduled


@dataclass
class PhaseStats:
    """The summary of one load phase."""

    mode: str  # "open" (fixed rate) or "closed" (max throughput)
    target_rate: float | None  # req/s asked for (open loop)
    concurrency: int  # the connection pool's bound (open) or the number of connections (closed)
    requests: int
    ok: int
    errors: int
    seconds: float  # from the first scheduled send to the last response
    achieved_rate: float  # successful responses per second over `seconds`
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50/p95/p99/max/mean of successful requests
    send_lag_ms: dict[str, float] = field(default_factory=dict)  # p99/max: the generator's own lateness
    statuses: dict[str, int] = field(default_factory=dict)  # status → count ("0": no response)
    client_cpu_s: float | None = None  # CPU the generator's process used during the phase


def schedule(rate: float, seconds: float, start: float = 0.0) -> list[float]:
    """The send times of an open-loop phase: floor(rate × seconds) requests, 1 / rate apart, from `start`."""
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"rate and seconds must be positive, got rate={rate}, seconds={seconds}")
    n = math.floor(rate * seconds + 1e-9)
    return [start + i / rate for i in range(n)]


def summarize(samples: Sequence[Sample], mode: str, target_rate: float | None = None, concurrency: int = 0,
              client_cpu_s: float | None = None) -> PhaseStats:
    """Latency percentiles (from the scheduled time), error count, achieved rate and generator lag of a phase."""
    ok = [s for s in samples if s.ok]
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    seconds = (max(s.done for s in samples) - min(s.scheduled for s in samples)) if samples else 0.0
    latencies = [s.latency_s * 1000 for s in ok]
    latency = percentiles(latencies)
    if latencies:
        latency |= {"max": max(latencies), "mean": sum(latencies) / len(latencies)}
    lags = [s.send_lag_s * 1000 for s in samples]
    lag = {"p99": percentiles(lags, (99,))["p99"], "max": max(lags)} if lags else {}
    return PhaseStats(mode=mode, target_rate=target_rate, concurrency=concurrency, requests=len(samples),
                      ok=len(ok), errors=len(samples) - len(ok), seconds=seconds,
                      achieved_rate=len(ok) / seconds if seconds > 0 else 0.0, latency_ms=latency, send_lag_ms=lag,
                      statuses=statuses, client_cpu_s=client_cpu_s)


async def _one(session, url: str, body: bytes, scheduled: float) -> Sample:
    import aiohttp

    loop = asyncio.get_running_loop()
    sent = loop.time()
    try:
        async with session.post(url, data=body, headers=JSON_HEADERS) as resp:
            await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        status = 0
    return Sample(scheduled, sent, loop.time(), status)


def _session(max_connections: int, timeout_s: float):
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections, force_close=False),
                                 timeout=aiohttp.ClientTimeout(total=timeout_s))


async def _open_loop(url: str, bodies: Sequence[bytes], rate: float, seconds: float, max_connections: int,
                     timeout_s: float) -> list[Sample]:
    loop = asyncio.get_running_loop()
    async with _session(max_connections, timeout_s) as session:
        due = schedule(rate, seconds, start=loop.time() + 0.05)
        tasks = []
        for i, at in enumerate(due):
            delay = at - loop.time()
            if delay > 0:  # behind schedule: send at once, and the lateness counts in its latency
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(session, url, bodies[i % len(bodies)], at)))
        return list(await asyncio.gather(*tasks))


async def _closed_loop(url: str, bodies: Sequence[bytes], concurrency: int, seconds: float,
                       timeout_s: float) -> list[Sample]:
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    counter = iter(range(10**12))
    async with _session(concurrency, timeout_s) as session:
        end = loop.time() + seconds

        async def worker() -> None:
            while loop.time() < end:
                now = loop.time()
                samples.append(await _one(session, url, bodies[next(counter) % len(bodies)], now))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


def open_loop(url: str, bodies: Sequence[bytes], rate: float, seconds: float, max_connections: int = 64,
              timeout_s: float = 10.0) -> PhaseStats:
    """POST bodies (in turn) to url at a constant `rate` for `seconds`; latency from each scheduled send time."""
    cpu = time.process_time()
    samples = asyncio.run(_open_loop(url, bodies, rate, seconds, max_connections, timeout_s))
    return summarize(samples, "open", rate, max_connections, client_cpu_s=time.process_time() - cpu)


def closed_loop(url: str, bodies: Sequence[bytes], concurrency: int, seconds: float,
                timeout_s: float = 10.0) -> PhaseStats:
    """`concurrency` connections POSTing back to back for `seconds`: the completion rate is max throughput."""
    cpu = time.process_time()
    samples = asyncio.run(_closed_loop(url, bodies, concurrency, seconds, timeout_s))
    return summarize(samples, "closed", None, concurrency, client_cpu_s=time.process_time() - cpu)
