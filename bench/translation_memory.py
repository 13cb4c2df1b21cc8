"""Translate only what changed: the translation memory against a job that translates everything.

The demo model (models/multi30k-en-de, a real Marian model) translates the alpaca sample (102 rows,
instruction/input/output) on each engine (HF, CTranslate2), in one local Ray cluster started once,
each engine in a state dir of its own (its own memory):

1. v1: the sample as it is (the memory is empty: its own later shards take what its first ones
   translated);
2. v2, with 5 % of the rows edited (a sentence added to a field) and 5 % appended (new rows):
   its time against v1's (target <= 0.15), and against v2 translated with `--no-memory` in the
   same process (the baseline), whose output it is compared to field by field (a mixed job equals
   a fresh one except where a segment's batch changed its decode);
3. v1 again under a new output name: its time against v1's (target <= 0.05: only planning and
   assembly), and its output against v1's, byte for byte.

Planning fills every unit the memory holds whole (`units_from_memory`) and leases only shards with
others; a translator recalls the remembered segments of the units it is given
(`segments_from_memory`).

Writes bench/results/translation_memory.json and .png, and prints the table.

    .venv/bin/python bench/translation_memory.py [--engines hf,ct2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from mtfleet.cluster.job import run_job
from mtfleet.cluster.runtime import connect
from mtfleet.spec import JobSpec

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "alpaca_sample.json"
MODEL = ROOT / "models" / "multi30k-en-de"
FIELDS = ["instruction", "input", "output"]
RESULTS = ROOT / "bench" / "results" / "translation_memory.json"
CHART = ROOT / "bench" / "results" / "translation_memory.png"


def version_two(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """5 % of the rows edited (a sentence added to their instruction), 5 % appended (rows of
    new sentences)."""
    changed = [dict(row) for row in rows]
    step = max(1, len(rows) // max(1, round(len(rows) * 0.05)))
    for row in changed[::step][: round(len(rows) * 0.05)]:
        row["instruction"] = f"{row['instruction']} Keep the answer short."
    appended = [
        {
            "instruction": f"Describe picture number {n} in one sentence.",
            "input": f"A dog runs across a green field with {n} children.",
            "output": f"The dog and the {n} children play in the sun.",
        }
        for n in range(round(len(rows) * 0.05))
    ]
    return changed + appended


def timed_job(spec: JobSpec, state_dir: Path) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = run_job(spec, state_dir=state_dir)
    seconds = time.perf_counter() - started
    assert result.state == "succeeded", result.error
    return seconds, result.manifest or {}


def spec(data: Path, output: Path, engine: str, **settings: Any) -> JobSpec:
    return JobSpec(
        input=str(data),
        output=str(output),
        model=str(MODEL),
        engine=engine,
        fields=FIELDS,
        src_lang="en",
        tgt_lang="de",
        **settings,
    )


def fields_differing(left: Path, right: Path) -> tuple[int, int]:
    """Fields whose text differs between two JSON outputs, of all fields compared."""
    a, b = json.loads(left.read_text()), json.loads(right.read_text())
    pairs = [(x.get(f), y.get(f)) for x, y in zip(a, b, strict=True) for f in FIELDS]
    return sum(x != y for x, y in pairs), len(pairs)


def one_engine(engine: str, work: Path) -> dict[str, Any]:
    rows = json.loads(SAMPLE.read_text())
    v1, v2 = work / "v1.json", work / "v2.json"
    v1.write_text(json.dumps(rows))
    v2.write_text(json.dumps(version_two(rows)))
    state = work / "state"
    t1, m1 = timed_job(spec(v1, work / "out-v1.json", engine), state)
    t2, m2 = timed_job(spec(v2, work / "out-v2.json", engine), state)
    t2_cold, _ = timed_job(spec(v2, work / "out-v2-cold.json", engine, memory=False), state)
    t3, m3 = timed_job(spec(v1, work / "out-v1-again.json", engine), state)
    differing, compared = fields_differing(work / "out-v2.json", work / "out-v2-cold.json")
    return {
        "engine": engine,
        "v1_s": round(t1, 2),
        "v2_s": round(t2, 2),
        "v2_without_memory_s": round(t2_cold, 2),
        "v1_again_s": round(t3, 2),
        "v2_vs_v1": round(t2 / t1, 3),
        "v2_vs_v2_without_memory": round(t2 / t2_cold, 3),
        "v1_again_vs_v1": round(t3 / t1, 3),
        "segments_from_memory": {
            "v1": m1.get("segments_from_memory"),
            "v2": m2.get("segments_from_memory"),
            "v1_again": m3.get("segments_from_memory"),
        },
        "units_from_memory": {
            "v1": m1.get("units_from_memory"),
            "v2": m2.get("units_from_memory"),
            "v1_again": m3.get("units_from_memory"),
        },
        "units_translated": {"v1": m1.get("units_translated"), "v2": m2.get("units_translated")},
        "segments_unique": {"v1": m1.get("segments_unique"), "v2": m2.get("segments_unique")},
        "v1_again_equals_v1": (work / "out-v1-again.json").read_bytes()
        == (work / "out-v1.json").read_bytes(),
        "v2_fields_differing_from_fresh": f"{differing} of {compared}",
    }


def chart(results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    names = ["v1", "v2", "v2 without memory", "v1 again"]
    keys = ["v1_s", "v2_s", "v2_without_memory_s", "v1_again_s"]
    width = 0.8 / len(results)
    for n, result in enumerate(results):
        axis.bar(
            [i + n * width for i in range(len(keys))],
            [result[k] for k in keys],
            width,
            label=result["engine"],
        )
    axis.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(keys))], names)
    axis.set_ylabel("job time (s)")
    axis.set_title("Translation memory: a changed dataset costs what changed")
    axis.legend()
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="hf,ct2")
    args = parser.parse_args()
    connect()
    results = []
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory() as work:
            results.append(one_engine(engine, Path(work)))
    RESULTS.write_text(json.dumps({"workload": str(SAMPLE.name), "runs": results}, indent=1) + "\n")
    chart(results)
    print("\ntranslation memory, the alpaca sample (102 rows) on the demo model")
    print(
        f"  {'engine':6s} {'v1 s':>7s} {'v2 s':>7s} {'v2 cold s':>9s} {'again s':>8s} "
        f"{'v2/v1':>6s} {'v2/cold':>7s} {'again/v1':>8s}  again == v1  v2 differs from fresh"
    )
    for r in results:
        print(
            f"  {r['engine']:6s} {r['v1_s']:7.1f} {r['v2_s']:7.1f} {r['v2_without_memory_s']:9.1f} "
            f"{r['v1_again_s']:8.1f} {r['v2_vs_v1']:6.3f} {r['v2_vs_v2_without_memory']:7.3f} "
            f"{r['v1_again_vs_v1']:8.3f}  {r['v1_again_equals_v1']!s:11s}  "
            f"{r['v2_fields_differing_from_fresh']}"
        )
    print("  targets: v2/v1 <= 0.15, again/v1 <= 0.05")


if __name__ == "__main__":
    main()
