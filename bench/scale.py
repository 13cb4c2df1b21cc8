"""Job machinery at scale (issue 10): time and peak memory per process kind against rows.

Generates alpaca-shaped JSONL (and one Parquet file) of growing size, runs each through the
`reverse` engine with two translators on one local Ray cluster, and samples the resident memory of
every process of the job by kind (driver, coordinator, translators, assembly task, Ray's own).
Writes bench/results/scale.json and scale.png; the inputs are deleted after each run.

    .venv/bin/python bench/scale.py [--rows 10000,100000,1000000] [--parquet-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mtfleet.cluster.job import run_job
from mtfleet.cluster.runtime import connect
from mtfleet.spec import JobSpec

BENCH = Path(__file__).resolve().parent
ALPACA = BENCH.parent / "examples" / "alpaca_sample.json"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SAMPLE_S = 0.2
# Ray names a worker process after the actor or task it runs: ray::JobCoordinator.start, ...
KINDS = {
    "ray::JobCoordinator": "coordinator",
    "ray::Translator": "translator",
    "ray::_assemble_task": "assembly task",
    "ray::_plan_task": "planning task",
    "raylet": "ray (raylet, gcs, ...)",
    "gcs_server": "ray (raylet, gcs, ...)",
    "dashboard": "ray (raylet, gcs, ...)",
    "log_monitor": "ray (raylet, gcs, ...)",
    "ray::IDLE": "ray (idle workers)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--parquet-rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "scale.json")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",") if n]
    connect(None)
    runs = [measure(rows, "jsonl") for rows in sizes]
    if args.parquet_rows:
        runs.append(measure(args.parquet_rows, "parquet"))
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "engine": "reverse",
        "translators": 2,
        "runs": runs,
        "targets": targets(runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(runs)
    for line in report["targets"]:
        print(line)
    chart(runs, args.out.with_suffix(".png"))
    return 0


def measure(rows: int, format: str) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="mtfleet-scale-"))
    try:
        input = folder / f"alpaca.{format}"
        # in a process of its own, so the generator's memory is not counted as the driver's
        generator = multiprocessing.get_context("spawn").Process(
            target=generate, args=(input, rows, format)
        )
        generator.start()
        generator.join()
        spec = JobSpec(
            input=str(input),
            output=str(folder / f"out.{format}"),
            model="reverse",
            engine="reverse",
            fields=["instruction", "input", "output"],
            cpu_translators_per_node=2,
        )
        sampler = ProcessPeaks()
        started = time.perf_counter()
        with sampler:
            result = run_job(spec, state_dir=folder / "state")
        wall = time.perf_counter() - started
        assert result.state == "succeeded", result.error
        run = {
            "rows": rows,
            "format": format,
            "input_mb": round(input.stat().st_size / 2**20, 1),
            "wall_s": round(wall, 2),
            "rows_per_s": round(rows / wall),
            "ms_per_row": round(1000 * wall / rows, 4),
            "peak_rss_mb": {kind: round(mb, 1) for kind, mb in sorted(sampler.peaks.items())},
            "store_mb": round(size_mb(folder / "state" / "jobs.db"), 2),
            "work_dir_mb": round(size_mb(folder / "state" / "jobs"), 1),
        }
        print(json.dumps(run), flush=True)
        return run
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def generate(path: Path, rows: int, format: str) -> Path:
    """`rows` alpaca rows (the sample's, cycled, each numbered so no two are equal), streamed."""
    sample = json.loads(ALPACA.read_text())
    if format == "parquet":
        writer = None
        for start in range(0, rows, 100_000):
            batch = [numbered(sample, n) for n in range(start, min(rows, start + 100_000))]
            table = pa.Table.from_pylist(batch)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
        return path
    with open(path, "w", encoding="utf-8") as stream:
        for n in range(rows):
            stream.write(json.dumps(numbered(sample, n)) + "\n")
    return path


def numbered(sample: list[dict[str, str]], n: int) -> dict[str, str]:
    row = sample[n % len(sample)]
    return {key: f"{value} ({n})" if value else value for key, value in row.items()}


class ProcessPeaks:
    """Peak resident memory per process kind while the block runs, sampled from /proc."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = defaultdict(float)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> ProcessPeaks:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            per_process: dict[str, float] = defaultdict(float)
            for pid, command, mb in processes():
                kind = "driver" if pid == os.getpid() else kind_of(command)
                if kind is None:
                    continue
                # translators are two processes: the peak of one is what a node must hold each
                per_process[kind] = max(per_process[kind], mb)
            for kind, mb in per_process.items():
                self.peaks[kind] = max(self.peaks[kind], mb)


def processes() -> list[tuple[int, str, float]]:
    """This process and its descendants (the local Ray cluster it started): pid, command, MB.

    Only descendants: processes of another cluster on the machine (a test run) are not the job's.
    """
    children: dict[int, list[int]] = {}
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            pages = int((entry / "statm").read_text().split()[1])
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
        found[int(entry.name)] = (command, pages * PAGE_BYTES / 2**20)
    mine, stack = [], [os.getpid()]
    while stack:
        pid = stack.pop()
        if pid in found:
            mine.append((pid, *found[pid]))
        stack.extend(children.get(pid, []))
    return mine


def kind_of(command: str) -> str | None:
    for marker, kind in KINDS.items():
        if marker in command:
            return kind
    return None


def size_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def targets(runs: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each met or missed, from the JSONL runs."""
    by_rows = {run["rows"]: run for run in runs if run["format"] == "jsonl"}
    lines = []
    small, million = by_rows.get(10_000), by_rows.get(1_000_000)
    if small and million:
        for kind, mb in million["peak_rss_mb"].items():
            if kind.startswith("ray ") or kind not in small["peak_rss_mb"]:
                continue
            ratio = mb / small["peak_rss_mb"][kind]
            verdict = "met" if ratio <= 1.3 else "missed"
            lines.append(f"peak RSS of {kind} at 1M / 10k rows: {ratio:.2f} (<= 1.3: {verdict})")
    base = by_rows.get(100_000)
    for rows in (1_000_000, 10_000_000):
        if base and rows in by_rows:
            ratio = by_rows[rows]["ms_per_row"] / base["ms_per_row"]
            verdict = "met" if ratio <= 1.2 else "missed"
            lines.append(f"time per row at {rows:,} / 100k: {ratio:.2f} (<= 1.2: {verdict})")
    if million:
        speedup = 0.29 / million["ms_per_row"]
        verdict = "met" if speedup >= 2 else "missed"
        lines.append(
            f"job machinery at 1M rows vs 0.29 ms/row before: {speedup:.2f}x (>= 2: {verdict})"
        )
    return lines


def print_table(runs: list[dict[str, Any]]) -> None:
    kinds = sorted({kind for run in runs for kind in run["peak_rss_mb"]})
    header = [
        "rows",
        "format",
        "input MB",
        "wall s",
        "rows/s",
        "ms/row",
        *kinds,
        "store MB",
        "work MB",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for run in runs:
        cells = [f"{run['rows']:,}", run["format"], run["input_mb"], run["wall_s"], run["rows_per_s"],
                 run["ms_per_row"], *(run["peak_rss_mb"].get(kind, "") for kind in kinds),
                 run["store_mb"], run["work_dir_mb"]]  # fmt: skip
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


def chart(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jsonl = [run for run in runs if run["format"] == "jsonl"]
    rows = [run["rows"] for run in jsonl]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.loglog(rows, [run["wall_s"] for run in jsonl], marker="o")
    left.set(xlabel="rows", ylabel="wall seconds", title="Time (reverse engine, 2 translators)")
    kinds = sorted({kind for run in jsonl for kind in run["peak_rss_mb"]})
    for kind in kinds:
        right.loglog(rows, [run["peak_rss_mb"].get(kind, float("nan")) for run in jsonl],
                     marker="o", label=kind)  # fmt: skip
    right.set(xlabel="rows", ylabel="peak RSS, MB (one process)", title="Memory per process kind")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
