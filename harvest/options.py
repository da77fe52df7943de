"""Click option bundles shared by the `worldtrace` commands, as decorators (`@ray_address_option`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def ray_address_option(func: F) -> F:
    """`--ray-address` (envvar RAY_ADDRESS): a Ray cluster to join; unset means an embedded local Ray."""
    return click.option(
        "--ray-address",
        envvar="RAY_ADDRESS",
        default=None,
        metavar="ADDRESS",
        help="Ray cluster to run on (e.g. 10.0.0.5:6379 or 'auto'); default: an embedded local Ray. "
        "Env: RAY_ADDRESS.",
    )(func)


def out_option(required: bool = True, help: str = "Output directory.") -> Callable[[F], F]:
    """`--out DIR` as a `pathlib.Path` (created by the command when it writes)."""

    def decorator(func: F) -> F:
        return click.option(
            "-o",
            "--out",
            "out",
            required=required,
            type=click.Path(file_okay=False, dir_okay=True, path_type=Path),
            metavar="DIR",
            help=help,
        )(func)

    return decorator


def silent_option(func: F) -> F:
    """`-s/--silent`: no progress bar and no summary, only errors."""
    return click.option(
        "-s", "--silent", is_flag=True, default=False, help="No progress bar or summary; errors only."
    )(func)


def json_option(func: F) -> F:
    """`--json`: print the result as one JSON document instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, default=False, help="Print the result as JSON."
    )(func)
