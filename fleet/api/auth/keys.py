"""API keys: who holds which permissions, and for which models.

Keys are kept as their SHA-256 only: the admin keys of `--api-key` are hashed by the command
line before they reach ServerConfig, and the keys of an `--auth-config` file are hashed as the
file is read (the file may hold the hashes itself). A plain SHA-256 is enough here, unlike for
passwords: a key is a long random string, not something a person chose, so there is nothing to
guess from its hash. Finding a presented key is one hash and one dict lookup, then a
constant-time comparison of the two digests.

The auth config file is JSON in the shape of Xinference's `user_config`, so one written for
Xinference reads unchanged (its `auth_config` block and passwords are not used: Fleet
authenticates with API keys only):

    {"user_config": [
        {"username": "ci", "permissions": ["models:list", "models:read"],
         "api_keys": ["sk-plain-key",
                      {"key": "sk-other-key", "models": ["bge-m3"]},
                      {"sha256": "<hex digest of a key>"}],
         "models": ["qwen2.5-instruct"]}]}

A key's `models` (else its user's `models`) limits the model uids it may call, launch, stop or
describe; without either it may use every model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleet.errors import BadRequest

logger = logging.getLogger(__name__)

ADMIN = "admin"
# Xinference's names, and Fleet's own where Xinference has none (metrics:read).
PERMISSIONS = frozenset({
    "models:list", "models:read", "models:start", "models:stop", "models:register",
    "models:unregister", "cache:list", "cache:delete", "metrics:read", ADMIN,
})
# Names that newer Xinference releases write for the same rights.
PERMISSION_ALIASES = {
    "models:write": ("models:start", "models:stop"),
    "models:add": ("models:register",),
}
MIN_KEY_LENGTH = 8
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_warned_about_passwords: set[Path] = set()


def hash_key(key: str) -> str:
    """The hex SHA-256 under which a key is kept."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_key_text(key: str) -> str:
    """A key as given on the command line or in a file; refuses one too short to be secret."""
    key = key.strip()
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"an API key must be at least {MIN_KEY_LENGTH} characters long")
    return key


def expand_permissions(names: Iterable[str]) -> frozenset[str]:
    expanded: set[str] = set()
    for name in names:
        if name in PERMISSION_ALIASES:
            expanded.update(PERMISSION_ALIASES[name])
        elif name in PERMISSIONS:
            expanded.add(name)
        else:
            known = ", ".join(sorted(PERMISSIONS | PERMISSION_ALIASES.keys()))
            raise ValueError(f"unknown permission {name!r} (known: {known})")
    return frozenset(expanded)


FLAG, FILE, DATABASE = "flag", "file", "database"  # where a key comes from


@dataclass(frozen=True, slots=True)
class Grant:
    """What one key may do. `models` None: every model. `expires_at`: a Unix time past which
    the key is refused (keys made through the API, fleet.api.auth.live_keys); `key_id` names
    the key in listings and the audit log without showing it."""

    holder: str
    permissions: frozenset[str]
    models: frozenset[str] | None = None
    key_id: str | None = None
    source: str = FLAG
    expires_at: float | None = None
    # The key's limits by name (fleet.api.auth.key_requests.KeyLimits), only those it has.
    limits: dict[str, int] | None = None
    # The user a key made through the API belongs to (its owner); the holder names the key.
    owner: str | None = None
    # Its owner's limits, when the owner has some: they hold the sum of the owner's keys.
    owner_limits: dict[str, int] | None = None

    @property
    def user(self) -> str:
        """Whom usage is recorded under: the key's owner, else its holder (a file's user)."""
        return self.owner or self.holder

    @property
    def limited(self) -> bool:
        return bool(self.limits) or bool(self.owner_limits)

    def allows(self, permission: str) -> bool:
        return permission in self.permissions or ADMIN in self.permissions

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


def static_key_id(source: str, digest: str) -> str:
    """The id under which a key of --api-key or --auth-config is listed: a short piece of
    its hash, which says nothing of the key."""
    return f"{source}-{digest[:10]}"


