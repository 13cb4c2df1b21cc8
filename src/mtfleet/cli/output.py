"""Where the `mtfleet` commands write: results to stdout, progress and errors to stderr."""

from __future__ import annotations

import typer
from rich.console import Console

from mtfleet.errors import MtfleetError
from mtfleet.wording import cli_wording

console = Console(stderr=True)
out = Console()


def fail(error: MtfleetError | str) -> typer.Exit:
    """Shows a user's mistake as one sentence naming CLI options (the API's answers name fields),
    without a traceback; the command exits with 2."""
    console.print(f"[bold red]error:[/] {cli_wording(str(error))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)
