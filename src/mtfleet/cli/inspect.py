"""`mtfleet inspect OUT`: the units the health checks flagged, beside their source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mtfleet.cli.console import Format, OutputFormat
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
    output_format: OutputFormat = Format.TABLE,
) -> None:
    """Show the flagged units of OUTPUT side by side with their source, and the counts per check.

    With --output json, one JSON document: the counts and the units (whole field paths, whole
    texts), for scripts."""
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
    units = [
        entry for entry in _flagged(output, health) if check is None or check in entry["checks"]
    ][:limit]
    if output_format is Format.JSON:
        summary = {key: health[key] for key in ("units_checked", "units_flagged", "per_check")}
        print(json.dumps({**summary, "units": units}, ensure_ascii=False))
        return
    counts = ", ".join(f"{name} {count}" for name, count in health["per_check"].items())
    out.print(
        f"{health['units_flagged']} of {health['units_checked']} units flagged"
        f"{': ' + counts if counts else ''} (on flag: {health['on_flag']})",
        highlight=False,
    )
    table = Table("row", "checks", "source", "translation", show_lines=True)
    for entry in units:
        # the whole field path on a line of its own, never cut by a narrow column
        table.add_row(
            str(entry["row"]),
            ", ".join(entry["checks"]),
            Text.assemble((entry["field"], "bold"), "\n", entry["source"]),
            entry["translation"],
        )
    if units:
        out.print(table)


def _flagged(output: Path, health: dict) -> list[dict]:
    """Every flagged unit from OUT.flags.jsonl; the manifest's excerpts when that file is gone."""
    path = flags_path(output)
    if not path.is_file():
        return health["flagged"]
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]
