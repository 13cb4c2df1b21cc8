"""Translate only what changed: the translation memory against a job that translates everything.

The demo model (models/multi30k-en-de, a real Marian model) translates the alpaca workload of
`bench/run.py` (the 102-row sample scaled to `--rows` rows, its words re-spelt in each copy:
2,040 by default, as there) on each engine (HF, CTranslate2), in one local Ray cluster started
once, each engine and fleet in a state dir of its own (its own memory):

1. v1: the workload as it is (the memory is empty: its own later shards take what its first ones
   translated);
2. v2, with 5 % of the rows edited (a sentence added to a field) and 5 % appended (new rows):
   its time against v1's (target <= 0.15), and against v2 translated with `--no-memory` in the
   same process (the baseline), whose output it is compared to field by field (a mixed job equals
   a fresh one except where a segment's batch changed its decode);
3. v1 again under a new output name: its time against v1's (target <= 0.05: only planning and
   assembly), and its output against v1's, byte for byte.

Each is measured on a cold fleet (every job starts its translators and loads its engine, as a
local `mtfleet translate` does) and on a warm one (`keep_warm_s`: a first job of the same engine,
untimed, leaves its translators in the warm pool, and each job after takes them, as jobs on a
long-lived cluster or under `mtfleet serve` do). v1, v2 and v1 again are measured the same way
on each fleet.

Planning fills every unit the memory holds whole (`units_from_memory`) and leases only shards with
others; a translator recalls the remembered segments of the units it is given
(`segments_from_memory`).

Writes bench/results/translation_memory.json and .png, and prints the table.

    .venv/bin/python bench/translation_memory.py [--engines hf,ct2] [--rows 2040]
        [--fleets cold,warm]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mtfleet.cluster.job import run_job
from mtfleet.cluster.runtime import connect
from mtfleet.spec import JobSpec
from workloads import alpaca

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "multi30k-en-de"
FIELDS = ["instruction", "input", "output"]
RESULTS = ROOT / "bench" / "results" / "translation_memory.json"
CHART = ROOT / "bench" / "results" / "translation_memory.png"
WORKLOAD = "the alpaca workload of bench/run.py (the sample scaled, its words re-spelt)"
# How long a warm fleet's translators wait in the pool for the next job (seconds).
WARM_S = 600.0


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


def spec(data: Path, output: Path, engine: str, fleet: str, **settings: Any) -> JobSpec:
    return JobSpec(
        input=str(data),
        output=str(output),
        model=str(MODEL),
        engine=engine,
        fields=FIELDS,
        src_lang="en",
        tgt_lang="de",
        keep_warm_s=WARM_S if fleet == "warm" else 0.0,
        **settings,
    )


def fields_differing(left: Path, right: Path) -> tuple[int, int]:
    """Fields whose text differs between two JSON outputs, of all fields compared."""
    a, b = json.loads(left.read_text()), json.loads(right.read_text())
    pairs = [(x.get(f), y.get(f)) for x, y in zip(a, b, strict=True) for f in FIELDS]
    return sum(x != y for x, y in pairs), len(pairs)


def one_engine(engine: str, fleet: str, rows: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    v1, v2 = work / "v1.json", work / "v2.json"
    v1.write_text(json.dumps(rows))
    v2.write_text(json.dumps(version_two(rows)))
    state = work / "state"
    if fleet == "warm":
        # untimed: its translators wait in the warm pool for the jobs measured
        warm_up = work / "warm-up.json"
        warm_up.write_text(json.dumps(rows[:8]))
        timed_job(spec(warm_up, work / "out-warm-up.json", engine, fleet, memory=False), state)
    t1, m1 = timed_job(spec(v1, work / "out-v1.json", engine, fleet), state)
    t2, m2 = timed_job(spec(v2, work / "out-v2.json", engine, fleet), state)
    t2_cold, _ = timed_job(spec(v2, work / "out-v2-fresh.json", engine, fleet, memory=False), state)
    t3, m3 = timed_job(spec(v1, work / "out-v1-again.json", engine, fleet), state)
    differing, compared = fields_differing(work / "out-v2.json", work / "out-v2-fresh.json")
    return {
        "engine": engine,
        "fleet": fleet,
        "load_average_1m": round(os.getloadavg()[0], 2),
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
            label=f"{result['engine']}, {result['fleet']} fleet",
        )
    axis.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(keys))], names)
    axis.set_ylabel("job time (s)")
    axis.set_title("Translation memory: a changed dataset costs what changed")
    axis.legend()
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)


def kept_with(measured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs measured now, and those of the results file of other engines and fleets (an
    engine measured at another row count in a run of its own)."""
    done = {(run["engine"], run["fleet"]) for run in measured}
    earlier = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else []
    kept = [run for run in earlier if "fleet" in run and (run["engine"], run["fleet"]) not in done]
    return kept + measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="hf,ct2")
    parser.add_argument("--rows", type=int, default=2040, help="rows of the alpaca workload")
    parser.add_argument("--fleets", default="cold,warm")
    args = parser.parse_args()
    connect()
    measured = []
    with tempfile.TemporaryDirectory() as data:
        rows = alpaca(args.rows, Path(data)).rows
        for engine in args.engines.split(","):
            for fleet in args.fleets.split(","):
                with tempfile.TemporaryDirectory() as work:
                    measured.append(
                        {"rows": args.rows, **one_engine(engine, fleet, rows, Path(work))}
                    )
    results = kept_with(measured)
    RESULTS.write_text(json.dumps({"workload": WORKLOAD, "runs": results}, indent=1) + "\n")
    chart(results)
    print(f"\ntranslation memory, {WORKLOAD}, on the demo model")
    print(
        f"  {'engine':6s} {'fleet':5s} {'rows':>5s} {'v1 s':>7s} {'v2 s':>7s} {'v2 fresh s':>10s} "
        f"{'again s':>8s} {'v2/v1':>6s} {'v2/fresh':>8s} {'again/v1':>8s}  again == v1  "
        "v2 differs from fresh  load"
    )
    for r in results:
        print(
            f"  {r['engine']:6s} {r['fleet']:5s} {r['rows']:5d} {r['v1_s']:7.1f} {r['v2_s']:7.1f} "
            f"{r['v2_without_memory_s']:10.1f} {r['v1_again_s']:8.1f} {r['v2_vs_v1']:6.3f} "
            f"{r['v2_vs_v2_without_memory']:8.3f} {r['v1_again_vs_v1']:8.3f}  "
            f"{r['v1_again_equals_v1']!s:11s}  {r['v2_fields_differing_from_fresh']:21s}  "
            f"{r['load_average_1m']}"
        )
    print("  targets: v2/v1 <= 0.15, again/v1 <= 0.05")


if __name__ == "__main__":
    main()
