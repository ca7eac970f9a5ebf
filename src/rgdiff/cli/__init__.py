"""The `rgdiff` command line: the typer app, the jobs behind each command, reports and plots."""

from rgdiff.cli.app import main as main
