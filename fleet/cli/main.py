"""Entry point of the `fleet` console script."""

from __future__ import annotations

from typing import Any

import click

from fleet import __version__
from fleet.cli.audio_cmds import AUDIO_COMMANDS
from fleet.cli.cache_cmds import CACHE_COMMANDS
from fleet.cli.generation_cmds import GENERATION_COMMANDS
from fleet.cli.image_cmds import IMAGE_COMMANDS
from fleet.cli.key_cmds import KEY_COMMANDS
from fleet.cli.model_cmds import MODEL_COMMANDS
from fleet.cli.scale_cmds import SCALE_COMMANDS
from fleet.cli.server_cmds import local, supervisor, worker
from fleet.cli.usage_cmds import USAGE_COMMANDS
from fleet.client import FleetClientError


class FleetGroup(click.Group):
    """Server errors become one readable line and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FleetClientError as exc:
            raise click.ClickException(exc.message) from None


@click.group(cls=FleetGroup)
@click.version_option(__version__, prog_name="fleet")
def cli() -> None:
    """Fleet: serve and manage open models on your own machines."""


for command in (local, supervisor, worker, *MODEL_COMMANDS, *SCALE_COMMANDS, *GENERATION_COMMANDS,
                *CACHE_COMMANDS, *IMAGE_COMMANDS, *AUDIO_COMMANDS, *KEY_COMMANDS,
                *USAGE_COMMANDS):
    cli.add_command(command)

if __name__ == "__main__":
    cli()
