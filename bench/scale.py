"""Job machinery at scale (issue 10): time and peak memory per process kind against rows.

Generates alpaca-shaped JSONL (and one Parquet file) of growing size, runs each through the
`reverse` engine with two translators on one local Ray cluster, and samples the resident memory of
every process of the job by kind (driver, coordinator, translators, assembly task, Ray's own).
Then (issue 26) times the machinery of such a job stage by stage in one process, without Ray:
planning, unit reads, segmentation, translation on the reverse engine (with reassembly), part
writes, the store and assembly. Writes bench/results/scale.json and scale.png; the inputs are
deleted after each run. Before and after a change, in one table: run once with `--label before`,
then with `--label after --keep`.

    .venv/bin/python bench/scale.py [--rows 10000,100000,1000000] [--parquet-rows 1000000]
        [--breakdown-rows 100000] [--no-memory] [--clock wall|cpu] [--label NAME --keep]
        [--profile FILE]
        [--segmenter-baseline REVISION [--segmenter-rows 20000]]

`--segmenter-baseline` times segmentation against an earlier revision's segmenter in turns in this
process (a ratio the machine's load weighs on alike) and checks that their pieces are the same.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import mtfleet.pipeline
from mtfleet.cluster.assemble import assemble
from mtfleet.cluster.job import run_job
from mtfleet.cluster.parts import part_path, write_part
from mtfleet.cluster.plan import UnitReader, plan_job
from mtfleet.cluster.runtime import connect
from mtfleet.cluster.translator import RelayedMemory, part_lines
from mtfleet.engines import load_engine
from mtfleet.health import job_checks
from mtfleet.pipeline import translate_texts
from mtfleet.spec import JobSpec, memory_settings, stored_spec
from mtfleet.store import JobState, JobStore
from mtfleet.store.memory import TranslationMemory, memory_signature
from phases import PHASES, job_phases

BENCH = Path(__file__).resolve().parent
ALPACA = BENCH.parent / "examples" / "alpaca_sample.json"
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SAMPLE_S = 0.2
# What the in-process breakdown times with: wall seconds, or this process's CPU seconds, which
# other work on a shared machine weighs on less (but which leave out waits: fsync, the disk).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
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
    parser.add_argument(
        "--breakdown-rows",
        default="100000",
        help="row counts whose machinery is also timed stage by stage in this process (no Ray)",
    )
    parser.add_argument(
        "--no-memory",
        dest="memory",
        action="store_false",
        help="the jobs and the in-process breakdown without the translation memory (on by default,"
        " as a user's job)",
    )
    parser.add_argument(
        "--label",
        default="this tree",
        help="names the code measured (before, after) in the results' `code` field",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the runs of other labels already in --out: before and after in one table",
    )
    parser.add_argument(
        "--profile", type=Path, help="cProfile stats of the first breakdown written here"
    )
    parser.add_argument(
        "--segmenter-baseline",
        metavar="REVISION",
        help="also time segmentation against data/segment.py of this git revision, side by side "
        "in this process, on the values of --segmenter-rows rows",
    )
    parser.add_argument("--segmenter-rows", type=int, default=20_000)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="what the breakdown and the segmenter comparison time with: wall seconds, or this "
        "process's CPU seconds (steadier on a shared machine, without the waits on the disk)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "scale.json")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.rows.split(",") if n]
    breakdown_sizes = [int(n) for n in args.breakdown_rows.split(",") if n]
    stage_runs = [
        breakdown(rows, args.profile if index == 0 else None, args.memory, args.clock)
        for index, rows in enumerate(breakdown_sizes)
    ]
    segmenters = (
        compare_segmenters(args.segmenter_baseline, args.segmenter_rows, CLOCKS[args.clock])
        if args.segmenter_baseline
        else None
    )
    if sizes or args.parquet_rows:
        connect(None)
    runs = [measure(rows, "jsonl", args.memory) for rows in sizes]
    if args.parquet_rows:
        runs.append(measure(args.parquet_rows, "parquet", args.memory))
    for run in [*runs, *stage_runs]:
        run["code"] = args.label
    if args.keep and args.out.exists():
        kept = json.loads(args.out.read_text())
        runs = _kept(kept["runs"], runs, ("code", "rows", "format", "memory")) + runs
        stage_runs = (
            _kept(kept.get("breakdown", []), stage_runs, ("code", "rows", "memory", "clock"))
            + stage_runs
        )
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
        "engine": "reverse",
        "translators": 2,
        "runs": runs,
        "breakdown": stage_runs,
        "segmenters": segmenters,
        "targets": targets([run for run in runs if run["code"] == args.label]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(runs)
    print_breakdown(stage_runs)
    if segmenters:
        print(
            f"\nsegmentation of {segmenters['texts']:,} values, best of {segmenters['rounds']}: "
            f"{segmenters['baseline']} {segmenters['baseline_s']} s, this tree "
            f"{segmenters['this_s']} s ({segmenters['speedup']}x faster), same pieces: "
            f"{segmenters['same_pieces']}"
        )
    for line in report["targets"]:
        print(line)
    chart(runs, stage_runs, args.out.with_suffix(".png"))
    return 0


def compare_segmenters(
    revision: str, rows: int, clock: Callable[[], float], rounds: int = 3
) -> dict[str, Any]:
    """Segmentation by data/segment.py of `revision` and by this tree's, taken in turns in this
    process on the values of `rows` alpaca rows (as a job's reverse engine would segment them),
    so that the machine's load weighs on both alike: best seconds of each and their ratio."""
    import importlib
    import importlib.util

    # by its module's name: mtfleet.data.segment is also the name of a function
    segment = importlib.import_module("mtfleet.data.segment")

    source = subprocess.run(
        ["git", "show", f"{revision}:src/mtfleet/data/segment.py"],
        cwd=BENCH.parent,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("segment_baseline", loader=None)
    assert spec is not None
    baseline = importlib.util.module_from_spec(spec)
    # a dataclass looks its module up by name while it is made
    sys.modules[spec.name] = baseline
    exec(compile(source, f"{revision}:segment.py", "exec"), baseline.__dict__)
    sample = json.loads(ALPACA.read_text())
    texts = [value for n in range(rows) for value in numbered(sample, n).values() if value]
    engine = load_engine("reverse", "reverse")
    best = {"baseline": float("inf"), "this": float("inf")}
    found = {}
    for _ in range(rounds):
        for name, module in (("baseline", baseline), ("this", segment)):
            started = clock()
            found[name] = module.segment_texts(texts, engine.max_input_tokens, engine.count_tokens)
            best[name] = min(best[name], clock() - started)
    same = _fields(found["this"]) == _fields(found["baseline"])
    return {
        "baseline": revision,
        "texts": len(texts),
        "rounds": rounds,
        "baseline_s": round(best["baseline"], 3),
        "this_s": round(best["this"], 3),
        "speedup": round(best["baseline"] / best["this"], 2),
        "same_pieces": same,
    }


def _fields(pieces_per_text: list[list[Any]]) -> list[list[tuple[Any, ...]]]:
    """Pieces as plain tuples: the two segmenters' classes are not each other's."""
    return [
        [(p.text, p.translate, p.output, [astuple(h) for h in p.holes], p.source) for p in pieces]
        for pieces in pieces_per_text
    ]


def _kept(
    earlier: list[dict[str, Any]], new: list[dict[str, Any]], keys: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The earlier runs that no new run measures again (the same values of `keys`)."""
    measured = {tuple(run.get(key) for key in keys) for run in new}
    return [run for run in earlier if tuple(run.get(key) for key in keys) not in measured]


def measure(rows: int, format: str, memory: bool = True) -> dict[str, Any]:
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
            keep_work=True,  # its logs: the phases' times
            memory=memory,
        )
        sampler = ProcessPeaks()
        started, clock = time.time(), time.perf_counter()
        with sampler:
            result = run_job(spec, state_dir=folder / "state")
        wall, returned = time.perf_counter() - clock, time.time()
        assert result.state == "succeeded", result.error
        run = {
            "rows": rows,
            "format": format,
            "memory": memory,
            "input_mb": round(input.stat().st_size / 2**20, 1),
            "wall_s": round(wall, 2),
            "rows_per_s": round(rows / wall),
            "ms_per_row": round(1000 * wall / rows, 4),
            "peak_rss_mb": {kind: round(mb, 1) for kind, mb in sorted(sampler.peaks.items())},
            "store_mb": round(size_mb(folder / "state" / "jobs.db"), 2),
            "work_dir_mb": round(size_mb(folder / "state" / "jobs"), 1),
            **job_phases(folder / "state", result.job_id, started, returned),
        }
        print(json.dumps(run), flush=True)
        return run
    finally:
        shutil.rmtree(folder, ignore_errors=True)


STAGES = (
    "planning",
    "unit reads",
    "segmentation",
    "translate",
    "translation memory",
    "part writes",
    "store",
    "assembly",
)


def breakdown(
    rows: int, profile: Path | None = None, memory: bool = True, clock_name: str = "wall"
) -> dict[str, Any]:
    """The job's machinery in this one process, stage by stage: what a job on the `reverse`
    engine does with `rows` alpaca rows (planning, then each shard leased, its units read,
    segmented, translated and reassembled through the translation memory unless not `memory`,
    its part written and completed in the store, then assembly), without Ray. Seconds per stage
    and ms/row by the clock `clock_name` (CLOCKS); with `profile`, cProfile's stats there.
    """
    clock = CLOCKS[clock_name]
    folder = Path(tempfile.mkdtemp(prefix="mtfleet-breakdown-"))
    try:
        input = generate(folder / "alpaca.jsonl", rows, "jsonl")
        spec = JobSpec(
            input=str(input),
            output=str(folder / "out.jsonl"),
            model="reverse",
            engine="reverse",
            fields=["instruction", "input", "output"],
            memory=memory,
        )
        seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        segment_texts = mtfleet.pipeline.segment_texts

        def timed_segment_texts(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return segment_texts(*args, **kwargs)
            finally:
                seconds["segmentation"] += clock() - started

        profiler = None
        if profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        mtfleet.pipeline.segment_texts = timed_segment_texts  # type: ignore[assignment]
        try:
            stages(spec, folder, seconds, clock)
        finally:
            mtfleet.pipeline.segment_texts = segment_texts  # type: ignore[assignment]
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
        seconds["translate"] -= seconds["segmentation"]
        total = sum(seconds.values())
        run = {
            "rows": rows,
            "memory": memory,
            "clock": clock_name,
            "total_s": round(total, 3),
            "ms_per_row": round(1000 * total / rows, 4),
            "ms_per_row_by_stage": {
                stage: round(1000 * spent / rows, 4) for stage, spent in seconds.items()
            },
        }
        print(json.dumps(run), flush=True)
        return run
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def stages(
    spec: JobSpec, folder: Path, seconds: dict[str, float], clock: Callable[[], float]
) -> None:
    """Runs a job's stages in this process, adding each one's seconds to `seconds`."""
    work_dir = folder / "work"
    last = clock()

    def lap(stage: str) -> None:
        nonlocal last
        now = clock()
        seconds[stage] += now - last
        last = now

    shards = plan_job(spec, work_dir)
    lap("planning")
    store = JobStore(f"sqlite:///{folder / 'jobs.db'}")
    store.jobs.create("scale", stored_spec(spec, "scale"), shards)
    store.jobs.set_state("scale", JobState.RUNNING)
    engine = load_engine("reverse", "reverse", max_batch_tokens=spec.max_batch_tokens)
    protection, checks = job_checks(spec, engine)
    units = UnitReader(work_dir)
    translation_memory = TranslationMemory(store)
    key = memory_signature(engine.describe(), memory_settings(spec))
    lap("store")
    while (shard := store.leases.take("scale", "bench", spec.lease_ttl_s)) is not None:
        lap("store")
        shard_units = units.read(shard.row_start, shard.row_end)
        lap("unit reads")
        # as a translator's: recalled through the coordinator (here the store's memory itself,
        # whose recall the coordinator's is), kept on completion
        relayed = RelayedMemory(translation_memory, key)  # type: ignore[arg-type]
        memory = TimedMemory(relayed, seconds, clock)
        outcome = translate_texts(
            [unit.text for unit in shard_units],
            engine,
            protection=protection,
            checks=checks,
            memory=memory if spec.memory else None,
        )
        lap("translate")
        path = part_path(work_dir, shard.row_start, shard.row_end, shard.lease_id or "")
        write_part(path, part_lines(shard_units, {None: outcome}))
        lap("part writes")
        stats = {"rows": shard.row_end - shard.row_start, "segments": outcome.segments}
        store.leases.complete("scale", shard.index, shard.lease_id or "", path, stats)
        lap("store")
        if memory.relayed.kept:
            translation_memory.remember(key, memory.relayed.kept)
        lap("translation memory")
    assemble(store, "scale", work_dir)
    lap("assembly")
    store.close()


class TimedMemory:
    """A translator's translation memory whose recalls and remembers count as its stage's time
    (and are taken off the translate stage, which they are inside)."""

    def __init__(
        self, relayed: RelayedMemory, seconds: dict[str, float], clock: Callable[[], float]
    ) -> None:
        self.relayed, self.seconds, self.clock = relayed, seconds, clock

    def recall(self, segments: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
        started = self.clock()
        try:
            return self.relayed.recall(segments)
        finally:
            self._spent(self.clock() - started)

    def remember(self, entries: Mapping[str, tuple[str, list[str]]]) -> None:
        started = self.clock()
        try:
            self.relayed.remember(entries)
        finally:
            self._spent(self.clock() - started)

    def _spent(self, spent: float) -> None:
        self.seconds["translation memory"] += spent
        self.seconds["translate"] -= spent


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
        verdict = "met" if million["ms_per_row"] <= 0.1 else "missed"
        lines.append(
            f"job machinery at 1M rows: {million['ms_per_row']} ms/row (<= 0.1: {verdict})"
        )
    return lines


def print_table(runs: list[dict[str, Any]]) -> None:
    kinds = sorted({kind for run in runs for kind in run["peak_rss_mb"]})
    header = [
        "code",
        "rows",
        "format",
        "memory",
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
        cells = [run.get("code", ""), f"{run['rows']:,}", run["format"],
                 "off" if run.get("memory") is False else "on", run["input_mb"],
                 run["wall_s"], run["rows_per_s"], run["ms_per_row"],
                 *(run["peak_rss_mb"].get(kind, "") for kind in kinds),
                 run["store_mb"], run["work_dir_mb"]]  # fmt: skip
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    timed = [run for run in runs if "phases_s" in run]
    if timed:
        print("\nThe jobs' phases (s), planned = until the plan was written:")
        print("| code | rows | format | memory | planned | " + " | ".join(PHASES) + " |")
        print("|" + "---:|" * (5 + len(PHASES)))
        for run in timed:
            cells = [run.get("code", ""), f"{run['rows']:,}", run["format"],
                     "off" if run.get("memory") is False else "on", run["planned_s"],
                     *(run["phases_s"][phase] for phase in PHASES)]  # fmt: skip
            print("| " + " | ".join(str(cell) for cell in cells) + " |")


def print_breakdown(runs: list[dict[str, Any]]) -> None:
    """The in-process runs: ms/row by stage, one line per code and row count."""
    if not runs:
        return
    header = ["code", "rows", "memory", "clock", *STAGES, "total ms/row"]
    print("\nIn one process, ms/row by stage:")
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for run in runs:
        cells = [run["code"], f"{run['rows']:,}", "on" if run.get("memory") else "off",
                 run.get("clock", "wall"),
                 *(run["ms_per_row_by_stage"].get(stage, "") for stage in STAGES), run["ms_per_row"]]  # fmt: skip
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


def chart(runs: list[dict[str, Any]], stage_runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.5))
    jsonl = [run for run in runs if run["format"] == "jsonl"]
    for code in dict.fromkeys(run["code"] for run in jsonl):
        mine = [run for run in jsonl if run["code"] == code]
        left.loglog([run["rows"] for run in mine], [run["ms_per_row"] for run in mine],
                    marker="o", label=code)  # fmt: skip
    left.set(xlabel="rows", ylabel="ms per row", title="Job (reverse engine, 2 translators)")
    if jsonl:
        left.legend(fontsize=7)
    kinds = sorted({kind for run in jsonl for kind in run["peak_rss_mb"]})
    for kind in kinds:
        mine = [run for run in jsonl if kind in run["peak_rss_mb"]]
        middle.loglog([run["rows"] for run in mine], [run["peak_rss_mb"][kind] for run in mine],
                      marker="o", linestyle="", label=kind)  # fmt: skip
    middle.set(xlabel="rows", ylabel="peak RSS, MB (one process)", title="Memory per process kind")
    if kinds:
        middle.legend(fontsize=7)
    names = [f"{run['code']}\n{run['rows']:,} rows" for run in stage_runs]
    bottom = [0.0] * len(stage_runs)
    for stage in STAGES:
        heights = [run["ms_per_row_by_stage"].get(stage, 0.0) for run in stage_runs]
        right.bar(names, heights, bottom=bottom, label=stage)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    right.set(ylabel="ms per row", title="Machinery in one process, by stage")
    right.tick_params(axis="x", labelsize=7)
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
