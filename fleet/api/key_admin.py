"""Managing API keys while the cluster runs (POST, GET, PATCH, DELETE /v1/keys): what the
routes of fleet.api.routes.keys do, over the database's keys (fleet.database.api_keys) and the
API process's table of them (fleet.api.auth.live_keys), which is read again after each change
so that the change holds at once here (and within a second on every other API process).

A key is shown once, in the answer that makes it; afterwards only its id, its prefix and what
it may do. The keys of --api-key and --auth-config are listed too, read-only: they are
changed where they come from, and the server restarted."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timezone
from typing import Any

from fleet.api.auth.key_requests import CreateKeyRequest, KeyLimits, UpdateKeyRequest
from fleet.api.auth.keys import ADMIN, DATABASE, FILE, FLAG, Grant, hash_key
from fleet.api.auth.live_keys import LiveKeys
from fleet.database.api_keys import LIMIT_FIELDS, StoredKey, StoredUser
from fleet.errors import BadRequest, Conflict, NotFound

KEY_PREFIX = "sk-fleet-"
SHOWN_PREFIX = len(KEY_PREFIX) + 6  # how much of a key listings show: enough to tell apart
_WHERE = {FLAG: "--api-key (FLEET_API_KEY)", FILE: "the --auth-config file"}


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def stored_view(key: StoredKey) -> dict[str, Any]:
    """A key as the API shows it: never the key, nor its hash."""
    now = datetime.now(timezone.utc)
    status = ("revoked" if key.revoked_at else
              "expired" if key.expires_at and key.expires_at <= now else "active")
    return {"id": key.id, "object": "api_key", "name": key.name, "owner": key.owner,
            "source": DATABASE, "read_only": False, "prefix": key.prefix,
            "permissions": key.permissions, "models": key.models, "limits": key.limits,
            "expires_at": _iso(key.expires_at), "created_at": _iso(key.created_at),
            "revoked_at": _iso(key.revoked_at), "last_used_at": _iso(key.last_used_at),
            "status": status}


def static_view(grant: Grant) -> dict[str, Any]:
    return {"id": grant.key_id, "object": "api_key", "name": grant.holder,
            "owner": grant.holder, "source": grant.source, "read_only": True, "prefix": None,
            "permissions": sorted(grant.permissions),
            "models": sorted(grant.models) if grant.models is not None else None,
            "limits": dict.fromkeys(LIMIT_FIELDS), "expires_at": None, "created_at": None,
            "revoked_at": None, "last_used_at": None, "status": "active"}


def user_view(user: StoredUser) -> dict[str, Any]:
    return {"object": "user", "name": user.name, "limits": user.limits,
            "created_at": _iso(user.created_at)}


class KeyAdmin:
    def __init__(self, store: LiveKeys):
        self.store = store
        self.table = store.keys

    def _static(self, key_id: str) -> Grant | None:
        return next((g for g in self.store.static.values() if g.key_id == key_id), None)

    async def create(self, body: CreateKeyRequest) -> dict[str, Any]:
        if self.store.open and ADMIN not in body.permissions:
            raise BadRequest("this cluster has no keys yet, and its first key turns keys on for "
                             "every request: make it an admin key (permissions ['admin']), "
                             "or nobody could manage keys afterwards",
                             code="first_key_not_admin")
        key = new_key()
        limits = (body.limits.model_dump() if body.limits is not None
                  else dict.fromkeys(LIMIT_FIELDS))
        stored = await asyncio.to_thread(
            self.table.create, sha256=hash_key(key), prefix=key[:SHOWN_PREFIX], name=body.name,
            owner=body.owner, permissions=body.permissions, models=body.models, limits=limits,
            expires_at=body.expires_at)
        await self.store.reload()  # it works at once here
        return {**stored_view(stored), "key": key}

    async def listing(self) -> list[dict[str, Any]]:
        static = [static_view(grant) for grant in self.store.static.values()]
        stored = await asyncio.to_thread(self.table.all)
        return static + [stored_view(key) for key in stored]

    async def one(self, key_id: str) -> dict[str, Any]:
        grant = self._static(key_id)
        if grant is not None:
            return static_view(grant)
        return stored_view(await self._stored(key_id))

    async def update(self, key_id: str, body: UpdateKeyRequest) -> dict[str, Any]:
        self._refuse_static(key_id, "changed")
        current = await self._stored(key_id)
        if current.revoked_at is not None:
            raise Conflict(f"the key {key_id} is revoked: make a new one", code="key_revoked")
        changes = {field: getattr(body, field) for field in body.model_fields_set
                   if field != "limits"}
        if body.limits is not None:
            changes.update({field: getattr(body.limits, field)
                            for field in body.limits.model_fields_set})
        permissions = changes.get("permissions", current.permissions)
        models = changes.get("models", current.models)
        if ADMIN in permissions and models is not None:
            raise BadRequest("an admin key cannot be limited to models")
        updated = await asyncio.to_thread(self.table.update, key_id, changes)
        if updated is None:
            raise _unknown(key_id)
        await self.store.reload()
        return stored_view(updated)

    async def revoke(self, key_id: str) -> dict[str, Any]:
        self._refuse_static(key_id, "revoked")
        revoked = await asyncio.to_thread(self.table.revoke, key_id)
        if revoked is None:
            raise _unknown(key_id)
        await self.store.reload()  # refused at once here
        return stored_view(revoked)

    async def users(self) -> list[dict[str, Any]]:
        return [user_view(user) for user in await asyncio.to_thread(self.table.users)]

    async def set_user_limits(self, name: str, limits: KeyLimits) -> dict[str, Any]:
        if not name.strip() or len(name) > 200:
            raise BadRequest("a user's name is 1 to 200 characters", code="invalid_user")
        stored = await asyncio.to_thread(self.table.set_user_limits, name, limits.model_dump())
        await self.store.reload()  # they hold at once here
        return user_view(stored)

    async def _stored(self, key_id: str) -> StoredKey:
        stored = await asyncio.to_thread(self.table.get, key_id)
        if stored is None:
            raise _unknown(key_id)
        return stored

    def _refuse_static(self, key_id: str, done: str) -> None:
        grant = self._static(key_id)
        if grant is not None:
            raise Conflict(f"the key {key_id} comes from {_WHERE[grant.source]} and cannot be "
                           f"{done} through the API: change it there and restart the server",
                           code="key_read_only")


def _unknown(key_id: str) -> NotFound:
    return NotFound(f"no API key {key_id!r}", code="key_not_found")
