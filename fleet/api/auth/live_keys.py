"""The keys of a running cluster: those of --api-key and --auth-config (read-only), and those
made through the API (fleet.database.api_keys), held in memory by each API process so that
checking a request's key stays one hash and one dict lookup, with no database read.

How a change reaches every API process within a second:
- the process that makes the change reads the keys again before it answers, so a new key works
  at once and a revoked one is refused at once there;
- every process polls the keys' change token (one row of fleet_meta) each POLL_S and reads the
  keys again when it differs, so the others follow within POLL_S plus one read;
- an expiry needs no change at all: it is checked against the clock at each lookup
  (fleet.api.auth.keys.KeyStore.find).

A cluster started without --api-key and --auth-config is open as long as no key was ever made
in its database; the first key made closes it (docs/security.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

from fleet.api.auth.keys import DATABASE, Grant, KeyStore, expand_permissions
from fleet.database.api_keys import DatabaseKeys, KeySnapshot, StoredKey

logger = logging.getLogger(__name__)

POLL_S = 0.5
# How often the keys used since the last time are written (their last_used_at, to the nearest
# interval): a set insertion per request, one small write per interval, off the request path.
USED_FLUSH_S = 30.0


def grant_of(key: StoredKey, user_limits: dict[str, dict[str, int]] | None = None) -> Grant:
    """`user_limits`: the limits of the users that have any, by name."""
    # Only the limits set, None when there are none: the metering middleware tests
    # `grant.limited` and nothing more for a key without limits (fleet.api.rate_limits).
    limits = {name: value for name, value in key.limits.items() if value is not None}
    owner_limits = (user_limits or {}).get(key.owner) if key.owner is not None else None
    return Grant(key.name, expand_permissions(key.permissions),
                 frozenset(key.models) if key.models is not None else None,
                 key_id=key.id, source=DATABASE,
                 expires_at=key.expires_at.timestamp() if key.expires_at else None,
                 limits=limits or None, owner=key.owner, owner_limits=owner_limits or None)


class LiveKeys(KeyStore):
    """The command line's keys and the database's, kept up to date (see the top)."""

    def __init__(self, static: dict[str, Grant], keys: DatabaseKeys):
        super().__init__(static)
        self.keys = keys
        self.open = not static
        self._token: str | None = None
        self._reading = asyncio.Lock()  # one read applied at a time, never an older one last
        self._failing = False
        self._used: set[str] = set()  # ids of database keys used since the last flush

    def find(self, key: bytes) -> Grant | None:
        grant = super().find(key)
        if grant is not None and grant.source == DATABASE and grant.key_id is not None:
            self._used.add(grant.key_id)
        return grant

    async def flush_used(self) -> None:
        """Writes when the keys used since the last flush were last used (now)."""
        await asyncio.to_thread(self.flush_used_now)

    def flush_used_now(self) -> None:
        """The same, in this thread: at stop, where the event loop may be cancelling its
        tasks (and an await with them)."""
        used, self._used = self._used, set()
        if used:
            self.keys.mark_used(dict.fromkeys(used, datetime.now(timezone.utc)))

    def load(self) -> None:
        """Reads the keys now (at start, before the API serves)."""
        self._apply(self.keys.snapshot())

    async def reload(self) -> None:
        """Reads the keys again, after a change this process made."""
        async with self._reading:
            self._apply(await asyncio.to_thread(self.keys.snapshot))

    async def follow(self, interval_s: float = POLL_S) -> None:
        """Polls the change token for ever (a task of the API server), and writes the keys'
        last use every USED_FLUSH_S."""
        flushed = time.monotonic()
        while True:
            await asyncio.sleep(interval_s)
            await self._poll()
            if time.monotonic() - flushed >= USED_FLUSH_S:
                flushed = time.monotonic()
                try:
                    await self.flush_used()
                except Exception as exc:  # a full disk, say: only the last use is lost
                    logger.warning("API keys: could not write their last use to %s (%s)",
                                   self.keys.db.shown, exc)

    async def _poll(self) -> None:
        try:
            token = await asyncio.to_thread(self.keys.token)
            if token != self._token:
                await self.reload()
        except Exception as exc:  # the database is down: keep the keys last read
            if not self._failing:
                logger.error("API keys: cannot read the keys' changes from %s (%s); keeping "
                             "the keys last read", self.keys.db.shown, exc)
            self._failing = True
            return
        if self._failing:
            logger.info("API keys: the database answers again")
        self._failing = False

    def _apply(self, snapshot: KeySnapshot) -> None:
        grants = dict(self.static)
        for key in snapshot.active:
            if key.sha256 in grants:  # the command line's rights win over a copy
                continue
            grants[key.sha256] = grant_of(key, snapshot.user_limits)
        self._by_digest = self._indexed(grants)  # one swap: a lookup sees old or new, whole
        self.open = not self.static and not snapshot.any_key
        self._token = snapshot.token
