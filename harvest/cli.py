"""The `worldtrace` command line: one click group; each subcommand lives in its own module."""

from __future__ import annotations

import importlib
import logging

import click

from harvest import __version__

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

# name -> "module:attribute"; modules are imported only when their command runs (or for --help),
# so `worldtrace --help` does not pay for Ray, torch or DuckDB.
COMMANDS: dict[str, tuple[str, str]] = {
    "harvest": ("harvest.commands.harvest", "Trace programs in Docker sandboxes and write shards."),
    "images": ("harvest.commands.images", "Build and list the sandbox images."),
    "validate": ("harvest.commands.validate", "Check shards against the schema and the manifest."),
    "publish": ("harvest.commands.publish", "Turn shards into a documented, loadable dataset."),
    "inspect": ("harvest.commands.inspect", "Step through a trace as text, CWM tokens, JSON or HTML."),
    "query": ("harvest.commands.query", "Run SQL (DuckDB) over shards."),
    "train": ("harvest.commands.train", "Train a small code world model on shards."),
    "eval": ("harvest.commands.eval", "Evaluate next-frame prediction of a checkpoint."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in COMMANDS:
            return command
        module_name, _ = COMMANDS[cmd_name]
        module = importlib.import_module(module_name)
        command = module.command
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="worldtrace")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Record how Python programs execute, line by line, and turn the traces into datasets.

    \b
    Example:
        worldtrace harvest examples/programs --out harvest-out
        worldtrace inspect harvest-out --format text
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # `python -m harvest.cli ...`, as the `worldtrace` script
    cli(prog_name="worldtrace")
