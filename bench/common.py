"""Shared pieces of the benchmarks: a real `fleet local`, closed-loop HTTP load, statistics."""

from __future__ import annotations

import asyncio
import json
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
def fleet_local(env: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh `fleet local` on a free port; yields its endpoint."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as home:
        process = subprocess.Popen(
            [sys.executable, "-m", "fleet", "local", "-p", str(port)],
            env={**os.environ, "FLEET_HOME": home, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{endpoint}/status", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            yield endpoint
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(60)


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


def measure_fleet(url: str, make_body: Callable[[int], dict[str, Any]],
                  duration_s: float) -> dict[str, Any]:
    """Closed-loop load at the two concurrencies the targets name, driven by wrk when it is
    installed (see wrk_load.py for why), else by the Python client; the report says which."""
    import wrk_load

    if wrk_load.available():
        bodies = [make_body(i) for i in range(1000)]
        return {"load_client": "wrk", **{f"concurrency_{c}": wrk_load.closed_loop(url, bodies, c, duration_s)
                                         for c in (1, 16)}}
    return {"load_client": "httpx (install wrk for a client that costs the server no CPU)",
            **{f"concurrency_{c}": closed_loop(url, make_body, c, duration_s) for c in (1, 16)}}


def print_report(report: dict[str, Any], in_process_single: list[float],
                 in_process: dict[str, Any], fleet: dict[str, Any]) -> None:
    report["fleet"] = fleet
    report.update(compare(in_process_single, in_process["batch_16_requests_per_s"], fleet))
    print(json.dumps(report, indent=2))


def compare(in_process_single: list[float], in_process_batch16_rate: float,
            fleet: dict[str, Any]) -> dict[str, object]:
    """The ratios the issues' targets are stated in."""
    return {
        "ratios": {
            "c16_rate_over_in_process_batch16": round(
                fleet["concurrency_16"]["requests_per_s"] / in_process_batch16_rate, 3),
            "c1_p50_added_ms": round(
                fleet["concurrency_1"]["p50_ms"] - statistics.median(in_process_single) * 1000, 2),
        },
        "targets": {"c16_rate_over_in_process_batch16": ">= 0.90", "c1_p50_added_ms": "<= 3"},
    }
