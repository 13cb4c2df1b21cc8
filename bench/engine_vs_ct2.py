"""The ct2 engine through mtfleet's pipeline against CTranslate2 called by hand, in one process.

On the bench model of `bench/run.py` (int8, one thread), in turns, `--rounds` times:

- ct2 by hand: the workload's distinct segments, one `translate_batch` call per decode cap, then
  decoded (`ct2-direct` of `bench/run.py`, its segmentation untimed);
- the engine: `mtfleet.pipeline.translate_texts` over the workload's values in shards of
  `--shard` values (segmentation, deduplication, the engine's calls, decoding, reassembly), as a
  translator runs one shard after another, with no Ray and no store.

The ratio engine / by hand is what the pipeline adds over CTranslate2 (or saves: deduplication,
and whatever runs while CTranslate2 works on the other core). To compare two versions of the code,
run it on each by turns with `PYTHONPATH=<tree>/src` and a `--label` each: runs of other labels
are kept side by side in the JSON and the plot.

Writes bench/results/engine_vs_ct2.json and .png and prints the table.

    .venv/bin/python bench/engine_vs_ct2.py [--workload short] [--rows 4000] [--rounds 2] [--label now]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mtfleet
from labels import other_labels
from mtfleet.engines import load_engine
from mtfleet.pipeline import translate_texts
from run import PROFILES, bench_settings, build_workloads
from systems import _DirectCT2, convert_for_ct2

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "results" / "engine_vs_ct2.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="short", choices=("short", "alpaca"))
    parser.add_argument("--rows", type=int, default=4000, help="rows of the short workload")
    parser.add_argument("--shard", type=int, default=2000, help="values a shard holds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--label", default="now")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mtfleet-engine-vs-ct2-"))
    profile = dataclasses.replace(PROFILES["full"], short_rows=args.rows)
    settings = bench_settings(profile, work)
    workload = build_workloads(profile, work / "data", [args.workload])[args.workload][0]
    texts = workload.texts()
    direct = _DirectCT2(settings)
    segments = direct.segments(workload)
    convert_for_ct2(settings)
    engine = load_engine(
        "ct2",
        str(settings.model_dir),
        threads=settings.threads,
        device="cpu",
        compute_type="int8",
        max_batch_tokens=settings.max_batch_tokens,
        max_length_factor=settings.max_length_factor,
        max_length_offset=settings.max_length_offset,
    )

    def by_hand() -> None:
        direct.translate(segments)

    def through_the_engine() -> None:
        for start in range(0, len(texts), args.shard):
            translate_texts(texts[start : start + args.shard], engine)

    seconds: dict[str, list[float]] = {"by hand": [], "engine": []}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, run in (("by hand", by_hand), ("engine", through_the_engine)):
            started = time.perf_counter()
            run()
            seconds[name].append(round(time.perf_counter() - started, 2))
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    result = {
        "label": args.label,
        "code": str(Path(mtfleet.__file__).resolve().parents[2]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "workload": args.workload,
        "values": len(texts),
        "segments_unique": len(segments),
        "shard_values": args.shard,
        "seconds": seconds,
        "engine_vs_by_hand": round(medians["engine"] / medians["by hand"], 3),
    }
    results = [*other_labels(args.out, args.label), result]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    _plot(results, args.out.with_suffix(".png"))
    print("| label | workload | values | by hand s | engine s | engine / by hand |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for run in results:
        print(
            f"| {run['label']} | {run['workload']} | {run['values']:,} | "
            f"{statistics.median(run['seconds']['by hand']):.2f} | "
            f"{statistics.median(run['seconds']['engine']):.2f} | {run['engine_vs_by_hand']:.3f} |"
        )


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{run['label']}\n{run['workload']}" for run in results]
    figure, axes = plt.subplots(figsize=(2 + 1.4 * len(labels), 4))
    axes.bar(labels, [run["engine_vs_by_hand"] for run in results])
    axes.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.set_ylabel("engine seconds / ct2 by hand (medians)")
    axes.set_title("ct2 through mtfleet's pipeline against ct2 by hand")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
