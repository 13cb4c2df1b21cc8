"""How soon a second job starts translating on a running cluster (issue 15's "done when").

Starts a local Ray cluster the way `mtfleet serve` finds one, runs a first job of the demo model
with translators kept warm, then submits a second job of the same model (another input) as the
API does (`submit_job`, `start_coordinator`) and reads, from the second job's coordinator log, when
its first shard was leased. Writes bench/results/warm-start.json.

    .venv/bin/python bench/warm_start.py [--engine hf|ct2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEMO_MODEL = ROOT / "models" / "multi30k-en-de"
ALPACA = ROOT / "examples" / "alpaca_sample.json"
FIELDS = ["instruction", "input", "output"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("hf", "ct2"), default="hf")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "warm-start.json")
    args = parser.parse_args(argv)

    import ray

    from mtfleet.cluster import run_job, start_coordinator, submit_job
    from mtfleet.cluster.logs import log_path
    from mtfleet.cluster.runtime import connect
    from mtfleet.spec import JobSpec
    from mtfleet.store import JobStore

    connect()
    try:
        with tempfile.TemporaryDirectory(prefix="mtfleet-warm-") as scratch:
            work = Path(scratch)
            second_input = work / "alpaca-again.json"
            second_input.write_bytes(ALPACA.read_bytes())

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
            submitted = time.time()
            handle, _ = submit_job(spec(second_input, "second.json"), state_dir=work / "state")
            checked = time.time()
            start_coordinator(handle)
            started = time.time()
            leased = first_lease(log_path(handle.work_dir, "coordinator"))
            store = JobStore(handle.store_url)
            while store.get_job(handle.job_id).state.value not in ("succeeded", "failed"):
                time.sleep(0.2)
            ended = time.time()
            report = {
                "engine": args.engine,
                "first_job_s": round(first_s, 2),
                "submit_checks_s": round(checked - submitted, 3),
                "coordinator_started_s": round(started - submitted, 3),
                "first_shard_leased_s": round(leased - submitted, 3),
                "second_job_s": round(ended - submitted, 2),
                "second_job_state": store.get_job(handle.job_id).state.value,
            }
    finally:
        ray.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def first_lease(log: Path, timeout_s: float = 120.0) -> float:
    """The time of the first `leased shard` line of a coordinator log, once it is written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text(encoding="utf-8").splitlines():
                if "leased shard" in line:
                    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                    return stamp.timestamp()
        time.sleep(0.05)
    raise TimeoutError(f"no shard was leased in {timeout_s} s ({log})")


if __name__ == "__main__":
    sys.exit(main())
