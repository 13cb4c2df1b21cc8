"""`make demo`: a real translation job on the embedded defaults, on a local Ray cluster with SQLite.

It uses the committed English->German model (models/multi30k-en-de) when it is there, and otherwise
builds a tiny random-weight model whose translations are nonsense but flow through the real code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from rich.console import Console
from rich.table import Table

from mtfleet.cli.progress import JobProgress
from mtfleet.cluster import run_job
from mtfleet.cluster.runtime import connect
from mtfleet.errors import MtfleetError
from mtfleet.manifest import manifest_path
from mtfleet.spec import DEFAULT_STATE_DIR, JobSpec
from mtfleet.store.states import JobState

ROOT = Path(__file__).resolve().parents[2]
TRAINED_MODEL = ROOT / "models" / "multi30k-en-de"
INPUT = ROOT / "examples" / "alpaca_sample.json"
CAPTIONS = ROOT / "examples" / "multi30k_captions.jsonl"
STATE_DIR = ROOT / DEFAULT_STATE_DIR
OUTPUT_DIR = ROOT / "out"


def demo_model(console: Console) -> Path:
    if (TRAINED_MODEL / "config.json").exists():
        console.print(f"model: {TRAINED_MODEL} (trained on Multi30k captions, English -> German)")
        return TRAINED_MODEL
    from mtfleet.random_models import build_tiny_marian

    tiny = STATE_DIR / "models" / "tiny-marian"
    if not (tiny / "config.json").exists():
        build_tiny_marian(tiny)
    console.print(f"model: {tiny} (tiny, random weights: its translations are nonsense)")
    return tiny


def translate(console: Console, spec: JobSpec) -> dict | None:
    try:
        with JobProgress(console) as progress:
            result = run_job(spec, state_dir=STATE_DIR, on_progress=progress.update)
    except MtfleetError as error:
        console.print(f"[bold red]error:[/] {error}")
        return None
    if result.state != JobState.SUCCEEDED:
        console.print(f"[bold red]job {result.job_id} {result.state}:[/] {result.error}")
        return None
    return result.manifest


def side_by_side(title: str, source: Path, output: Path, field: str, rows: int) -> Table:
    table = Table("source", "translation", title=title, show_lines=True)
    for before, after in list(zip(read_rows(source), read_rows(output), strict=True))[:rows]:
        table.add_row(before[field], after[field])
    return table


def read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    return (
        json.loads(text)
        if path.suffix == ".json"
        else [json.loads(line) for line in text.splitlines()]
    )


def main() -> int:
    console = Console()
    model = demo_model(console)
    OUTPUT_DIR.mkdir(exist_ok=True)
    output = OUTPUT_DIR / "alpaca_sample.de.json"
    captions_output = OUTPUT_DIR / "multi30k_captions.de.jsonl"
    # One local Ray cluster for both jobs.
    started_here = connect()
    try:
        fields = ["instruction", "input", "output"]
        manifest = translate(
            console, JobSpec(input=str(INPUT), output=str(output), model=str(model), fields=fields)
        )
        captions = translate(
            console,
            JobSpec(
                input=str(CAPTIONS),
                output=str(captions_output),
                model=str(model),
                fields=["caption"],
            ),
        )
    finally:
        if started_here:
            ray.shutdown()
    if manifest is None or captions is None:
        return 2
    console.print(
        side_by_side("alpaca_sample.json, instruction field", INPUT, output, "instruction", 6)
    )
    console.print(
        side_by_side(
            "Multi30k captions: the model's own domain", CAPTIONS, captions_output, "caption", 6
        )
    )
    console.print(
        f"{manifest['rows']} rows, {manifest['units_translated']} fields translated, "
        f"{manifest['units_skipped_empty']} empty fields kept as they were, in {manifest['elapsed_s']:.1f} s"
    )
    console.print(f"output:   {output}")
    console.print(f"manifest: {manifest_path(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
