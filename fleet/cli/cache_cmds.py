"""`fleet cached` and `fleet remove-cache`: the workers' weights caches, with Xinference's verbs
and flags (`--model_version`, `--worker-ip`, `--check`) plus hyphenated spellings."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from fleet.cli.model_cmds import _print_json, client_for, console, endpoint_option, json_option


def human_bytes(size: int | None) -> str:
    """Bytes for people, in binary units; small files stay readable (not "0 MiB")."""
    if size is None:
        return "unknown"
    value, unit = float(size), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"


def _row(entry: dict[str, Any]) -> list[Any]:
    files = str(entry.get("file_count"))
    if entry.get("complete") is False:
        files += " (partial)"
    return [entry["model_version"], entry.get("model_name"), entry.get("model_format"),
            entry.get("model_size_in_billions"), entry.get("quantization"),
            human_bytes(entry.get("size_bytes")), files,
            ", ".join(entry.get("in_use_by") or []) or "-", entry.get("actor_ip_address"),
            entry.get("path")]


def _print_table(entries: list[dict[str, Any]]) -> None:
    table = Table(title="Cached models")
    # The version is what remove-cache takes, so it is never wrapped; a long path folds.
    table.add_column("model_version", no_wrap=True)
    for column in ("name", "format", "size", "quantization", "on disk", "files", "in use by",
                   "worker"):
        table.add_column(column)
    table.add_column("path", overflow="fold")
    for entry in entries:
        table.add_row(*("-" if v is None else str(v) for v in _row(entry)))
    console.print(table)


@click.command("cached")
@endpoint_option
@click.option("-n", "--model_name", "--model-name", "model_name", default=None,
              help="Only this model's cached variants.")
@click.option("--worker-ip", "--worker_ip", "worker_ip", default=None,
              help="Only the cache of the worker(s) at this address or host.")
@json_option
def cached(endpoint: str, model_name: str | None, worker_ip: str | None, as_json: bool) -> None:
    """List the cached model weights of every worker: format, size on disk, files, and the
    running models that use them."""
    listing = client_for(endpoint).cache_listing(model_name, worker_ip)
    for worker in listing.get("unreachable_workers") or []:
        click.echo(f"warning: worker {worker['address']} did not answer: {worker['error']}",
                   err=True)
    entries = listing["list"]
    if as_json:
        _print_json(entries)
    elif not entries:
        click.echo("There are no cache files.")
    else:
        _print_table(entries)


@click.command("remove-cache")
@endpoint_option
@click.option("-n", "--model_version", "--model-version", "model_version", required=True,
              help="The model_version that `fleet cached` lists.")
@click.option("--worker-ip", "--worker_ip", "worker_ip", default=None,
              help="Remove it from the worker(s) at this address or host only.")
@click.option("--force", is_flag=True, help="Remove it even while a running model uses it.")
@click.option("-y", "--yes", "--check", "yes", is_flag=True,
              help="Do not ask for confirmation (--check is Xinference's spelling).")
def remove_cache(endpoint: str, model_version: str, worker_ip: str | None, force: bool,
                 yes: bool) -> None:
    """Delete a cached model's files; refused while a running model uses them unless --force."""
    client = client_for(endpoint)
    if not yes:
        plan = client.list_deletable_models(model_version, worker_ip)
        if not plan["paths"]:
            raise click.ClickException(f"no cached model {model_version!r}; "
                                       "`fleet cached` lists them")
        users = ", ".join(plan.get("in_use_by") or [])
        if users and not force:
            raise click.ClickException(f"{model_version} is in use by {users}; terminate it "
                                       "first, or pass --force")
        click.echo(f"This deletes {model_version}:")
        for path in plan["paths"]:
            click.echo(f"  {path}")
        if users:
            click.echo(f"It is in use by {users} (--force: removing it anyway).")
        click.confirm("Proceed?", abort=True)
    result = client.remove_cached_model(model_version, worker_ip, force)
    for removed in result["removed"]:
        click.echo(f"Removed {removed['path']} on {removed['actor_ip_address']}.")


CACHE_COMMANDS = [cached, remove_cache]
