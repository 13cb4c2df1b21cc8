"""Determinism kept honest: how often a mixed job's output differs from a fresh job's.

A job whose every unit comes from the translation memory equals the job that filled it byte for
byte (tests/test_memory.py). A mixed job (some segments from the memory, the others translated)
gives the engine other batches than a fresh job would: only the new segments, sorted and padded
among themselves. An engine whose decode of a segment depends on its batch (padding changes the
floating point of attention) then differs from the fresh job in those segments.

On the demo model (models/multi30k-en-de, a real Marian model), for each engine and beam: the
alpaca sample (v1) is translated through a memory, then its v2 (5 % of rows edited, 5 % appended,
as in bench/translation_memory.py) through the same memory (mixed), and v2 alone without one
(fresh); the units of v2 whose text differs between mixed and fresh are counted, and the segments
translated in both whose translation differs. Engine calls in this process, no cluster: the
batches are the pipeline's own (every distinct segment of a call in one `translate`).

Writes bench/results/memory_determinism.json and .png and prints the table.

    .venv/bin/python bench/memory_determinism.py [--engines hf,ct2] [--beams 1,4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtfleet.engines import load_engine
from mtfleet.pipeline import translate_texts
from translation_memory import FIELDS, MODEL, SAMPLE, version_two

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "memory_determinism.json"
CHART = ROOT / "bench" / "results" / "memory_determinism.png"


class RecordingMemory:
    """A translation memory in a dict, which records the segments the engine was given."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, list[str]]] = {}
        self.translated: dict[str, str] = {}

    def recall(self, segments: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
        return {s: self.held[s] for s in segments if s in self.held}

    def remember(self, entries: Mapping[str, tuple[str, list[str]]]) -> None:
        self.held.update(entries)
        self.translated = {segment: text for segment, (text, _) in entries.items()}


def texts_of(rows: list[dict[str, Any]]) -> list[str]:
    return [row[field] for row in rows for field in FIELDS if row.get(field)]


def one_run(engine_name: str, beam: int, device: str) -> dict[str, Any]:
    rows = json.loads(SAMPLE.read_text())
    v1, v2 = texts_of(rows), texts_of(version_two(rows))
    engine = load_engine(
        engine_name, str(MODEL), src_lang="en", tgt_lang="de", beam=beam, device=device
    )
    started = time.perf_counter()
    memory = RecordingMemory()
    translate_texts(v1, engine, memory=memory)
    mixed_memory = RecordingMemory()
    mixed_memory.held = dict(memory.held)
    mixed = translate_texts(v2, engine, memory=mixed_memory).translations
    fresh_memory = RecordingMemory()
    fresh = translate_texts(v2, engine, memory=fresh_memory).translations
    seconds = time.perf_counter() - started
    # segments the mixed job gave the engine: each was in a batch of new segments only
    new = mixed_memory.translated
    new_differing = sum(fresh_memory.translated[s] != t for s, t in new.items())
    # segments the mixed job took from the memory, made in v1's batches, against v2's fresh ones
    recalled = [s for s in fresh_memory.translated if s not in new]
    recalled_differing = sum(memory.held[s][0] != fresh_memory.translated[s] for s in recalled)
    units_differing = sum(a != b for a, b in zip(mixed, fresh, strict=True))
    return {
        "engine": engine_name,
        "beam": beam,
        "device": device,
        "units": len(v2),
        "units_differing": units_differing,
        "segments_translated_in_mixed": len(new),
        "of_those_differing_from_fresh": new_differing,
        "segments_from_memory_in_mixed": len(recalled),
        "of_those_differing_from_fresh_batches": recalled_differing,
        "units_differing_share": round(units_differing / max(1, len(v2)), 4),
        "seconds": round(seconds, 1),
    }


def chart(results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2))
    labels = [f"{r['engine']} beam {r['beam']}" for r in results]
    axis.bar(labels, [100 * r["units_differing_share"] for r in results])
    axis.set_ylabel("v2 units differing (%)")
    axis.set_title("A mixed job against a fresh one, demo model")
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="hf,ct2")
    parser.add_argument("--beams", default="1,4")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    results = [
        one_run(engine, int(beam), args.device)
        for engine in args.engines.split(",")
        for beam in args.beams.split(",")
    ]
    RESULTS.write_text(json.dumps({"workload": SAMPLE.name, "runs": results}, indent=1) + "\n")
    chart(results)
    print("\na mixed job (v2 through v1's memory) against a fresh v2, the alpaca sample")
    print(
        f"  {'engine':6s} {'beam':>4s} {'device':6s} {'units':>6s} {'differ':>6s} "
        f"{'new segs':>8s} {'differ':>6s} {'recalled':>8s} {'differ':>6s}"
    )
    for r in results:
        print(
            f"  {r['engine']:6s} {r['beam']:4d} {r['device']:6s} {r['units']:6d} "
            f"{r['units_differing']:6d} {r['segments_translated_in_mixed']:8d} "
            f"{r['of_those_differing_from_fresh']:6d} {r['segments_from_memory_in_mixed']:8d} "
            f"{r['of_those_differing_from_fresh_batches']:6d}"
        )


if __name__ == "__main__":
    main()
