"""Shared pieces of the benchmarks: a real `fleet local`, closed-loop HTTP load, statistics."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def fleet_local(env: dict[str, str] | None = None, args: tuple[str, ...] = (),
                python: str = sys.executable) -> Iterator[str]:
    """A fresh `fleet local` on a free port (with extra command-line `args`, on another
    environment's `python` if given); yields its endpoint."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        process = subprocess.Popen(
            [python, "-m", "fleet", "local", "-p", str(port), *args],
            env={**os.environ, "FLEET_HOME": home, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_up(f"{endpoint}/status", process, 60)
            yield endpoint
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Until `url` answers 200 (or `timeout_s` passes); raises if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, process.args))} exited at start")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)


def _medians(windows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(w[key] for w in windows), 1)
            for key in ("tokens_per_s", "ttft_p50_ms", "ttft_p99_ms")}


def alternate(theirs: Callable[[], dict[str, float]], ours: Callable[[], dict[str, float]],
              rounds: int, against: str) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """`rounds` windows of each side, theirs then ours: this machine's speed drifts within a
    minute, so windows side by side compare better than two runs a minute apart. Returns each
    side's medians (tokens/s, TTFT p50/p99) and the comparison: the median of the rounds'
    tokens/s ratios (`tokens_per_s_over_<against>`), the ratios, and the median TTFT p50 added."""
    their_windows, our_windows = [], []
    for _ in range(rounds):
        their_windows.append(theirs())
        our_windows.append(ours())
    pairs = list(zip(our_windows, their_windows, strict=True))
    ratios = [o["tokens_per_s"] / t["tokens_per_s"] for o, t in pairs]
    return _medians(their_windows), _medians(our_windows), {
        f"tokens_per_s_over_{against}": round(statistics.median(ratios), 3),
        "round_ratios": [round(r, 3) for r in ratios],
        "ttft_p50_added_ms": round(statistics.median(o["ttft_p50_ms"] - t["ttft_p50_ms"]
                                                     for o, t in pairs), 1)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(latencies_s: list[float], elapsed_s: float) -> dict[str, float]:
    return {
        "requests": len(latencies_s),
        "requests_per_s": round(len(latencies_s) / elapsed_s, 1),
        "p50_ms": round(statistics.median(latencies_s) * 1000, 2),
        "p99_ms": round(percentile(latencies_s, 0.99) * 1000, 2),
    }


async def _closed_loop(url: str, make_body: Callable[[int], dict[str, Any]], concurrency: int,
                       duration_s: float) -> dict[str, float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        counter = iter(range(10**9))
        stop_at = time.perf_counter() + duration_s

        async def user() -> None:
            while time.perf_counter() < stop_at:
                body = make_body(next(counter))
                started = time.perf_counter()
                response = await client.post(url, json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        # Warm-up: connections open, caches warm.
        await asyncio.gather(*(client.post(url, json=make_body(i)) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return summarize(latencies, elapsed)


def closed_loop(url: str, make_body: Callable[[int], dict[str, Any]], concurrency: int,
                duration_s: float) -> dict[str, float]:
    """`concurrency` clients, each sending its next request when the last one is answered."""
    return asyncio.run(_closed_loop(url, make_body, concurrency, duration_s))


def timed_calls(call: Callable[[int], Any], duration_s: float) -> list[float]:
    """Latencies of back-to-back in-process calls for about `duration_s`."""
    for i in range(3):
        call(i)
    latencies = []
    stop_at = time.perf_counter() + duration_s
    i = 0
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - started)
        i += 1
    return latencies


def _fleet_load(url: str, make_body: Callable[[int], dict[str, Any]], concurrency: int,
                duration_s: float, warm_up: bool) -> dict[str, float]:
    """Closed-loop load driven by wrk when it is installed (see wrk_load.py for why), else by
    the Python client."""
    import wrk_load

    if wrk_load.available():
        bodies = [make_body(i) for i in range(1000)]
        return wrk_load.closed_loop(url, bodies, concurrency, duration_s, warm_up=warm_up)
    return closed_loop(url, make_body, concurrency, duration_s)


def interleaved(single_call: Callable[[int], Any], batch16_call: Callable[[int], Any], url: str,
                make_body: Callable[[int], dict[str, Any]], duration_s: float,
                rounds: int) -> dict[str, Any]:
    """The engine in-process (one request at a time, and batches of 16) and Fleet (concurrency
    1 and 16) measured in alternating windows, `rounds` of each, `duration_s` in all per
    measurement. This machine's speed drifts by tens of percent within a minute: a ratio of two
    measurements made a minute apart says more about the drift than about Fleet, one of two
    made in the same few seconds does not. Reported: medians over the rounds, and the median of
    the rounds' ratios."""
    import wrk_load

    window = max(1.0, duration_s / rounds)
    per_round = []
    for index in range(rounds):
        single = timed_calls(single_call, window)
        batched = timed_calls(batch16_call, window)
        per_round.append({
            "single_p50_ms": statistics.median(single) * 1000,
            "batch16_rate": 16 * len(batched) / sum(batched),
            "c1": _fleet_load(url, make_body, 1, window, warm_up=index == 0),
            "c16": _fleet_load(url, make_body, 16, window, warm_up=index == 0),
        })

    def median(values: Any) -> float:
        return round(statistics.median(values), 3)

    ratios = [r["c16"]["requests_per_s"] / r["batch16_rate"] for r in per_round]
    added = [r["c1"]["p50_ms"] - r["single_p50_ms"] for r in per_round]
    return {
        "load_client": "wrk" if wrk_load.available() else "httpx (install wrk: it costs the "
                                                          "server no CPU)",
        "rounds": rounds,
        "in_process": {"one_by_one_p50_ms": median(r["single_p50_ms"] for r in per_round),
                       "batch_16_requests_per_s": median(r["batch16_rate"] for r in per_round)},
        "fleet": {f"concurrency_{c}": {key: median(r[f"c{c}"][key] for r in per_round)
                                       for key in ("requests_per_s", "p50_ms", "p99_ms")}
                  for c in (1, 16)},
        "ratios": {"c16_rate_over_in_process_batch16": median(ratios),
                   "c16_round_ratios": [round(r, 3) for r in ratios],
                   "c1_p50_added_ms": median(added),
                   "c1_round_added_ms": [round(a, 2) for a in added]},
        "targets": {"c16_rate_over_in_process_batch16": ">= 0.90", "c1_p50_added_ms": "<= 3"},
    }
