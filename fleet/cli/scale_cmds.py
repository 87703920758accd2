"""`fleet scale -u UID -r N`: more or fewer replicas of a running model, while it serves;
`fleet autoscale -u UID --min 1 --max 3`: let the load decide, within bounds;
`fleet alias -u UID NAME...`: the other names it answers to."""

from __future__ import annotations

import click

from fleet.cli.model_cmds import client_for, endpoint_option


@click.command()
@endpoint_option
@click.option("-u", "--model-uid", required=True, help="The running model.")
@click.option("-r", "--replica", "replicas", required=True, type=click.IntRange(min=1),
              help="The number of replicas it should have.")
def scale(endpoint: str, model_uid: str, replicas: int) -> None:
    """Add replicas (placed where there is room, ready before this returns) or remove the newest
    ones (each finishes its requests first)."""
    kept = client_for(endpoint).scale(model_uid, replicas)
    click.echo(f"Model {model_uid} has {len(kept)} replica(s): "
               + ", ".join(f"{model_uid}-{i}" for i in kept))


@click.command()
@endpoint_option
@click.option("-u", "--model-uid", required=True, help="The running model.")
@click.option("--min", "min_replicas", type=click.IntRange(min=0),
              help="Fewest replicas; 0: unloaded when idle, loaded by the next request.")
@click.option("--max", "max_replicas", type=click.IntRange(min=1), help="Most replicas.")
@click.option("--target-inflight", type=click.FloatRange(min=0, min_open=True),
              help="Requests running plus queued per replica above which one is added.")
@click.option("--up-delay", "scale_up_delay", type=click.FloatRange(min=0),
              help="Seconds the load stays above the target before a replica is added.")
@click.option("--down-delay", "scale_down_delay", type=click.FloatRange(min=0),
              help="Seconds the load fits in one replica fewer before one is removed.")
def autoscale(endpoint: str, model_uid: str, **fields: float | None) -> None:
    """Change a model's autoscaling while it serves (the options given; the others keep their
    value). See docs/autoscaling.md."""
    settings = client_for(endpoint).autoscale(model_uid, **fields)  # type: ignore[arg-type]
    click.echo(f"Model {model_uid} autoscales: " + ", ".join(f"{k}={v:g}"
                                                            for k, v in settings.items()))


@click.command()
@endpoint_option
@click.option("-u", "--model-uid", required=True, help="The running model.")
@click.option("--clear", is_flag=True, help="Remove every alias.")
@click.argument("names", nargs=-1)
def alias(endpoint: str, model_uid: str, clear: bool, names: tuple[str, ...]) -> None:
    """Set the other names a running model answers to (e.g. claude-sonnet-4-5 gpt-4o),
    replacing those it had; they take effect at once and are kept across restarts."""
    if not names and not clear:
        raise click.UsageError("give the aliases, or --clear to remove them")
    if names and clear:
        raise click.UsageError("give the aliases or --clear, not both")
    kept = client_for(endpoint).set_aliases(model_uid, list(names))
    click.echo(f"Model {model_uid} answers to " + (", ".join(kept) if kept else "its uid only"))


SCALE_COMMANDS = [scale, autoscale, alias]
