"""`fleet keys create|list|update|revoke`: API keys managed while the cluster runs (an admin
key: -ak or FLEET_API_KEY), `fleet users list|limits`: the keys' owners and their limits, and
`fleet audit`: who did what to the cluster. See docs/security.md."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from fleet.cli.model_cmds import _print_json, _table, client_for, console, endpoint_option, json_option

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LIMITS = ("requests_per_minute", "tokens_per_minute", "max_concurrent_requests",
           "daily_tokens", "monthly_tokens")
CLEAR = "none"


class LimitValue(click.ParamType):
    """A limit: a whole number from 1, or `none` (no limit)."""

    name = "N|none"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        if isinstance(value, int) or str(value).lower() == CLEAR:
            return value if isinstance(value, int) else CLEAR
        if str(value).isdigit() and int(value) >= 1:
            return int(value)
        self.fail(f"{value!r} is not a whole number from 1, nor 'none'", param, ctx)


def _expiry(expires_at: str | None, expires_in: str | None) -> str | None:
    if expires_at and expires_in:
        raise click.UsageError("give --expires-at or --expires-in, not both")
    if expires_in:
        found = _DURATION.match(expires_in.strip())
        if not found:
            raise click.BadParameter("a number and a unit: 90s, 30m, 12h, 7d or 2w",
                                     param_hint="--expires-in")
        delta = timedelta(seconds=int(found[1]) * _SECONDS[found[2]])
        return (datetime.now(timezone.utc) + delta).isoformat()
    return expires_at


def _limit_options(command: Any) -> Any:
    for field in reversed(_LIMITS):
        command = click.option(f"--{field.replace('_', '-')}", field, type=LimitValue(),
                               help=f"Limit: {field.replace('_', ' ')} (none: no limit).")(command)
    return command


def _limits(fields: dict[str, Any]) -> dict[str, int | None]:
    return {k: (None if v == CLEAR else v) for k, v in fields.items()
            if k in _LIMITS and v is not None}


@click.group()
def keys() -> None:
    """Manage API keys while the cluster runs (needs an admin key)."""


@keys.command("create")
@endpoint_option
@json_option
@click.option("--name", required=True, help="What the key is for (shown in listings and the audit).")
@click.option("--owner", help="The user or team that holds it.")
@click.option("-p", "--permission", "permissions", multiple=True,
              help="A permission (Xinference's names; repeat). Default: models:list, models:read.")
@click.option("-m", "--model", "models", multiple=True, help="A model uid it may use (repeat).")
@click.option("--expires-at", help="When it stops working (ISO 8601; UTC without a zone).")
@click.option("--expires-in", help="Or how long it works: 90s, 30m, 12h, 7d, 2w.")
@_limit_options
def create_key(endpoint: str, as_json: bool, name: str, owner: str | None,
               permissions: tuple[str, ...], models: tuple[str, ...], expires_at: str | None,
               expires_in: str | None, **limit_fields: Any) -> None:
    """Make a key; it is printed once, and only its prefix can be seen afterwards."""
    made = client_for(endpoint).create_key(
        name, owner=owner, permissions=list(permissions) or None, models=list(models) or None,
        expires_at=_expiry(expires_at, expires_in), limits=_limits(limit_fields) or None)
    if as_json:
        _print_json(made)
        return
    console.print(f"Created key [bold]{made['id']}[/bold] ({made['name']}). It is shown once, "
                  "keep it now:")
    click.echo(made["key"])


@keys.command("list")
@endpoint_option
@json_option
def list_keys(endpoint: str, as_json: bool) -> None:
    """Every key, those of --api-key and --auth-config included (read-only); never a key."""
    listed = client_for(endpoint).list_keys()
    if as_json:
        _print_json(listed)
        return
    rows = [[k["id"], k["name"], k["owner"], k["source"], k["prefix"],
             ",".join(k["permissions"]), ",".join(k["models"]) if k["models"] else "all",
             k["expires_at"], k["status"]] for k in listed]
    _table("API keys", ["ID", "Name", "Owner", "Source", "Prefix", "Permissions", "Models",
                        "Expires", "Status"], rows)


@keys.command("update")
@endpoint_option
@json_option
@click.argument("key_id")
@click.option("--name", help="A new name.")
@click.option("--owner", help="A new owner.")
@click.option("-p", "--permission", "permissions", multiple=True,
              help="Its permissions (repeat; replaces them all).")
@click.option("-m", "--model", "models", multiple=True,
              help="The model uids it may use (repeat; replaces them all).")
@click.option("--all-models", is_flag=True, help="Let it use every model.")
@click.option("--expires-at", help="When it stops working (ISO 8601).")
@click.option("--expires-in", help="Or how long from now: 90s, 30m, 12h, 7d, 2w.")
@click.option("--no-expiry", is_flag=True, help="Let it work until revoked.")
@_limit_options
def update_key(endpoint: str, as_json: bool, key_id: str, name: str | None, owner: str | None,
               permissions: tuple[str, ...], models: tuple[str, ...], all_models: bool,
               expires_at: str | None, expires_in: str | None, no_expiry: bool,
               **limit_fields: Any) -> None:
    """Change a key's name, owner, permissions, models, expiry or limits (those given)."""
    changes: dict[str, Any] = {k: v for k, v in {"name": name, "owner": owner}.items() if v}
    if permissions:
        changes["permissions"] = list(permissions)
    if models or all_models:
        changes["models"] = None if all_models else list(models)
    expiry = _expiry(expires_at, expires_in)
    if expiry or no_expiry:
        changes["expires_at"] = None if no_expiry else expiry
    if _limits(limit_fields):
        changes["limits"] = _limits(limit_fields)
    if not changes:
        raise click.UsageError("nothing to change: give at least one option")
    updated = client_for(endpoint).update_key(key_id, **changes)
    if as_json:
        _print_json(updated)
    else:
        console.print(f"Updated key [bold]{key_id}[/bold] ({updated['name']}).")


