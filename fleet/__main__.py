from fleet.cli.main import cli

cli()
