"""mtfleet's speed against its peers, side by side in one process, as ratios (issue 5).

Builds a benchmark model with mtfleet.random_models, three workloads, and runs every system
on them one after another in this process; prints the table and the ratios, writes
bench/results/latest.json (quick: quick.json), a PNG chart, and, for a full run, the README table.

    .venv/bin/python bench/run.py [--quick] [--systems NAME,...] [--workloads NAME,...]
        [--rounds N] [--out NAME] [--keep]

With `--rounds N` the chosen systems of a workload run N times by turns (A, B, A, B, ...): a
system's row is its median round, and a ratio is the median of the rounds' own ratios, each of two
runs taken minutes apart, so a host whose speed drifts moves both sides of it alike.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memory import PeakMemory
from report import Row, ratio_lines, table, update_readme, write_chart, write_json
from systems import CLUSTER_STARTS, SYSTEMS, Settings, System, stop_cluster
from workloads import Workload, alpaca, long_fields, multi30k_sentences, short_unique

BENCH = Path(__file__).resolve().parent
# a random-weight model never ends on its own, so every output runs to its cap: 1.3 x source + 5
# is about a real model's output length, where the defaults (2 x + 10) would double the work
MAX_LENGTH_FACTOR, MAX_LENGTH_OFFSET = 1.3, 5


@dataclass(frozen=True)
class Profile:
    """How big a run is: the model's shape and each workload's size."""

    name: str
    d_model: int
    layers: int
    ffn: int
    vocab_size: int
    alpaca_rows: int
    long_rows: int
    long_words: int
    short_rows: int
    head_rows: dict[str, int]
    """Rows the slow pipelines (seed-baseline, hf-file-order, the beam-5 job) run on."""
    job_rows: dict[str, tuple[str, ...]] | None = None
    """The job systems each workload runs (a job costs ~10 s of startup); None is all of them."""


PROFILES = {
    "full": Profile(
        "full",
        d_model=256,
        layers=3,
        ffn=1024,
        vocab_size=8000,
        alpaca_rows=2040,
        long_rows=12,
        long_words=2500,
        # every distinct training caption (28,991): a job's few seconds of startup (check, plan,
        # coordinator and translator start, engine load, assembly) weigh a few percent of its time
        short_rows=29000,
        # one whole copy of the alpaca sample: the scaled rows are copies of it
        head_rows={"alpaca": 102, "long": 12, "short": 1000},
    ),
    "quick": Profile(
        "quick",
        d_model=256,
        layers=3,
        ffn=1024,
        vocab_size=8000,
        alpaca_rows=306,
        long_rows=2,
        long_words=400,
        short_rows=600,
        head_rows={"alpaca": 4, "long": 1, "short": 32},
        job_rows={
            "alpaca": (
                "mtfleet-job-hf",
                "mtfleet-job-hf checked",
                "mtfleet-job-hf beam5",
                "mtfleet-job-ct2",
                "mtfleet-job-ct2 x2",
                "mtfleet-job-ct2 mixed",
                "mtfleet-job-ct2 mixed no-tail",
                "mtfleet-job-hf warm",
            ),
            "long": (),
            "short": ("mtfleet-job-ct2", "mtfleet-job-ct2 warm"),
        },
    ),
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run that proves it works")
    parser.add_argument("--systems", help="comma-separated system names (default: all)")
    parser.add_argument("--workloads", help="comma-separated workload names (default: all)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the systems N times by turns (default 1)"
    )
    parser.add_argument(
        "--out", help="write results/OUT.json and .png (default: latest, partial or quick)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    # a run of some systems or workloads never replaces the whole table
    whole = args.systems is None and args.workloads is None
    wanted_systems = _names(args.systems, [system.name for system in SYSTEMS])
    wanted_workloads = _names(args.workloads, ["alpaca", "long", "short"])

    work_dir = Path(tempfile.mkdtemp(prefix="mtfleet-bench-"))
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    try:
        settings = bench_settings(profile, work_dir)
        model = model_card(settings.model_dir)
        workloads = build_workloads(profile, work_dir / "data", wanted_workloads)
        rows, errors = run_all(workloads, settings, profile, wanted_systems, args.rounds)
    finally:
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    header = {
        "mode": profile.name if whole else f"{profile.name}, partial",
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "machine": machine(load_before),
        "versions": versions(),
        "model": model,
        "settings": {
            **{k: v for k, v in asdict(settings).items() if not k.endswith("_dir")},
            "head_rows": profile.head_rows,
            # the local Ray cluster the jobs ran on: started before the first job of a workload
            "ray_cluster_start_s": CLUSTER_STARTS,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(library default)"),
            "rounds": args.rounds,
            "systems": {system.name: system.notes for system in SYSTEMS},
        },
        "workloads": {
            name: workload_card(whole, head) for name, (whole, head) in workloads.items()
        },
        "errors": errors,
    }
    stem = args.out or ("quick" if profile.name == "quick" else "latest" if whole else "partial")
    results = write_json(BENCH / "results" / f"{stem}.json", header, rows)
    write_chart(
        BENCH / "results" / f"{stem}.png",
        rows,
        f"mtfleet bench ({profile.name}): rows/s, {os.cpu_count()} CPU cores",
    )
    printed = table(rows) + "\n" + ratio_lines(results["ratios"])
    print("\n" + printed)
    if stem == "latest":
        update_readme(
            BENCH / "README.md", f"{header['started']}, {header['seconds']} s\n\n{printed}"
        )
    for error in errors:
        print(f"error: {error}", file=sys.stderr)


def bench_settings(profile: Profile, work_dir: Path) -> Settings:
    """What every row shares, on the bench model built in `work_dir`; conversions of it go to
    `work_dir`'s cache, where Ray's translators, which inherit the environment, find them."""
    os.environ["MTFLEET_CACHE"] = str(work_dir / "cache")
    return Settings(
        model_dir=build_model(profile, work_dir / "model"),
        work_dir=work_dir,
        max_length_factor=MAX_LENGTH_FACTOR,
        max_length_offset=MAX_LENGTH_OFFSET,
    )


def build_model(profile: Profile, out_dir: Path) -> Path:
    from mtfleet.random_models import build_tiny_marian, sample_sentences

    return build_tiny_marian(
        out_dir,
        d_model=profile.d_model,
        layers=profile.layers,
        heads=4,
        ffn=profile.ffn,
        vocab_size=profile.vocab_size,
        # a vocabulary of real size needs a real corpus; the sample text alone gives ~1,500 pieces
        corpus=[*multi30k_sentences("train"), *sample_sentences()],
    )


def build_workloads(
    profile: Profile, out_dir: Path, names: Sequence[str]
) -> dict[str, tuple[Workload, Workload]]:
    """Each workload, whole and its head (the rows the slow pipelines get)."""
    builders = {
        "alpaca": lambda: alpaca(profile.alpaca_rows, out_dir),
        "long": lambda: long_fields(profile.long_rows, profile.long_words, out_dir),
        "short": lambda: short_unique(profile.short_rows, out_dir),
    }
    workloads = {}
    for name in names:
        whole = builders[name]()
        workloads[name] = (whole, whole.head(profile.head_rows[name]))
    return workloads


def run_all(
    workloads: dict[str, tuple[Workload, Workload]],
    settings: Settings,
    profile: Profile,
    wanted: Sequence[str],
    rounds: int = 1,
) -> tuple[list[Row], list[str]]:
    """Every wanted system on every workload, `rounds` times by turns; a system that fails in a
    round is left out of that workload (its error recorded), the others go on."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(settings.model_dir)
    rows: list[Row] = []
    errors: list[str] = []
    for name, (whole, head) in workloads.items():
        systems = [system for system in SYSTEMS if runs_on(system, name, profile, wanted)]
        taken: dict[str, list[tuple[float, float, dict[str, Any]]]] = {}
        for turn in range(rounds):
            for system in systems:
                if turn and system.name not in taken:
                    continue  # it failed in an earlier round
                workload = head if system.head_only else whole
                gc.collect()
                label = f" (round {turn + 1}/{rounds})" if rounds > 1 else ""
                print(f"{name:>6} {system.name:<22}{label}", end=" ", flush=True)
                try:
                    seconds, peak_mb, detail = measure(system, workload, settings)
                except Exception as error:  # one system failing must not lose the others
                    errors.append(f"{name} / {system.name}: {type(error).__name__}: {error}")
                    print(f"failed: {error}", flush=True)
                    taken.pop(system.name, None)
                    continue
                taken.setdefault(system.name, []).append((seconds, peak_mb, detail))
                print(f"{seconds:8.1f} s  {len(workload.rows) / seconds:8.2f} rows/s", flush=True)
        for system in systems:
            if system.name not in taken:
                continue
            workload = head if system.head_only else whole
            rows.append(median_row(name, system.name, taken[system.name], workload, tokenizer))
        # the job rows come last in each workload: the next workload's pipelines run without Ray
        stop_cluster()
    return rows, errors


