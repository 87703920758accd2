"""Running requests at once while watching the server: what the tests of batching need."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

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
