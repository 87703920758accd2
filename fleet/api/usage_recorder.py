"""The usage recorder: what each answered request used, written to the database's
usage_records (fleet.database.usage) in batches, off the request path.

`add` is the metering middleware's sink (fleet.api.metering.UsageSink): one list append and
a clock read per request, no I/O and no await. A background task of the API server takes the
list every FLUSH_S (sooner once it holds FLUSH_ROWS) and, in a thread, turns it into rows
(the key's user, the model's family: read once per model uid from the launches the supervisor
saved) and writes them in one transaction. A write that fails (the database is down, the disk
full) is logged and its rows kept for the next try, up to MAX_KEPT rows: past that the oldest
are dropped, so a database that stays away cannot grow the API's memory without bound. At stop, what is left
is written at once (`close`), so a clean restart loses nothing.

Records older than the retention (--usage-retention-days, default 90; 0 keeps them) are
deleted at start and every PRUNE_S. The per-key Prometheus series (--metrics-per-key) are
counted here too, from the same requests, so the request path pays for them nothing."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timedelta, timezone

from fleet.api.metering import Metered
from fleet.api.metrics import FleetMetrics
from fleet.database.usage import UsageRow, UsageStore

logger = logging.getLogger(__name__)

FLUSH_S = 1.0
FLUSH_ROWS = 1000
MAX_KEPT = 100_000  # rows kept while the database refuses them
PRUNE_S = 3600.0
# The kind of request each route's metrics name stands for (others are their own kind).
KINDS = {"chat_completions": "chat", "transcriptions": "audio", "translations": "audio",
         "speech": "audio", "ocr": "images", "messages_count_tokens": "messages"}


class UsageRecorder:
    """Usage records of one API process (see the top)."""

    def __init__(self, store: UsageStore, retention_days: int = 90):
        self.store = store
        self._retention_days = retention_days
        self._writing = threading.Lock()  # a write at stop waits for one under way
        self._metrics: FleetMetrics | None = None  # the per-key series, when asked
        self._pending: list[tuple[float, Metered]] = []
        self._unwritten: list[UsageRow] = []  # rows a failed write left for the next
        self._families: dict[str, str | None] = {}  # by model uid (see _rows)
        self._families_stale = False
        self._full = asyncio.Event()
        self._failing = False

    def count_keys_in(self, metrics: FleetMetrics) -> None:
        """Counts each request in per-key series of `metrics` too (--metrics-per-key)."""
        metrics.count_per_key()
        self._metrics = metrics

    def add(self, metered: Metered) -> None:
        """A finished request (the middleware's call, on the request path: keep it cheap)."""
        self._pending.append((time.time(), metered))
        if len(self._pending) >= FLUSH_ROWS:
            self._full.set()

    async def run(self) -> None:
        """Writes the records every FLUSH_S and prunes every PRUNE_S, for ever (a task of the
        API server; cancelled at stop, then `close`)."""
        pruned = float("-inf")
        while True:
            if time.monotonic() - pruned >= PRUNE_S:
                pruned = time.monotonic()
                await self.prune()
                # A uid may have been terminated and launched again as another model since.
                self._families_stale = True
            try:
                await asyncio.wait_for(self._full.wait(), FLUSH_S)
            except asyncio.TimeoutError:  # not yet the builtin one on Python 3.10
                pass
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        """Writes what was added since the last flush, and what a failed one left."""
        taken, self._pending = self._pending, []
        await asyncio.to_thread(self._write, taken)

    def close(self) -> None:
        """At stop: what is left, written now in this thread (the event loop may be cancelling
        its tasks, and an await with them); after a write under way, if any."""
        taken, self._pending = self._pending, []
        self._write(taken)

    def _write(self, taken: list[tuple[float, Metered]]) -> None:
        """One batch: the requests taken, after what a failed write left (in a worker thread,
        or at stop; one at a time)."""
        with self._writing:
            rows = self._unwritten + self._rows(taken)
            self._unwritten = []
            if not rows:
                return
            try:
                self.store.insert(rows)
            except Exception as exc:
                self._keep(rows, exc)
                return
            if self._failing:
                logger.info("usage: the database takes the records again")
            self._failing = False

    async def prune(self) -> int:
        """Deletes the records past the retention; how many (0 when they are kept for ever)."""
        if self._retention_days <= 0:
            return 0
        before = datetime.now(timezone.utc) - timedelta(days=self._retention_days)
        try:
            deleted = await asyncio.to_thread(self.store.delete_before, before)
        except Exception as exc:  # tried again at the next prune
            logger.warning("usage: could not delete the records before %s: %s", before, exc)
            return 0
        if deleted:
            logger.info("usage: deleted %d records older than %d days", deleted,
                        self._retention_days)
        return deleted

    def _keep(self, rows: list[UsageRow], exc: Exception) -> None:
        dropped = max(0, len(rows) - MAX_KEPT)
        self._unwritten = rows[dropped:]
        if not self._failing or dropped:
            logger.error("usage: could not write %d records to %s (%s); keeping %d for the next "
                         "try%s", len(rows), self.store.db.shown, exc, len(self._unwritten),
                         f", dropped the {dropped} oldest" if dropped else "")
        self._failing = True

    def _rows(self, taken: list[tuple[float, Metered]]) -> list[UsageRow]:
        """The records of the requests taken, with their models' families: read once per
        model uid from the launches the supervisor saved (a database read, here off the event
        loop, and possible at stop, where the supervisor could no longer be asked)."""
        if self._families_stale:
            self._families, self._families_stale = {}, False
        unknown = {m.model for _, m in taken if m.model is not None} - self._families.keys()
        if unknown:
            try:
                self._families.update(self.store.families_of(unknown))
            except Exception as exc:  # the write will fail too, and tell; no family then
                logger.debug("usage: no families for %s: %r", sorted(unknown), exc)
        return [self._row(end, metered) for end, metered in taken]

    def _row(self, end: float, metered: Metered) -> UsageRow:
        grant = metered.grant
        model = metered.model or ""
        key_id = grant.key_id if grant is not None else None
        if self._metrics is not None:
            self._metrics.key_used(key_id or "", model, metered.prompt_tokens,
                                   metered.completion_tokens)
        endpoint = metered.endpoint or ""
        return UsageRow(
            time=datetime.fromtimestamp(end, timezone.utc), key_id=key_id,
            user_name=grant.user if grant is not None else None, model=model,
            family=self._families.get(model), kind=KINDS.get(endpoint, endpoint),
            prompt_tokens=metered.prompt_tokens, completion_tokens=metered.completion_tokens,
            images=metered.images, audio_seconds=metered.audio_seconds, status=metered.status,
            latency_ms=metered.latency_s * 1000.0)