@keys.command("revoke")
@endpoint_option
@click.argument("key_id")
def revoke_key(endpoint: str, key_id: str) -> None:
    """Revoke a key: refused on every API process within a second."""
    revoked = client_for(endpoint).revoke_key(key_id)
    console.print(f"Revoked key [bold]{key_id}[/bold] ({revoked['name']}).")


@click.command()
@endpoint_option
@json_option
@click.option("--since", help="From this time (ISO 8601).")
@click.option("--action", help="Only this action (model.launch, key.revoke, ...).")
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
def audit(endpoint: str, as_json: bool, since: str | None, action: str | None,
          limit: int) -> None:
    """Who launched, scaled, terminated, registered, removed cache or changed keys, newest first."""
    entries = client_for(endpoint).audit_log(since, action, limit)
    if as_json:
        _print_json(entries)
        return
    _table("Audit log", ["Time", "Actor", "Key", "Action", "Target", "From"],
           [[e["time"], e["actor"], e["actor_key_id"], e["action"], e["target"],
             e["client_address"]] for e in entries])


@click.group()
def users() -> None:
    """The keys' owners and their limits, which hold the sum of their keys (admin key)."""


@users.command("list")
@endpoint_option
@json_option
def list_users(endpoint: str, as_json: bool) -> None:
    """Every user (a key's owner), with its limits."""
    listed = client_for(endpoint).list_users()
    if as_json:
        _print_json(listed)
        return
    _table("Users", ["Name", *(field.replace("_", " ") for field in _LIMITS)],
           [[u["name"], *(u["limits"][field] or "-" for field in _LIMITS)] for u in listed])


@users.command("limits")
@endpoint_option
@json_option
@click.argument("name")
@_limit_options
def set_user_limits(endpoint: str, as_json: bool, name: str, **limit_fields: Any) -> None:
    """Set a user's limits: those given; every other is none (no options: no limits)."""
    updated = client_for(endpoint).set_user_limits(name, _limits(limit_fields))
    if as_json:
        _print_json(updated)
    else:
        shown = {k: v for k, v in updated["limits"].items() if v is not None}
        console.print(f"Limits of [bold]{name}[/bold]: {shown or 'none'}.")


KEY_COMMANDS = [keys, users, audit]
