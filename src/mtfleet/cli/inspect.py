"""`mtfleet inspect OUT`: the units the health checks flagged, beside their source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mtfleet.cli.output import fail, out
from mtfleet.health import CHECKS, flags_path
from mtfleet.manifest import manifest_path


def register(app: typer.Typer) -> None:
    app.command()(inspect)


def inspect(
    output: Annotated[Path, typer.Argument(help="A job's output (its manifest lies beside it).")],
    check: Annotated[
        str | None, typer.Option(help=f"Only units flagged by this check: {', '.join(CHECKS)}.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most units to show.")] = 50,
) -> None:
    """Show the flagged units of OUTPUT side by side with their source, and the counts per check."""
    if check is not None and check not in CHECKS:
        raise fail(f"Check {check!r} does not exist; the checks are {', '.join(CHECKS)}.")
    try:
        manifest = json.loads(manifest_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise fail(f"{output} has no readable manifest ({manifest_path(output)}).") from None
    health = manifest.get("health")
    if health is None:
        raise fail(f"The manifest of {output} has no health section (made before the checks).")
    if health.get("checks") == "off":
        raise fail(f"The job that wrote {output} ran with its health checks off (--no-checks).")
    counts = ", ".join(f"{name} {count}" for name, count in health["per_check"].items())
    out.print(
        f"{health['units_flagged']} of {health['units_checked']} units flagged"
        f"{': ' + counts if counts else ''} (on flag: {health['on_flag']})",
        highlight=False,
    )
    table = Table("row", "field", "checks", "source", "translation", show_lines=True)
    shown = 0
    for entry in _flagged(output, health):
        if check is not None and check not in entry["checks"]:
            continue
        if shown == limit:
            break
        table.add_row(
            str(entry["row"]),
            entry["field"],
            ", ".join(entry["checks"]),
            entry["source"],
            entry["translation"],
        )
        shown += 1
    if shown:
        out.print(table)


def _flagged(output: Path, health: dict) -> list[dict]:
    """Every flagged unit from OUT.flags.jsonl; the manifest's excerpts when that file is gone."""
    path = flags_path(output)
    if not path.is_file():
        return health["flagged"]
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]
