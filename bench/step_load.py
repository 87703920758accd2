"""A step load (1 -> 16 -> 1 clients) against one model: what autoscaling gives under a wave.

Used by bench/elastic.py: MiniLM launched with autoscaling 1..3, against the same model launched
with a fixed 3 replicas, in the same run. Reported per side: the requests per second of the high
phase once the up delay has passed (the first `settle_s` of the wave are left out: the
autoscaled side is still adding replicas then, which is what the delay is for), the requests
that failed (any status but 200, or a transport error), and the replicas over time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Phase:
    clients: int
    seconds: float


@dataclass
class StepRecord:
    """Answers by the time they completed, failures, and the replica counts seen."""
    completed_at: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    replicas: list[tuple[float, int]] = field(default_factory=list)

    def rate_between(self, start: float, end: float) -> float:
        done = sum(1 for at in self.completed_at if start <= at < end)
        return done / (end - start)


async def _client(http: httpx.AsyncClient, body: dict[str, Any], until: float,
                  record: StepRecord, origin: float) -> None:
    while time.perf_counter() < until:
        try:
            answer = await http.post("/v1/embeddings", json=body)
        except httpx.HTTPError as error:
            record.failures.append(f"{type(error).__name__}: {error}")
            continue
        if answer.status_code == 200:
            record.completed_at.append(time.perf_counter() - origin)
        else:
            record.failures.append(f"{answer.status_code}: {answer.text[:200]}")


async def _watch_replicas(http: httpx.AsyncClient, uid: str, until: float, record: StepRecord,
                          origin: float) -> None:
    while time.perf_counter() < until:
        model = (await http.get(f"/v1/models/{uid}")).json()
        ready = sum(1 for r in model.get("replicas", []) if r.get("state") == "ready")
        record.replicas.append((round(time.perf_counter() - origin, 1), ready))
        await asyncio.sleep(1.0)


async def _run(endpoint: str, uid: str, phases: list[Phase]) -> StepRecord:
    record = StepRecord()
    body = {"model": uid, "input": "a sentence to embed while the load comes in waves"}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=endpoint, timeout=120, limits=limits) as http:
        origin = time.perf_counter()
        total = origin + sum(p.seconds for p in phases)
        watcher = asyncio.create_task(_watch_replicas(http, uid, total, record, origin))
        phase_start = origin
        for phase in phases:
            until = phase_start + phase.seconds
            await asyncio.gather(*(_client(http, body, until, record, origin)
                                   for _ in range(phase.clients)))
            phase_start = until
        await watcher
    return record


def step_load(endpoint: str, uid: str, low_s: float, high_s: float, settle_s: float,
              tail_s: float) -> dict[str, Any]:
    """1 client for `low_s`, 16 for `high_s`, 1 for `tail_s`; the high phase's rate is counted
    from `settle_s` into it."""
    phases = [Phase(1, low_s), Phase(16, high_s), Phase(1, tail_s)]
    record = asyncio.run(_run(endpoint, uid, phases))
    high_from, high_to = low_s + settle_s, low_s + high_s
    return {
        "high_phase_requests_per_s": round(record.rate_between(high_from, high_to), 1),
        "failed_requests": len(record.failures),
        "first_failures": record.failures[:3],
        "max_ready_replicas": max((n for _, n in record.replicas), default=0),
        "ready_replicas_at_end": record.replicas[-1][1] if record.replicas else 0,
        "replicas_over_time": _changes(record.replicas),
    }


def _changes(samples: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The samples where the count changed: a short history rather than one line a second."""
    kept: list[tuple[float, int]] = []
    for at, count in samples:
        if not kept or kept[-1][1] != count:
            kept.append((at, count))
    return kept
