"""API keys managed while the cluster runs (fleet.api.key_admin; admin keys only):

- `POST /v1/keys` makes a key and answers it once, in `key`;
- `GET /v1/keys` lists every key (`{"object": "list", "data": [...]}`), those of --api-key and
  --auth-config included as read-only; `GET /v1/keys/{id}` one of them;
- `PATCH /v1/keys/{id}` changes the fields given (name, owner, permissions, models,
  expires_at, limits); `DELETE /v1/keys/{id}` revokes the key (kept, listed as revoked);
- `GET /v1/users` lists the keys' owners with their limits; `PUT /v1/users/{name}/limits` sets
  a user's limits (all of them: a limit left out is none), which hold the sum of its keys.
Each change is in the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from fleet.api.audit import audit
from fleet.api.auth.key_requests import CreateKeyRequest, KeyLimits, UpdateKeyRequest
from fleet.api.auth.live_keys import LiveKeys
from fleet.api.key_admin import KeyAdmin
from fleet.errors import BadRequest

router = APIRouter()


def _admin(request: Request) -> KeyAdmin:
    store = request.app.state.auth
    if not isinstance(store, LiveKeys):  # the keys of a server with a database
        raise BadRequest("this server keeps no keys in a database", code="no_database")
    return KeyAdmin(store)


@router.post("/v1/keys")
async def create_key(request: Request, body: CreateKeyRequest) -> dict[str, Any]:
    made = await _admin(request).create(body)
    await audit(request, "key.create", made["id"],
                body.model_dump(mode="json", exclude_none=True))
    return made


@router.get("/v1/keys")
async def list_keys(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await _admin(request).listing()}


@router.get("/v1/keys/{key_id}")
async def get_key(request: Request, key_id: str) -> dict[str, Any]:
    return await _admin(request).one(key_id)


@router.patch("/v1/keys/{key_id}")
async def update_key(request: Request, key_id: str, body: UpdateKeyRequest) -> dict[str, Any]:
    updated = await _admin(request).update(key_id, body)
    await audit(request, "key.update", key_id, body.model_dump(mode="json", exclude_unset=True))
    return updated


@router.delete("/v1/keys/{key_id}")
async def revoke_key(request: Request, key_id: str) -> dict[str, Any]:
    revoked = await _admin(request).revoke(key_id)
    await audit(request, "key.revoke", key_id, {"name": revoked["name"]})
    return revoked


@router.get("/v1/users")
async def list_users(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await _admin(request).users()}


@router.put("/v1/users/{name}/limits")
async def set_user_limits(request: Request, name: str, body: KeyLimits) -> dict[str, Any]:
    updated = await _admin(request).set_user_limits(name, body)
    await audit(request, "user.limits", name, body.model_dump(mode="json"))
    return updated
