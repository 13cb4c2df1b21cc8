"""The translation memory at scale: rows/s of a job with and without it, over two files that share
30 % of their texts.

Generated rows (an id, a `text` of two sentences) in two JSONL files; 30 % of the rows of each
take their text from a pool shared by both files, the others are unique. The reverse engine (no
model: what is measured is mtfleet's own cost, planning, leases, the store, assembly) translates
them in one local Ray cluster, all in this process:

1. without the memory (the baseline);
2. with an empty memory: the pool's texts are translated once and recalled after;
3. with the memory the second filled, the same data again under another output: planning fills
   every unit and no shard is leased.

Writes bench/results/memory_scale.json and .png and prints the table.

    .venv/bin/python bench/memory_scale.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from mtfleet.cluster.job import run_job
from mtfleet.cluster.runtime import connect
from mtfleet.spec import JobSpec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "memory_scale.json"
CHART = ROOT / "bench" / "results" / "memory_scale.png"
REPEATED = 0.3
POOL = 500


def write_files(rows: int, folder: Path) -> None:
    """Two files of rows // 2 rows each; REPEATED of them from a pool both share."""
    chance = random.Random(7)
    pool = [f"Shared line {n} of the pool. It repeats in both files." for n in range(POOL)]
    folder.mkdir()
    for part in (0, 1):
        with open(folder / f"part-{part}.jsonl", "w") as stream:
            for n in range(rows // 2):
                text = (
                    chance.choice(pool)
                    if chance.random() < REPEATED
                    else f"Row {part}-{n} is its own. It says {chance.randrange(10**9)}."
                )
                stream.write(json.dumps({"id": f"{part}-{n}", "text": text}) + "\n")


def timed(data: Path, output: Path, state: Path, **settings: Any) -> tuple[float, dict[str, Any]]:
    spec = JobSpec(
        input=str(data),
        output=str(output),
        model="reverse",
        engine="reverse",
        fields=["text"],
        **settings,
    )
    started = time.perf_counter()
    result = run_job(spec, state_dir=state)
    seconds = time.perf_counter() - started
    assert result.state == "succeeded", result.error
    return seconds, result.manifest or {}


def chart(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2))
    names = ["without memory", "memory, empty", "memory, filled"]
    axis.bar(names, [result[k]["rows_per_s"] for k in ("without", "cold", "filled")])
    axis.set_ylabel("rows/s")
    axis.set_title(f"{result['rows']:,} rows, {REPEATED:.0%} repeated across two files")
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    connect()
    result: dict[str, Any] = {"rows": args.rows, "repeated": REPEATED}
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work) / "data"
        write_files(args.rows, folder)
        state = Path(work) / "state"
        runs = {
            "without": timed(folder, Path(work) / "out-without", state, memory=False),
            "cold": timed(folder, Path(work) / "out-cold", state),
            "filled": timed(folder, Path(work) / "out-filled", state),
        }
    for name, (seconds, manifest) in runs.items():
        result[name] = {
            "seconds": round(seconds, 2),
            "rows_per_s": round(args.rows / seconds, 1),
            "units_from_memory": manifest.get("units_from_memory", 0),
            "segments_from_memory": manifest.get("segments_from_memory", 0),
            "shards": manifest.get("shards"),
        }
    result["cold_vs_without"] = round(runs["cold"][0] / runs["without"][0], 3)
    result["filled_vs_without"] = round(runs["filled"][0] / runs["without"][0], 3)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    chart(result)
    print(f"\n{args.rows:,} rows in two files, {REPEATED:.0%} repeated, the reverse engine")
    print(f"  {'run':16s} {'s':>8s} {'rows/s':>9s} {'units mem':>9s} {'segs mem':>9s}")
    for name in ("without", "cold", "filled"):
        r = result[name]
        print(
            f"  {name:16s} {r['seconds']:8.1f} {r['rows_per_s']:9.1f} "
            f"{r['units_from_memory']:9d} {r['segments_from_memory']:9d}"
        )
    print(
        f"  time against without: cold {result['cold_vs_without']}, "
        f"filled {result['filled_vs_without']}"
    )


if __name__ == "__main__":
    main()
