"""A small edit of a large dataset: a cold fleet's job over it, against the same job the memory
fills wholly.

The bench model of `bench/run.py` on ct2 (one translator of one thread) translates the `short`
workload once (v1, 28,991 captions), which fills the store's translation memory. Then, in turns,
`--rounds` times, over `--copies` copies of those rows (290,000 rows at 10):

- again: the copies as they are; planning fills every unit from the memory, and no translator
  starts (planning and assembly only: the baseline);
- edited: 1 % of each copy's rows edited (a sentence added, new in each round); planning fills the
  rest, and a translator starts (a cold fleet: its process, its engine) for the edited units.

The edited job's time over the baseline's is what a small edit costs. Planning tells the
coordinator of the first unit the memory lacks (`work_found`), so the translator starts while the
rest is planned, not after.

The cluster is started here (`mtfleet.cluster.runtime.connect`), not by `systems.start_cluster`,
whose switch for the mixed fleet's slow translator also turns the memory off.

Writes bench/results/memory_edit.json and .png and prints the table.

    .venv/bin/python bench/memory_edit.py [--copies 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mtfleet.cluster.job import run_job
from mtfleet.cluster.runtime import connect
from run import PROFILES, bench_settings, build_workloads
from systems import Settings, convert_for_ct2, job_spec
from workloads import Workload

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "memory_edit.json"
CHART = ROOT / "bench" / "results" / "memory_edit.png"
EDITED_EVERY = 100


def copies_of(rows: list[dict[str, Any]], copies: int, path: Path, edit: str | None) -> Path:
    """`copies` copies of `rows` as a JSON array at `path`; with `edit`, one row in each
    EDITED_EVERY of each copy has a sentence added, its text new to the memory."""
    out = [
        {**row, "text": f"{row['text']} {edit} {copy}."}
        if edit is not None and index % EDITED_EVERY == copy % EDITED_EVERY
        else row
        for copy in range(copies)
        for index, row in enumerate(rows)
    ]
    path.write_text(json.dumps(out))
    return path


def timed(workload: Workload, settings: Settings, work: Path, state: Path) -> dict[str, Any]:
    job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=work))
    spec = job_spec(workload, settings, job_dir, "ct2", cpu_translators_per_node=1, checks=False)
    clock = time.perf_counter()
    result = run_job(spec, state_dir=state)
    seconds = time.perf_counter() - clock
    if result.state != "succeeded":
        raise RuntimeError(f"the job over {workload.path} ended {result.state}: {result.error}")
    manifest = json.loads(Path(f"{spec.output}.manifest.json").read_text())
    return {
        "seconds": round(seconds, 2),
        "units_from_memory": manifest["units_from_memory"],
        "units_translated": manifest["units_translated"] - manifest["units_from_memory"],
    }


def chart(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2))
    names = ["again", "edited"]
    for offset, name in enumerate(names):
        seconds = [run["seconds"] for run in result["runs"][name]]
        axis.scatter([offset] * len(seconds), seconds, color="tab:blue")
        axis.hlines(statistics.median(seconds), offset - 0.2, offset + 0.2, color="tab:red")
    axis.set_xticks(range(len(names)), ["filled wholly (again)", "1 % edited"])
    axis.set_ylabel("job seconds")
    axis.set_ylim(bottom=0)
    axis.set_title(f"{result['rows']:,} rows on a cold ct2 fleet, the memory filled by v1")
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mtfleet-memory-edit-"))
    profile = PROFILES["full"]
    settings = bench_settings(profile, work)
    short = build_workloads(profile, work / "data", ["short"])["short"][0]
    connect()
    convert_for_ct2(settings)
    state = work / "state"
    v1 = timed(short, settings, work, state)
    print(f"v1: {len(short.rows):,} rows in {v1['seconds']} s", flush=True)
    rows = len(short.rows) * args.copies
    again = copies_of(short.rows, args.copies, work / "data" / "again.json", None)
    runs: dict[str, list[dict[str, Any]]] = {"again": [], "edited": []}
    for round_ in range(args.rounds):
        edited = copies_of(
            short.rows, args.copies, work / "data" / f"edited-{round_}.json", f"Edit {round_}"
        )
        for name, path in (("again", again), ("edited", edited)):
            workload = Workload(name, name, [], short.fields, path)
            run = timed(workload, settings, work, state)
            runs[name].append(run)
            print(f"round {round_} {name}: {run}", flush=True)
    medians = {name: statistics.median(r["seconds"] for r in runs[name]) for name in runs}
    result = {
        "rows": rows,
        "copies": args.copies,
        "edited_every": EDITED_EVERY,
        "v1": v1,
        "load_average": os.getloadavg(),
        "runs": runs,
        "median_s": medians,
        "edited_vs_again": round(medians["edited"] / medians["again"], 3),
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    chart(result)
    print(f"\n{rows:,} rows, 1 in {EDITED_EVERY} edited, a cold ct2 fleet, the memory from v1")
    print(f"  {'job':10s} {'median s':>9s} {'units translated':>17s}")
    for name in runs:
        translated = runs[name][0]["units_translated"]
        print(f"  {name:10s} {medians[name]:9.2f} {translated:17,d}")
    print(f"  edited / again: {result['edited_vs_again']}")


if __name__ == "__main__":
    main()
