"""Running requests at once while watching the server: what the tests of batching, faults and
scaling need."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def run_while_watching(job: Callable[[int], T], count: int,
                       watch: Callable[[], int]) -> tuple[list[T], list[int]]:
    """`job(0)` .. `job(count - 1)` in as many threads, with `watch()` sampled every 50 ms
    meanwhile; returns the jobs' results (in order) and the samples."""
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(watch())
            time.sleep(0.05)

    watcher = threading.Thread(target=sample)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=count) as pool:
            results = list(pool.map(job, range(count)))
    finally:
        done.set()
        watcher.join()
    return results, seen


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, step: float = 0.1,
             what: str = "condition not met in time",
             ignoring: tuple[type[BaseException], ...] = ()) -> Any:
    """`condition()`'s first true value, asked every `step` s; TimeoutError(`what`) after
    `timeout` s. An error of the `ignoring` kinds counts as not yet (a server still starting)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except ignoring:
            value = None
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(what)


@dataclass
class ClosedLoop:
    """`clients` threads, each sending the next request as soon as the last one answered."""

    endpoint: str
    uid: str
    clients: int = 4
    pause_after_failure_s: float = 0.0
    outcomes: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, index: int) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                try:
                    response = http.post(f"{self.endpoint}/v1/embeddings",
                                         json={"model": self.uid, "input": f"load {index}"})
                    self.outcomes.append((time.monotonic(), response.status_code, response.text))
                    ok = response.status_code == 200
                except httpx.HTTPError as exc:
                    self.outcomes.append((time.monotonic(), 0, repr(exc)))
                    ok = False
                if not ok and self.pause_after_failure_s:  # as a client would, before again
                    time.sleep(self.pause_after_failure_s)

    def __enter__(self) -> ClosedLoop:
        self._threads = [threading.Thread(target=self._client, args=(i,))
                         for i in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    @property
    def failed(self) -> list[tuple[float, int, str]]:
        return [o for o in self.outcomes if o[1] != 200]

    def served_after(self, moment: float) -> int:
        return sum(1 for at, status, _ in self.outcomes if status == 200 and at > moment)

    def counts(self, since: float) -> dict[str, int]:
        window = [status == 200 for at, status, _ in self.outcomes if at >= since]
        return {"requests_failed": window.count(False), "requests_served": window.count(True)}

    def first_success(self, since: float) -> float | None:
        return next((at for at, status, _ in self.outcomes if status == 200 and at >= since), None)


def wait_for_status(call: Callable[[], httpx.Response], status: int, within_s: float) -> float:
    """Calls `call` until it answers `status`; how long that took (an assertion past
    `within_s`, with the last answer)."""
    started = time.monotonic()
    while True:
        answer = call()
        if answer.status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < within_s, (answer.status_code, answer.text)
        time.sleep(0.05)
