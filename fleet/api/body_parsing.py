"""Request bodies -> validated request models, without stalling the API's event loop.

A body's parse costs CPU and memory per JSON value, not per byte: 7.6 MiB of one-character
strings took 580 MiB and a second. A thread does not help: pydantic (like orjson and json)
holds the GIL for the whole parse, and measured here, 30 MiB of short strings parsed in a
thread stopped the event loop for the 1.2 s the parse took, exactly as inline. So:

- A body of up to INLINE_MAX_BYTES with few commas is parsed inline: a few milliseconds at
  most, and what nearly every request is (a few KiB). Commas bound the values from above (every
  value but the first of an array or object follows one; commas inside strings only add), and
  counting them costs half a millisecond a MiB.
- Anything else is parsed in a helper process, which refuses a request of more than
  `max_json_values` values (the server's limit, fleet.limits) once validated, so what comes back
  (the validated request, pickled) is quick to unpickle; and which runs with its address space
  capped (`parser_memory_bytes`), at a lower CPU priority, so a hostile body costs its sender a
  refusal and the engines little. The loop still copies the body to the helper (under a
  millisecond a MiB). If the helper dies (a body past the memory cap), the request gets a 413
  and the next large body starts a new helper.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from pydantic import BaseModel

from fleet.errors import PayloadTooLarge
from fleet.limits import exceeded, limits

logger = logging.getLogger(__name__)

INLINE_MAX_BYTES = 1024 * 1024
INLINE_MAX_COMMAS = 20_000  # ~5 ms of pydantic at worst, measured with one-digit token ids

ModelT = TypeVar("ModelT", bound=BaseModel)


async def parse_body(model: type[ModelT], body: bytes) -> ModelT:
    """`model` validated from the JSON `body`; raises what validation raises (pydantic's
    ValidationError, Fleet's errors) or PayloadTooLarge."""
    if len(body) <= INLINE_MAX_BYTES and body.count(b",") <= INLINE_MAX_COMMAS:
        return model.model_validate_json(body)
    return await _HELPER.parse(model, body)


class _Helper:
    """One helper process, started at the first large body."""

    def __init__(self, memory_bytes: int | None = None) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._memory_bytes = memory_bytes  # None: the server's parser_memory_bytes

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            memory = self._memory_bytes or limits().parser_memory_bytes
            # spawn: the API process runs threads (xoscar, uvicorn), which fork would copy
            # half-way through whatever they were doing.
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_helper, initargs=(memory,))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def parse(self, model: type[ModelT], body: bytes) -> ModelT:
        pool = self._executor()
        try:
            return await asyncio.wrap_future(
                pool.submit(_parse_in_helper, model, body, limits().max_json_values))
        except (BrokenProcessPool, MemoryError) as exc:
            # This body outgrew the helper's memory (it died, or could not allocate): a new
            # helper serves the next body.
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            logger.warning("parsing a %d-byte body ran out of the parser's memory (%s)",
                           len(body), type(exc).__name__)
            raise self._out_of_memory(len(body)) from None

    def _out_of_memory(self, size: int) -> Exception:
        return exceeded("parser_memory_bytes", f"parsing this {size}-byte body needed more "
                        "memory than its parser may use", "payload_too_large", PayloadTooLarge,
                        self._memory_bytes)


_HELPER = _Helper()


# ---- in the helper process ---------------------------------------------------------------
def _start_helper(memory_bytes: int) -> None:
    import resource
    import signal

    # Ctrl-C on the server reaches its whole process group; the server ends the helper itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        os.nice(10)  # the engines' cores come first
    except OSError:
        pass


def _parse_in_helper(model: type[ModelT], body: bytes, max_values: int) -> ModelT:
    try:
        parsed = model.model_validate_json(body)
    except (Exception, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # pydantic-core panics (pyo3's PanicException, which cannot be pickled back) when an
        # allocation fails under the helper's memory cap.
        raise MemoryError(f"{type(exc).__name__}: {exc}") from None
    if _count_values(parsed, max_values) > max_values:
        raise exceeded("max_json_values", "the request body holds too many JSON values",
                       "too_many_values", PayloadTooLarge)
    return parsed


def _count_values(root: Any, limit: int) -> int:
    """The values in a validated request (its fields, and everything inside lists, dicts and
    nested models), counted up to limit + 1 at most, so the count itself stays cheap."""
    count, stack = 0, [root]
    while stack:
        value = stack.pop()
        count += 1
        if isinstance(value, BaseModel):
            stack.extend(value.__dict__.values())
            stack.extend((value.__pydantic_extra__ or {}).values())
        elif isinstance(value, dict):
            count += len(value)  # the keys
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        if count + len(stack) > limit:
            return limit + 1
    return count
