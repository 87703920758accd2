"""Request bodies -> validated request models, without stalling the API's event loop.

A body's parse costs CPU and memory per JSON value, not per byte, so a few MiB of short values
can take hundreds of MiB and a second. A thread does not help: pydantic (like orjson and json)
holds the GIL for the whole parse, so a parse in a thread stops the event loop for as long as
one inline (the measurements: docs/benchmarks.md). So:

- A body of up to INLINE_MAX_BYTES with few commas is parsed inline: a few milliseconds at
  most, and what nearly every request is (a few KiB). Commas bound the values from above (every
  value but the first of an array or object follows one; commas inside strings only add), and
  counting them is a byte scan, far cheaper than a parse.
- Anything else is parsed in a helper process, one body at a time, under two limits of its own:
  its address space (`parser_memory_bytes`) and the time one parse may take
  (`max_parse_seconds`). A parse that misses either costs the helper its life: it is killed and
  the request gets a 413 that names the limit; the next large body starts a fresh helper. Killing
  is the only answer that always works: a parse that runs out of memory can leave pydantic-core
  panicking inside an allocation, with the helper asleep, holding gigabytes, and answering
  nothing (seen with 57 MiB of `{}`). A helper that refused a body for its memory is replaced
  too, since the memory it reached stays mapped.
- The helper refuses a request of more than `max_json_values` values once validated, so what
  comes back (the validated request, pickled) is quick to unpickle; it runs at a lower CPU
  priority, so a hostile body costs its sender a refusal and the engines little.
- At most MAX_WAITING large bodies wait for the helper; more get a 429 with Retry-After, so that
  a flood of them cannot fill the API's memory with bodies in a queue.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import psutil
from pydantic import BaseModel

from fleet.admission import Admission
from fleet.errors import PayloadTooLarge, TooManyRequests
from fleet.limits import exceeded, limits

logger = logging.getLogger(__name__)

INLINE_MAX_BYTES = 1024 * 1024
INLINE_MAX_COMMAS = 20_000  # ~5 ms of pydantic at worst, measured with one-digit token ids
MAX_WAITING = 8  # large bodies held for the helper at once (64 MiB each at most)
_START_S = 30.0  # a new helper's start (spawn, imports) is not part of a body's time
_WATCH_S = 0.1  # how often a parse under way is looked at
_AT_CAP = 0.95  # of the memory cap: a helper this large has run into it...
_AT_CAP_GRACE_S = 1.0  # ...when it stays there this long without answering

ModelT = TypeVar("ModelT", bound=BaseModel)


async def parse_body(model: type[ModelT], body: bytes) -> ModelT:
    """`model` validated from the JSON `body`; raises what validation raises (pydantic's
    ValidationError, Fleet's errors), PayloadTooLarge or TooManyRequests."""
    if len(body) <= INLINE_MAX_BYTES and body.count(b",") <= INLINE_MAX_COMMAS:
        return model.model_validate_json(body)
    return await _HELPER.parse(model, body)


class _WaitingBodies(Admission):
    """The large bodies held for the helper, admitted up to MAX_WAITING."""

    __slots__ = ()

    def refusal(self) -> TooManyRequests:
        return TooManyRequests(f"{self.limit} large request bodies are already waiting to be "
                               "parsed; try again in a moment", code="parser_busy")


class _Verdict:
    """How an exchange with the helper ended, when it did not end with an answer."""

    MEMORY = "memory"  # the helper died, or could not allocate
    TIME = "time"  # the parse ran past its time


class _Helper:
    """One helper process, started at the first large body and replaced whenever it fails."""

    def __init__(self, memory_bytes: int | None = None, timeout_s: int | None = None) -> None:
        self._memory_bytes = memory_bytes  # None: the server's parser_memory_bytes
        self._timeout_s = timeout_s  # None: the server's max_parse_seconds
        self._process: Any = None
        self._conn: Connection | None = None
        # Exchanges run in threads of their own (never the loop's default executor, which the
        # supervisor's planning shares in `fleet local`), one at a time: a lock of the thread
        # kind serves every event loop (tests run several) and is taken where the exchange
        # blocks anyway. Bodies are counted until their thread lets go of them, so that a
        # client that leaves does not make room for more bodies than MAX_WAITING.
        self._threads = ThreadPoolExecutor(MAX_WAITING, thread_name_prefix="fleet-body-parser")
        self._turn = threading.Lock()
        self._held = _WaitingBodies(MAX_WAITING)
        self._counting = threading.Lock()

    async def parse(self, model: type[ModelT], body: bytes) -> ModelT:
        with self._counting:
            self._held.admit()
        job = self._threads.submit(self._exchange, model, body)
        try:
            outcome, answer = await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            # The client left. A body that no thread has taken yet never will: its place is
            # given back here (one that a thread holds is given back when the thread lets go).
            if job.cancel():
                self._release()
            raise
        if outcome == _Verdict.MEMORY:
            logger.warning("parsing a %d-byte body needed more than the parser's memory",
                           len(body))
            raise exceeded("parser_memory_bytes", f"parsing this {len(body)}-byte body needed "
                           "more memory than its parser may use", "payload_too_large",
                           PayloadTooLarge, self._memory_bytes)
        if outcome == _Verdict.TIME:
            logger.warning("parsing a %d-byte body took longer than %s s", len(body),
                           self._timeout())
            raise exceeded("max_parse_seconds", f"parsing this {len(body)}-byte body took "
                           "longer than its parser may take", "payload_too_large",
                           PayloadTooLarge, self._timeout_s)
        kind, value = pickle.loads(answer)
        if kind == "error":
            raise value
        return value

    def _timeout(self) -> float:
        return self._timeout_s if self._timeout_s is not None else limits().max_parse_seconds

    def _exchange(self, model: type[BaseModel], body: bytes) -> tuple[str | None, bytes]:
        """In a thread: the body to the helper, its answer back (pickled), within the time."""
        try:
            return self._exchange_in_turn(model, body)
        finally:
            self._release()

    def _release(self) -> None:
        with self._counting:
            self._held.release()

    def _exchange_in_turn(self, model: type[BaseModel], body: bytes) -> tuple[str | None, bytes]:
        with self._turn:
            conn = self._connection()
            try:
                conn.send_bytes(pickle.dumps((model, limits().max_json_values)))
                conn.send_bytes(body)
                verdict = self._wait_for_answer(conn)
                if verdict is not None:
                    self._end()
                    return verdict, b""
                answer = conn.recv_bytes()
            except (EOFError, OSError):  # it died (killed past its memory, or crashed)
                self._end()
                return _Verdict.MEMORY, b""
            if answer == _OUT_OF_MEMORY:
                self._end()  # what it grew to stays mapped: a fresh one serves the next
                return _Verdict.MEMORY, b""
            return None, answer

    def _wait_for_answer(self, conn: Connection) -> str | None:
        """None once the helper answers (or dies: the read then says so); else why it must
        be killed. A parse that reached the memory cap often never answers (pydantic-core
        panics in a failed allocation and the process sleeps on a lock), so a helper that
        stays at its cap is given up on at once rather than at the end of its time."""
        deadline = time.monotonic() + self._timeout()
        at_cap_since: float | None = None
        cap = self._memory_bytes or limits().parser_memory_bytes
        while not conn.poll(_WATCH_S):
            now = time.monotonic()
            at_cap = _address_space(self._process.pid) >= cap * _AT_CAP
            at_cap_since = (at_cap_since or now) if at_cap else None
            if at_cap_since is not None and now - at_cap_since >= _AT_CAP_GRACE_S:
                return _Verdict.MEMORY
            if now >= deadline:
                return _Verdict.MEMORY if at_cap else _Verdict.TIME
        return None

    def _connection(self) -> Connection:
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            return self._conn
        self._end()
        memory = self._memory_bytes or limits().parser_memory_bytes
        # spawn: the API process runs threads (xoscar, uvicorn), which fork would copy
        # half-way through whatever they were doing.
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve, args=(theirs, memory), daemon=True,
                                  name="fleet-body-parser")
        process.start()
        theirs.close()
        if not ours.poll(_START_S) or ours.recv_bytes() != _READY:
            process.kill()
            raise OSError("the body parser did not start")
        self._process, self._conn = process, ours
        return ours

    def _end(self) -> None:
        """Kill the helper (whatever it is doing) and forget it."""
        process, conn, self._process, self._conn = self._process, self._conn, None, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.kill()
            process.join(5)

    def close(self) -> None:
        """Kill the helper now, without waiting for the parse it may be doing (whose thread
        then sees it gone): the server is stopping."""
        if self._process is not None:
            self._process.kill()