class KeyStore:
    """Key digest -> Grant. `open`: whether the cluster takes requests without a key (no key
    anywhere); a store of the command line's keys never is."""

    open = False

    def __init__(self, grants: dict[str, Grant]):
        self.static = dict(grants)  # the command line's and the file's, read-only
        self._by_digest = self._indexed(grants)

    @staticmethod
    def _indexed(grants: dict[str, Grant]) -> dict[bytes, tuple[bytes, Grant]]:
        return {bytes.fromhex(digest): (bytes.fromhex(digest), grant)
                for digest, grant in grants.items()}

    def __len__(self) -> int:
        return len(self._by_digest)

    def find(self, key: bytes) -> Grant | None:
        digest = hashlib.sha256(key).digest()
        entry = self._by_digest.get(digest)
        if entry is None:
            return None
        stored, grant = entry
        if not hmac.compare_digest(stored, digest):
            return None
        if grant.expires_at is not None and grant.expires_at <= time.time():
            return None  # checked here, so an expired key is refused at its second
        return grant

    @classmethod
    def build(cls, admin_key_hashes: Iterable[str], auth_config: Path | None) -> KeyStore:
        grants = {digest: Grant("admin key", frozenset({ADMIN}),
                                key_id=static_key_id(FLAG, digest), source=FLAG)
                  for digest in admin_key_hashes}
        if auth_config is not None:
            for digest, grant in read_auth_config(auth_config).items():
                if digest in grants:
                    raise BadRequest(f"{auth_config}: a key of {grant.holder!r} is given twice")
                grants[digest] = grant
        return cls(grants)


class _KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    sha256: str | None = None
    models: list[str] | None = None

    def digest(self) -> str:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give a key as either 'key' or 'sha256'")
        if self.key is not None:
            return hash_key(check_key_text(self.key))
        digest = (self.sha256 or "").lower()
        if not _SHA256_HEX.match(digest):
            raise ValueError("'sha256' must be 64 hexadecimal digits")
        return digest


class _User(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1)
    password: str | None = None  # Xinference's; not used (no password logins)
    permissions: list[str] = []
    api_keys: list[str | _KeyEntry] = []
    models: list[str] | None = None

    @field_validator("permissions")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        expand_permissions(value)
        return value


class _AuthFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_config: list[_User]
    auth_config: dict[str, Any] | None = None  # Xinference's token settings; not used


def _user_grants(user: _User) -> dict[str, Grant]:
    permissions = expand_permissions(user.permissions)
    grants: dict[str, Grant] = {}
    for entry in user.api_keys:
        entry = _KeyEntry(key=entry) if isinstance(entry, str) else entry
        models = entry.models if entry.models is not None else user.models
        if models is not None and ADMIN in permissions:
            raise ValueError(f"user {user.username!r}: an admin key cannot be limited to models")
        digest = entry.digest()
        if digest in grants:
            raise ValueError(f"user {user.username!r}: the same key is given twice")
        grants[digest] = Grant(user.username, permissions,
                               frozenset(models) if models is not None else None,
                               key_id=static_key_id(FILE, digest), source=FILE)
    return grants


def read_auth_config(path: Path) -> dict[str, Grant]:
    """The file's keys, by digest; a file that cannot be used is a BadRequest naming why."""
    try:
        parsed = _AuthFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
        grants: dict[str, Grant] = {}
        for user in parsed.user_config:
            for digest, grant in _user_grants(user).items():
                if digest in grants:
                    raise ValueError(f"a key of {user.username!r} is also {grants[digest].holder!r}'s")
                grants[digest] = grant
    except OSError as exc:
        raise BadRequest(f"cannot read the auth config {path}: {exc.strerror}") from None
    except (ValueError, ValidationError) as exc:  # JSONDecodeError is a ValueError
        raise BadRequest(f"auth config {path}: {_one_line(exc)}") from None
    if not grants:
        raise BadRequest(f"auth config {path} holds no API keys")
    if any(user.password for user in parsed.user_config) and path not in _warned_about_passwords:
        _warned_about_passwords.add(path)  # the file is read at start-up and by the API
        logger.warning("auth config %s: passwords are not used; Fleet authenticates with API "
                       "keys only", path)
    return grants


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}"
    return str(exc)
