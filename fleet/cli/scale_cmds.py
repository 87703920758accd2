"""`fleet scale -u UID -r N`: more or fewer replicas of a running model, while it serves."""

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


SCALE_COMMANDS = [scale]
