"""The usage recorder: what each answered request used, written to the database's
usage_records (fleet.database.usage) in batches, off the request path.

`add` is the metering middleware's sink (fleet.api.metering.UsageSink): one list append and
a clock read per request, no I/O and no await. A background task of the API server takes the
list every FLUSH_S (sooner once it holds FLUSH_ROWS), turns it into rows (the key's user, the
model's family: asked of the supervisor once per model uid and kept), and writes them in one
transaction in a thread. A write that fails (the database is down, the disk full) is logged
and its rows kept for the next try, up to MAX_KEPT rows: past that the oldest are dropped, so
a database that stays away cannot grow the API's memory without bound. At stop, what is left
is written at once (`close`), so a clean restart loses nothing.

Records older than the retention (--usage-retention-days, default 90; 0 keeps them) are
deleted at start and every PRUNE_S. The per-key Prometheus series (--metrics-per-key) are
counted here too, from the same requests, so the request path pays for them nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from fleet.api.metering import Metered
from fleet.api.metrics import FleetMetrics
from fleet.database.usage import UsageRow, UsageStore

logger = logging.getLogger(__name__)

FLUSH_S = 1.0
FLUSH_ROWS = 1000
MAX_KEPT = 100_000  # rows kept while the database refuses them
PRUNE_S = 3600.0
FAMILY_TIMEOUT_S = 5.0
# The kind of request each route's metrics name stands for (others are their own kind).
KINDS = {"chat_completions": "chat", "transcriptions": "audio", "translations": "audio",
         "speech": "audio", "ocr": "images", "messages_count_tokens": "messages"}


class UsageRecorder:
    """Usage records of one API process (see the top). `supervisor`: where a model's family
    is asked (None: not asked, the family is left empty)."""

    def __init__(self, store: UsageStore, supervisor: Any = None, retention_days: int = 90):
        self.store = store
        self._supervisor = supervisor
        self._retention_days = retention_days
        self._metrics: FleetMetrics | None = None  # the per-key series, when asked
        self._pending: list[tuple[float, Metered]] = []
        self._unwritten: list[UsageRow] = []  # rows a failed write left for the next
        self._families: dict[str, str | None] = {}
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
            try:
                await asyncio.wait_for(self._full.wait(), FLUSH_S)
            except TimeoutError:
                pass
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        """Writes what was added since the last flush, and what a failed one left."""
        # Families first, the requests taken after: a stop that cancels this task while it
        # asks loses nothing (`close` writes what is still pending).
        await self._learn_families({metered.model for _, metered in self._pending
                                    if metered.model is not None})
        taken, self._pending = self._pending, []
        rows = self._unwritten + [self._row(end, metered) for end, metered in taken]
        self._unwritten = []
        if not rows:
            return
        try:
            await asyncio.to_thread(self.store.insert, rows)
        except Exception as exc:
            self._keep(rows, exc)
            return
        if self._failing:
            logger.info("usage: the database takes the records again")
        self._failing = False

    def close(self) -> None:
        """At stop: what is left, written now in this thread (the event loop may be cancelling
        its tasks, and an await with them)."""
        taken, self._pending = self._pending, []
        rows = self._unwritten + [self._row(end, metered) for end, metered in taken]
        self._unwritten = []
        try:
            self.store.insert(rows)
        except Exception as exc:  # stopping anyway
            logger.error("usage: %d records could not be written at stop: %s", len(rows), exc)

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

    async def _learn_families(self, models: set[str]) -> None:
        """The catalogue name of each model uid not seen before, asked of the supervisor. A
        model it no longer knows (terminated since) keeps no family; one it could not answer
        for is asked again at the next flush."""
        for uid in models - self._families.keys():
            if self._supervisor is None:
                self._families[uid] = None
                continue
            try:
                described = await asyncio.wait_for(self._supervisor.describe_model(uid),
                                                   FAMILY_TIMEOUT_S)
            except (TimeoutError, ConnectionError, OSError) as exc:
                logger.debug("usage: no family for %s yet: %r", uid, exc)
                continue
            except Exception:  # the supervisor knows no such model
                self._families[uid] = None
                continue
            self._families[uid] = described.get("model_name")
