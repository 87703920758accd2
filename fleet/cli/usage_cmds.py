"""`fleet usage`: what the cluster's requests used, by key, user, model or family, over the
last day (or `--since`), as a table, JSON or CSV (GET /v1/usage; an admin key sees every
key's usage, another key its own). See docs/usage.md."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta, timezone

import click

from fleet.cli.model_cmds import _print_json, _table, client_for, endpoint_option, json_option

_AGO = re.compile(r"^(\d+)([mhdw])$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
GROUPS = ("key", "user", "model", "family")


def since_time(value: str, now: datetime | None = None) -> str:
    """`--since`: a span back from now (90m, 24h, 7d, 2w) or an ISO 8601 time, as ISO."""
    found = _AGO.match(value.strip())
    if found:
        now = now or datetime.now(timezone.utc)
        return (now - timedelta(seconds=int(found[1]) * _SECONDS[found[2]])).isoformat()
    if not re.match(r"^\d{4}-\d{2}-\d{2}", value.strip()):
        raise click.BadParameter("a span (90m, 24h, 7d, 2w) or an ISO 8601 time",
                                 param_hint="--since")
    return value.strip()


def _group_names(given: tuple[str, ...]) -> list[str]:
    names = [n.strip() for value in given for n in value.split(",") if n.strip()]
    for name in names:
        if name not in GROUPS:
            raise click.BadParameter(f"{name!r} is none of {', '.join(GROUPS)}",
                                     param_hint="--group-by")
    return list(dict.fromkeys(names))


@click.command()
@endpoint_option
@json_option
@click.option("-g", "--group-by", "group_by", multiple=True, default=("key", "model"),
              show_default=True, help="key, user, model or family (repeat, or a comma list).")
@click.option("-b", "--bucket", type=click.Choice(["hour", "day", "month", "none"]),
              default="none", show_default=True, help="Cut the span into buckets of time.")
@click.option("--since", default="24h", show_default=True,
              help="From: a span back from now (90m, 24h, 7d, 2w) or an ISO 8601 time.")
@click.option("--until", help="To this ISO 8601 time (default: now).")
@click.option("--key-id", help="Only this key's usage.")
@click.option("--user", help="Only this user's keys.")
@click.option("-m", "--model", help="Only this model uid.")
@click.option("--csv", "as_csv", is_flag=True, help="Write CSV (with a header row) to stdout.")
def usage(endpoint: str, as_json: bool, group_by: tuple[str, ...], bucket: str, since: str,
          until: str | None, key_id: str | None, user: str | None, model: str | None,
          as_csv: bool) -> None:
    """Requests, tokens, images and audio seconds used, by key, user, model or family."""
    query = dict(group_by=_group_names(group_by), bucket=None if bucket == "none" else bucket,
                 start=since_time(since), end=until, key_id=key_id, user=user, model=model)
    client = client_for(endpoint)
    if as_csv:
        sys.stdout.write(client.usage_csv(**query))
        return
    answer = client.usage(**query)
    if as_json:
        _print_json(answer)
        return
    names = (["bucket"] if answer["bucket"] else []) + [
        {"key": "key_id"}.get(g, g) for g in answer["group_by"]]
    columns = [*names, "requests", "errors", "prompt_tokens", "completion_tokens",
               "total_tokens", "images", "audio_seconds", "mean_latency_ms"]
    _table(f"Usage from {answer['start']} to {answer['end']}",
           [c.replace("_", " ").capitalize() for c in columns],
           [[row.get(c) for c in columns] for row in answer["data"]])


USAGE_COMMANDS = [usage]
