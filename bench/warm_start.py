"""How soon a second job starts translating on a running cluster (issue 15's "done when").

Starts a local Ray cluster the way `mtfleet serve` finds one, runs a first job of the demo model
with translators kept warm, then submits further jobs of the same model (each its own copy of the
input), one after another, as the API does (`submit_job`, `start_coordinator`), and reads from
each one's coordinator log when its first shard was leased. Each round is broken down from the
log: the submit checks; the coordinator's process up (Ray starts a worker, the coordinator's
modules are imported, its first log line); the coordinator started (`start` answered); the warm
translator attached; the first shard leased. The machine's load average is kept with each round:
on shared cores the seconds follow it. Writes bench/results/warm-start.json, the medians first.

    .venv/bin/python bench/warm_start.py [--engine hf|ct2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEMO_MODEL = ROOT / "models" / "multi30k-en-de"
ALPACA = ROOT / "examples" / "alpaca_sample.json"
FIELDS = ["instruction", "input", "output"]
# The coordinator log lines each step of a round ends with, by the name the report gives it.
LOG_STEPS = {
    "coordinator_up_s": "up (restarted by Ray:",
    "translator_attached_s": "took warm translator",
    "first_shard_leased_s": "leased shard",
}
ROUND_STEPS = (
    "submit_checks_s",
    "coordinator_up_s",
    "coordinator_started_s",
    "translator_attached_s",
    "first_shard_leased_s",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("hf", "ct2"), default="hf")
    parser.add_argument("--rounds", type=int, default=3, help="second jobs, one after another")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "warm-start.json")
    args = parser.parse_args(argv)

    import ray

    from mtfleet.cluster import run_job
    from mtfleet.cluster.runtime import connect
    from mtfleet.spec import JobSpec

    connect()
    try:
        with tempfile.TemporaryDirectory(prefix="mtfleet-warm-") as scratch:
            work = Path(scratch)

            def spec(source: Path, output: str) -> JobSpec:
                return JobSpec(
                    input=str(source),
                    output=str(work / output),
                    model=str(DEMO_MODEL),
                    fields=FIELDS,
                    engine=args.engine,
                    keep_warm_s=120,
                    threads=1,
                )

            clock = time.perf_counter()
            first = run_job(spec(ALPACA, "first.json"), state_dir=work / "state")
            first_s = time.perf_counter() - clock
            assert first.state == "succeeded", first.error
            rounds = []
            for index in range(args.rounds):
                source = work / f"alpaca-{index}.json"
                source.write_bytes(ALPACA.read_bytes())
                rounds.append(second_job(spec(source, f"second-{index}.json"), work / "state"))
    finally:
        ray.shutdown()
    report = {
        "engine": args.engine,
        "first_job_s": round(first_s, 2),
        **{step: median(r[step] for r in rounds) for step in ROUND_STEPS},
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def second_job(spec: Any, state_dir: Path) -> dict[str, Any]:
    """Submits `spec` on the running cluster and follows it to its end: its steps in seconds from
    its submission, the machine's load as it was submitted, its time and its end state."""
    from mtfleet.cluster import start_coordinator, submit_job
    from mtfleet.cluster.logs import log_path
    from mtfleet.store import JobStore

    load_1min = os.getloadavg()[0]
    submitted = time.time()
    handle, _ = submit_job(spec, state_dir=state_dir)
    checked = time.time()
    start_coordinator(handle)
    started = time.time()
    logged = log_times(log_path(handle.work_dir, "coordinator"))
    store = JobStore(handle.store_url)
    while store.jobs.get(handle.job_id).state.value not in ("succeeded", "failed"):
        time.sleep(0.2)
    return {
        "load_1min": round(load_1min, 2),
        "submit_checks_s": round(checked - submitted, 3),
        "coordinator_started_s": round(started - submitted, 3),
        **{step: None if at is None else round(at - submitted, 3) for step, at in logged.items()},
        "job_s": round(time.time() - submitted, 2),
        "state": store.jobs.get(handle.job_id).state.value,
    }


def log_times(log: Path, timeout_s: float = 120.0) -> dict[str, float | None]:
    """The time of the first line of each of LOG_STEPS in a coordinator log (None: no such line),
    once the first shard is leased."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found: dict[str, float] = {}
        if log.exists():
            for line in log.read_text(encoding="utf-8").splitlines():
                for step, text in LOG_STEPS.items():
                    if text in line and step not in found:
                        stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                        found[step] = stamp.timestamp()
        if "first_shard_leased_s" in found:
            return {step: found.get(step) for step in LOG_STEPS}
        time.sleep(0.05)
    raise TimeoutError(f"no shard was leased in {timeout_s} s ({log})")


def median(values: Iterable[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(statistics.median(known), 3) if known else None


if __name__ == "__main__":
    sys.exit(main())