def close_helper() -> None:
    _HELPER.close()


def _address_space(pid: int) -> int:
    """The helper's address space (what its memory cap limits); 0 once it is gone."""
    try:
        return int(psutil.Process(pid).memory_info().vms)
    except psutil.Error:
        return 0


_HELPER = _Helper()
_READY = b"ready"
_OUT_OF_MEMORY = b"out of memory"


# ---- in the helper process ---------------------------------------------------------------
def _serve(conn: Connection, memory_bytes: int) -> None:
    import resource
    import signal

    # Ctrl-C on the server reaches its whole process group; the server ends the helper itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        os.nice(10)  # the engines' cores come first
    except OSError:
        pass
    conn.send_bytes(_READY)
    while True:
        try:
            model, max_values = pickle.loads(conn.recv_bytes())
            body = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the server closed its end
        except MemoryError:
            conn.send_bytes(_OUT_OF_MEMORY)
            continue
        conn.send_bytes(_answer(model, body, max_values))


def _answer(model: type[BaseModel], body: bytes, max_values: int) -> bytes:
    try:
        return pickle.dumps(("ok", _parse_in_helper(model, body, max_values)))
    except MemoryError:
        return _OUT_OF_MEMORY
    except Exception as exc:
        try:
            return pickle.dumps(("error", exc))
        except Exception:  # an error that does not pickle still says what it was
            return pickle.dumps(("error", ValueError(f"{type(exc).__name__}: {exc}")))


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
