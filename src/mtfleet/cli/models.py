"""`mtfleet models inspect`: what a job would do with a model, before it runs one."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mtfleet.cli.console import Format, OutputFormat
from mtfleet.cli.output import fail, out
from mtfleet.errors import MtfleetError

# language codes shown in the text view; --output json lists them all
SHOWN_CODES = 8

models = typer.Typer(
    help="Look at translation models.", no_args_is_help=True, rich_markup_mode=None
)


def register(app: typer.Typer) -> None:
    app.add_typer(models, name="models")


@models.command()
def inspect(
    model: Annotated[str, typer.Argument(help="Model directory or Hugging Face hub id.")],
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code", help="Load a model that brings code of its own (auto_map)."
        ),
    ] = False,
    output: OutputFormat = Format.TABLE,
) -> None:
    """Print a model's family, the languages it knows, its input limit and the engines that can
    run it: what a job would do with it. Loads no weights."""
    from mtfleet.engines import inspect_model

    try:
        report = inspect_model(model, trust_remote_code=trust_remote_code)
    except MtfleetError as error:
        raise fail(error) from None
    if output is Format.JSON:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    languages = report["languages"]
    codes = languages["codes"]
    shown = ", ".join(codes[:SHOWN_CODES]) + (", ..." if len(codes) > SHOWN_CODES else "")
    lines = {
        "model": report["model"],
        "family": f"{report['family']} ({report['architecture']}, {report['tokenizer_class']})",
        "languages": f"{languages['count']}" + (f": {shown}" if codes else ""),
        "given as": languages["given_as"],
        "input limit": f"{report['max_input_tokens']} tokens a segment",
        "engines": ", ".join(report["engines"]),
    }
    if report["remote_code"]:
        lines["remote code"] = "yes: jobs need --trust-remote-code"
    for name, value in lines.items():
        out.print(f"{name + ':':<13}{value}", highlight=False, soft_wrap=True)
