"""`make demo`: a real translation job on the embedded defaults, on a local Ray cluster with SQLite.

It uses the committed English->German model (models/multi30k-en-de) when it is there, and otherwise
builds a tiny random-weight model whose translations are nonsense but flow through the real code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mtfleet.cli.progress import JobProgress
from mtfleet.cluster import run_job
from mtfleet.errors import MtfleetError
from mtfleet.manifest import manifest_path
from mtfleet.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]
TRAINED_MODEL = ROOT / "models" / "multi30k-en-de"
INPUT = ROOT / "examples" / "alpaca_sample.json"
STATE_DIR = ROOT / ".mtfleet"
OUTPUT_DIR = ROOT / "out"


def demo_model(console: Console) -> Path:
    if (TRAINED_MODEL / "config.json").exists():
        console.print(f"model: {TRAINED_MODEL} (trained on Multi30k captions, English -> German)")
        return TRAINED_MODEL
    from mtfleet.testing.tiny_model import build_tiny_marian

    tiny = STATE_DIR / "models" / "tiny-marian"
    if not (tiny / "config.json").exists():
        build_tiny_marian(tiny)
    console.print(f"model: {tiny} (tiny, random weights: its translations are nonsense)")
    return tiny


def main() -> int:
    console = Console()
    model = demo_model(console)
    output = OUTPUT_DIR / "alpaca_sample.de.json"
    OUTPUT_DIR.mkdir(exist_ok=True)
    spec = JobSpec(
        input=str(INPUT),
        output=str(output),
        model=str(model),
        fields=["instruction", "input", "output"],
    )
    try:
        with JobProgress(console) as progress:
            result = run_job(spec, state_dir=STATE_DIR, on_progress=progress.update)
    except MtfleetError as error:
        console.print(f"[bold red]error:[/] {error}")
        return 2
    if result.state != "succeeded":
        console.print(f"[bold red]job {result.job_id} {result.state}:[/] {result.error}")
        return 1
    manifest = result.manifest or {}
    table = Table("source", "translation", title="First rows, instruction field", show_lines=True)
    sources = json.loads(INPUT.read_text(encoding="utf-8"))
    translations = json.loads(output.read_text(encoding="utf-8"))
    for source, translation in list(zip(sources, translations, strict=True))[:6]:
        table.add_row(source["instruction"], translation["instruction"])
    console.print(table)
    console.print(
        f"{manifest['rows']} rows, {manifest['units_translated']} fields translated, "
        f"{manifest['units_skipped_empty']} empty fields kept as they were, in {manifest['elapsed_s']:.1f} s"
    )
    console.print(f"output:   {output}")
    console.print(f"manifest: {manifest_path(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