def median_row(
    workload_name: str,
    system: str,
    runs: Sequence[tuple[float, float, dict[str, Any]]],
    workload: Workload,
    tokenizer: Any,
) -> Row:
    """The row of a system's median run; with more than one run, every run's seconds in order
    (`rounds_s`), which the ratios pair round by round."""
    seconds, _, detail = sorted(runs, key=lambda run: run[0])[(len(runs) - 1) // 2]
    if len(runs) > 1:
        detail = {**detail, "rounds_s": [round(run[0], 3) for run in runs]}
        seconds = statistics.median(run[0] for run in runs)
    return Row(
        workload=workload_name,
        system=system,
        seconds=round(seconds, 3),
        rows=len(workload.rows),
        source_tokens=source_tokens(workload, tokenizer),
        peak_rss_mb=round(max(run[1] for run in runs), 1),
        detail=detail,
    )


def runs_on(system: System, workload: str, profile: Profile, wanted: Sequence[str]) -> bool:
    if system.name not in wanted or (system.workloads and workload not in system.workloads):
        return False
    if "-job" in system.name and profile.job_rows is not None:
        return system.name in profile.job_rows[workload]
    return True


def measure(
    system: System, workload: Workload, settings: Settings
) -> tuple[float, float, dict[str, Any]]:
    """Seconds and peak memory of the system's run; what it loaded goes when this returns."""
    run = system.prepare(workload, settings)
    with PeakMemory() as memory:
        clock = time.perf_counter()
        detail = run()
        seconds = time.perf_counter() - clock
    return seconds, memory.peak_mb, detail


def source_tokens(workload: Workload, tokenizer: Any) -> int:
    """Model tokens of every non-empty value, whole: the work asked, the same for every system."""
    texts = workload.texts()
    return sum(len(ids) for ids in tokenizer(texts)["input_ids"]) if texts else 0


def workload_card(whole: Workload, head: Workload) -> dict[str, Any]:
    values = [value for texts in whole.texts_by_field().values() for value in texts]
    return {
        "description": whole.description,
        "rows": len(whole.rows),
        "fields": whole.fields,
        "values": len(values),
        "empty_values": sum(1 for value in values if not value.strip()),
        "distinct_values": len(set(values)),
        "head_rows": len(head.rows),
    }


def model_card(model_dir: Path) -> dict[str, Any]:
    import json

    config = json.loads((model_dir / "config.json").read_text())
    weights = sum(path.stat().st_size for path in model_dir.glob("*.safetensors"))
    return {
        "builder": "mtfleet.random_models.build_tiny_marian (random weights)",
        "architecture": config["architectures"][0],
        "d_model": config["d_model"],
        "encoder_layers": config["encoder_layers"],
        "decoder_layers": config["decoder_layers"],
        "attention_heads": config["encoder_attention_heads"],
        "ffn": config["encoder_ffn_dim"],
        "vocab_size": config["vocab_size"],
        "max_positions": config["max_position_embeddings"],
        "parameters": weights // 4,  # float32 weights
    }


def machine(load_before: tuple[float, float, float]) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": round(memory_kb / 2**20, 1),
        # other work on the machine slows every row alike only if it stays the same: check both
        "load_average_before": [round(load, 2) for load in load_before],
        "load_average_after": [round(load, 2) for load in os.getloadavg()],
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    packages = ("mtfleet", "torch", "transformers", "ctranslate2", "ray", "sentencepiece")
    return {"python": platform.python_version(), **{name: version(name) for name in packages}}


def _names(given: str | None, known: list[str]) -> list[str]:
    if not given:
        return known
    names = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown: {', '.join(unknown)}; known: {', '.join(known)}")
    return names


if __name__ == "__main__":
    main()
