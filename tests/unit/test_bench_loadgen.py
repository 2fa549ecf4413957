"""The serving benchmark's pure parts: open-loop scheduling, latency from the schedule, the summary and the rows."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pandas as pd
import pytest

from benchmarks.loadgen import Sample, closed_loop, open_loop, schedule, summarize
from benchmarks.serving import _degraded, breakdown, notes, request_bodies, rows


def test_schedule_is_evenly_spaced_at_the_rate_from_the_start():
    due = schedule(300, 10, start=5.0)
    assert len(due) == 3000
    assert due[0] == 5.0
    assert due[1] - due[0] == pytest.approx(1 / 300)
    assert due[-1] == pytest.approx(5.0 + 2999 / 300)


def test_schedule_counts_whole_requests_only_and_refuses_nonsense():
    assert len(schedule(3, 1.0)) == 3
    assert len(schedule(0.3 * 10, 1.0)) == 3  # float rate × seconds is not rounded down by an epsilon
    assert len(schedule(2, 0.9)) == 1
    with pytest.raises(ValueError):
        schedule(0, 1)
    with pytest.raises(ValueError):
        schedule(10, -1)


def test_latency_counts_from_the_scheduled_time_not_the_send():
    late = Sample(scheduled=1.0, sent=1.2, done=1.25, status=200)
    assert late.latency_s == pytest.approx(0.25)  # the 200 ms the client waited to send is latency too
    assert late.send_lag_s == pytest.approx(0.2)
    assert late.ok
    assert not Sample(1.0, 1.0, 2.0, 0).ok
    assert not Sample(1.0, 1.0, 2.0, 503).ok


def test_summary_a_stall_shows_in_every_request_due_during_it():
    # 10 requests due 10 ms apart; the server stalls until t = 0.2 s, then answers them all at once
    samples = [Sample(i * 0.01, i * 0.01, 0.2 if i < 10 else i * 0.01 + 0.001, 200) for i in range(100)]
    stats = summarize(samples, "open", target_rate=100, concurrency=8)
    assert stats.requests == stats.ok == 100 and stats.errors == 0
    assert stats.latency_ms["max"] == pytest.approx(200)
    assert stats.latency_ms["p50"] == pytest.approx(1, abs=0.01)
    assert stats.latency_ms["p95"] > 100 and stats.latency_ms["p99"] > 180  # the 10 % that waited are the tail
    assert stats.seconds == pytest.approx(0.991)
    assert stats.achieved_rate == pytest.approx(100 / 0.991)


def test_summary_counts_errors_by_status_and_leaves_them_out_of_latency():
    samples = [Sample(0.0, 0.0, 0.005, 200), Sample(0.1, 0.1, 0.102, 200), Sample(0.2, 0.2, 5.2, 0),
               Sample(0.3, 0.3, 0.31, 500)]
    stats = summarize(samples, "open", 10)
    assert (stats.ok, stats.errors) == (2, 2)
    assert stats.statuses == {"200": 2, "0": 1, "500": 1}
    assert stats.latency_ms["max"] == pytest.approx(5)
    assert stats.achieved_rate == pytest.approx(2 / 5.2)


def test_summary_of_nothing_is_empty_not_an_error():
    stats = summarize([], "closed")
    assert stats.requests == 0 and stats.achieved_rate == 0 and stats.latency_ms == {} and stats.send_lag_ms == {}


def _phase(p50: float, p99: float, rate: float, errors: int = 0) -> dict:
    return {"mode": "open", "target_rate": 300.0, "concurrency": 64, "requests": 3000, "ok": 3000 - errors,
            "errors": errors, "seconds": 10.0, "achieved_rate": rate, "latency_ms": {"p50": p50, "p99": p99}}


def _figures(p50: float, p99: float, max_rate: float, errors: int = 0) -> dict:
    return {"fixed": _phase(p50, p99, 300, errors), "closed": _phase(p50, p99, max_rate),
            "server_cpu_ms_per_request": 2.0, "peak_rss_mb_total": 500.0}


def test_rows_read_the_targets_as_design_states_them():
    met = {r.metric: r for r in rows(_figures(4, 12, 420), _figures(2, 9, 600))}
    p99 = met["p99 at 300 req/s"]
    assert (p99.tandem, p99.stock, p99.ratio, p99.met) == (12, 9, pytest.approx(12 / 9), True)
    tput = next(r for m, r in met.items() if m.startswith("max throughput"))
    assert tput.ratio == pytest.approx(0.7) and tput.met
    assert met["p50 at 300 req/s"].met is None  # no target of its own


@pytest.mark.parametrize(("tandem", "stock"), [
    (_figures(4, 16, 420), _figures(2, 14, 600)),  # over 15 ms
    (_figures(4, 10, 420), _figures(2, 6, 600)),  # 1.67× the no-op
    (_figures(4, 10, 420, errors=3), _figures(2, 9, 600)),  # fast, but some requests failed
])
def test_p99_target_fails_on_either_bound_or_on_errors(tandem, stock):
    assert rows(tandem, stock)[0].met is False


def test_throughput_target_is_a_ratio_of_the_no_op():
    tput = rows(_figures(4, 10, 300), _figures(2, 9, 600))[3]
    assert tput.ratio == pytest.approx(0.5) and tput.met is False


def test_degraded_answers_are_counted_by_reason_from_the_decision_log():
    lines = [json.dumps({"degraded": []}), json.dumps({"degraded": ["online_store_unreachable"]}),
             json.dumps({"degraded": ["online_store_unreachable", "online_model_missing"]}), '{"degraded": ["cut']
    assert _degraded(lines) == {"online_store_unreachable": 2, "online_model_missing": 1}


def _frame(function: str, time: float, *children, file: str = "serving/x.py") -> SimpleNamespace:
    return SimpleNamespace(function=function, time=time, children=list(children), file_path_short=file,
                           is_synthetic=function == "[self]")


def test_breakdown_sums_a_function_over_every_call_path():
    tree = _frame("root", 3.0,
                  _frame("a", 1.0, _frame("_recommend", 1.0, _frame("score", 0.6), _frame("[self]", 0.4))),
                  _frame("b", 2.0, _frame("_recommend", 2.0, _frame("score", 1.5, file="serving/models.py"),
                                          _frame("read_user", 0.5))))
    total, parts = breakdown(tree, "_recommend")
    assert total == 3.0
    assert parts == {"score (x.py)": 0.6, "score (models.py)": 1.5, "(own code)": 0.4, "read_user (x.py)": 0.5}


def test_request_bodies_ask_for_k_items_for_every_user_in_a_seeded_order(tmp_path):
    pd.DataFrame({"user_id": [f"u{i}" for i in range(20)]}).to_parquet(tmp_path / "users.parquet")
    bodies = request_bodies(tmp_path, k=100, seed=1)
    assert bodies == request_bodies(tmp_path, k=100, seed=1)
    parsed = [json.loads(b) for b in bodies]
    assert sorted(p["user_id"] for p in parsed) == sorted(f"u{i}" for i in range(20))
    assert {p["k"] for p in parsed} == {100}


# ---- the generators against a tiny in-process server (no services) -----------------------------------------


@contextmanager
def _server(handler_delay: dict[int, float]) -> Iterator[tuple[str, dict[str, int]]]:
    """An aiohttp server on a free loopback port whose n-th request waits handler_delay.get(n, 0) seconds."""
    import threading

    from aiohttp import web

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seen = {"n": 0}
    started = threading.Event()
    loop = asyncio.new_event_loop()

    async def handle(request: web.Request) -> web.Response:
        n = seen["n"]
        seen["n"] += 1
        await request.read()
        await asyncio.sleep(handler_delay.get(n, 0.0))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/recommend", handle)
    runner = web.AppRunner(app, access_log=None)

    async def main() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(5)
    try:
        yield f"http://127.0.0.1:{port}/recommend", seen
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_open_loop_keeps_its_schedule_through_a_stall_and_counts_it():
    with _server({0: 0.3}) as (url, seen):
        # one connection: the 300 ms first answer holds up everything due in the meantime
        stats = open_loop(url, [b'{"user_id": "u1", "k": 100}'], rate=50, seconds=1.0, max_connections=1)
    assert stats.requests == 50 == seen["n"] and stats.errors == 0
    assert stats.latency_ms["max"] >= 300
    # One connection, so nothing due meanwhile is answered before the 300 ms answer: the requests due 20 … 140 ms in
    # (more than the top 5 %) each waited at least 160 ms, counted from when they were due, not from when they left.
    assert stats.latency_ms["p95"] >= 160
    # The schedule ran to its end: the last request was due 980 ms in, so the phase spans at least that.
    assert stats.seconds >= 0.98


def test_closed_loop_reports_the_completion_rate():
    with _server({}) as (url, _):
        stats = closed_loop(url, [b"{}"], concurrency=4, seconds=0.5)
    assert stats.mode == "closed" and stats.errors == 0 and stats.ok >= 4  # at least one answer per connection
    assert stats.achieved_rate == pytest.approx(stats.ok / stats.seconds)


def test_notes_say_when_tandem_falls_behind_the_rate_and_why_requests_failed():
    tandem = _figures(900, 2000, 150, errors=40) | {"load_average_before_fixed_phase": 3.0, "workers": 1}
    tandem["fixed"] |= {"seconds": 20.0, "achieved_rate": 148.0, "statuses": {"200": 2960, "0": 40},
                        "client_cpu_s": 1.0, "send_lag_ms": {"p99": 2.0, "max": 5.0}}
    stock = _figures(2, 9, 600) | {"load_average_before_fixed_phase": 3.0, "workers": 1}
    stock["fixed"] |= {"client_cpu_s": 1.0, "send_lag_ms": {"p99": 1.0, "max": 2.0}}
    text = "\n".join(notes(tandem, stock, quick=True))
    assert "did not keep up with 300 req/s" in text and "0.60 cores" in text
    assert "40 of 3000 requests" in text and "'0': 40" in text
    assert "no-op:" not in text  # the no-op had no errors
