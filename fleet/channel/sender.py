"""Sends on one replica-channel connection, from any thread, without ever blocking it.

Tokens are sent by the engine thread that made them (waking the replica's event loop for each
cost as much CPU as the API spends forwarding it, see docs/architecture.md), and answers by the
event loop. Neither may wait on a slow reader: an engine thread that waits stalls every stream
in its batch, and an event loop that waits stalls the whole replica.

So a send is one non-blocking `send()` when nothing is queued: the common case, as cheap as
before. Whatever the socket does not take is queued, and the event loop writes the queue out
when the socket has room (`add_writer`, as asyncio's own transports do). The queue is bounded:
an API that reads nothing is dropped once its backlog reaches `QUEUE_LIMIT_BYTES`, or once it
has taken no byte for `STALL_TIMEOUT_S`, and its connection's loss is reported like a close.

It writes to its own duplicate of the connection's descriptor, while the event loop's stream
reads the original; nothing is ever written through that stream, so bytes cannot interleave."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

# A backlog this large means the API reads far slower than the replica answers: it is dropped.
# A single frame is never refused for its size alone (the frame limit bounds that).
QUEUE_LIMIT_BYTES = 64 * 1024 * 1024
# An API that takes no byte for this long while frames wait is taken as gone.
STALL_TIMEOUT_S = 10.0


class ChannelSender:
    """`on_broken()` runs on the event loop once, when the sender drops the connection."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop,
                 on_broken: Callable[[], None]):
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._on_broken = on_broken
        self._lock = threading.Lock()
        self._queue: deque[memoryview] = deque()
        self._queued = 0
        self._watching = False  # the loop's writer callback is registered
        self._progress_at = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._shut = False
        self.open = True

    @property
    def backlog_bytes(self) -> int:
        return self._queued

    def send(self, data: bytes) -> bool:
        """Queue `data` to go out in order; False if the connection is (or just became) unusable."""
        with self._lock:
            if not self.open:
                return False
            if self._queue:  # behind what is already waiting: keep the order
                if self._queued >= QUEUE_LIMIT_BYTES:
                    self._break()
                    return False
                self._queue.append(memoryview(data))
                self._queued += len(data)
                return True
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the API has gone
                self._break()
                return False
            if sent == len(data):
                return True
            self._queue.append(memoryview(data)[sent:])
            self._queued += len(data) - sent
            self._progress_at = time.monotonic()
            try:
                self._loop.call_soon_threadsafe(self._watch)
            except RuntimeError:  # the loop has closed: the replica is stopping
                self._break()
                return False
            return True

    def close(self) -> None:
        """On the event loop: stop sending and release the descriptor."""
        with self._lock:
            self.open = False
            self._queue.clear()
            self._queued = 0
        self._shutdown(report=False)

    # ---- on the event loop -----------------------------------------------------------------
    def _watch(self) -> None:
        with self._lock:
            if not self.open or self._watching or not self._queue:
                return
            self._watching = True
        self._loop.add_writer(self._fd, self._flush)
        self._stall_timer = self._loop.call_later(STALL_TIMEOUT_S, self._check_stall)

    def _flush(self) -> None:
        with self._lock:
            while self._queue and self.open:
                head = self._queue[0]
                try:
                    sent = self._sock.send(head)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    self._break()
                    return
                self._progress_at = time.monotonic()
                self._queued -= sent
                if sent < len(head):
                    self._queue[0] = head[sent:]
                    return
                self._queue.popleft()
            self._watching = False
        self._stop_watching()

    def _check_stall(self) -> None:
        with self._lock:
            if not self.open or not self._queue:
                return
            idle = time.monotonic() - self._progress_at
            if idle >= STALL_TIMEOUT_S:
                self._break()
                return
        self._stall_timer = self._loop.call_later(STALL_TIMEOUT_S - idle, self._check_stall)

    def _stop_watching(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if not self._shut:
            self._loop.remove_writer(self._fd)

    def _shutdown(self, report: bool) -> None:
        if self._shut:
            return
        self._stop_watching()
        self._shut = True
        self._sock.close()
        if report:
            self._on_broken()

    # ---- any thread, lock held -------------------------------------------------------------
    def _break(self) -> None:
        self.open = False
        self._queue.clear()
        self._queued = 0
        # The descriptor is released on the loop, which may still watch it.
        try:
            self._loop.call_soon_threadsafe(self._shutdown, True)
        except RuntimeError:  # the loop has closed: the replica is stopping
            self._shut = True
            self._sock.close()
