"""Character stutter in the demo model's output: how much of it the loop check catches.

`bench/data/stutter_labels.jsonl` holds the demo model's greedy translations of the first 100
non-empty fields of examples/alpaca_sample.json (pipeline, no checks), each labelled by hand once
(2026-12-05): `stutter` is true when a word of the output repeats a letter or a few letters over
and over ("Ammmmmmmer", "Achtchtchter", "Frrral"), not for repeated words. Each check is scored
against the labels: the stutter check, the word check it joined (the baseline, run in the same
process), and `loop` as a job runs it (both).

    .venv/bin/python bench/stutter.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mtfleet.health import repetition_loop, stutter, word_loop

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "bench" / "data" / "stutter_labels.jsonl"
OUTPUT = ROOT / "bench" / "results" / "stutter.json"


def score(units: list[dict], check: Callable[[str, str], bool]) -> dict[str, float | int]:
    flagged = [check(unit["source"], unit["translation"]) for unit in units]
    labelled = [unit["stutter"] for unit in units]
    hits = sum(f and label for f, label in zip(flagged, labelled, strict=True))
    return {
        "flagged": sum(flagged),
        "recall": round(100 * hits / max(sum(labelled), 1), 1),
        "precision": round(100 * hits / max(sum(flagged), 1), 1),
    }


def main() -> None:
    units = [json.loads(line) for line in LABELS.read_text(encoding="utf-8").splitlines()]
    results = {
        "units": len(units),
        "labelled_stutter": sum(unit["stutter"] for unit in units),
        "checks": {
            "word loop (before)": score(units, word_loop),
            "stutter": score(units, stutter),
            "loop (both, as jobs run it)": score(units, repetition_loop),
        },
    }
    OUTPUT.write_text(json.dumps(results, indent=1) + "\n")
    print(
        f"\ncharacter stutter, {results['units']} hand-labelled units of the demo model's alpaca "
        f"output ({results['labelled_stutter']} stutter)"
    )
    print(f"  {'check':28s} {'flagged':>8s} {'recall':>8s} {'precision':>10s}")
    for name, found in results["checks"].items():
        print(
            f"  {name:28s} {found['flagged']:8d} {found['recall']:7.1f}% {found['precision']:9.1f}%"
        )


if __name__ == "__main__":
    main()
