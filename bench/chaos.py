"""Chaos: jobs run while the faults users meet are injected, one kind at a time (issue 11).

Each run is judged as a user would: the job ended `succeeded` with the bytes of a clean run
(identical), or stopped, paused or failed, with one sentence and no rows failed that a healthy run
translates (stopped cleanly), or neither (wrong). Rows wrongly failed must stay 0. Writes
bench/results/reliability.json and prints a table.

    .venv/bin/python bench/chaos.py [--kinds disk_full,hang,...] [--repeat N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ray

from mtfleet.cluster import prepare_job, run_job, start_coordinator
from mtfleet.cluster.coordinator import NAMESPACE, coordinator_name
from mtfleet.cluster.logs import log_path
from mtfleet.spec import JobSpec
from mtfleet.store import JobStore
from mtfleet.testing.cluster import JobThread, local_cluster, wait_for
from mtfleet.testing.faults import full_disk, sqlite_locked, throwaway_postgres

BENCH = Path(__file__).resolve().parent
ALPACA = BENCH.parent / "examples" / "alpaca_sample.json"
RESULTS = BENCH / "results" / "reliability.json"
FIELDS = ["instruction", "input", "output"]
MARKED_ROW = 17


@dataclass(frozen=True)
class Run:
    kind: str
    faults_injected: int
    ended: str
    """identical, stopped (cleanly, with one sentence) or wrong"""
    rows_wrongly_failed: int
    seconds: float
    detail: str


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    """Variables every Ray worker started inside inherits."""
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Bench:
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        rows = json.loads(ALPACA.read_text()) * 2
        self.alpaca = scratch / "alpaca2.jsonl"
        self.alpaca.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        marked = [{"id": i, "text": f"Sentence number {i} is fine."} for i in range(40)]
        marked[MARKED_ROW]["text"] = "This one carries MARKER."
        self.marked = scratch / "marked.jsonl"
        self.marked.write_text("".join(json.dumps(row) + "\n" for row in marked))
        self.clean = self._clean_run(self.alpaca_spec)
        self.clean_marked = self._clean_run(self.marked_spec)
        self.runs = 0

    def alpaca_spec(self, output: Path, **settings: Any) -> JobSpec:
        defaults = {"shard_tokens": 250, "lease_ttl_s": 5.0, "max_attempts": 50}
        return JobSpec(input=str(self.alpaca), output=str(output), model="reverse",
                       engine="reverse", fields=FIELDS, **(defaults | settings))  # fmt: skip

    def marked_spec(self, output: Path, **settings: Any) -> JobSpec:
        defaults = {"shard_tokens": 30, "lease_ttl_s": 5.0, "max_attempts": 1}
        return JobSpec(input=str(self.marked), output=str(output), model="reverse",
                       engine="reverse", fields=["text"], **(defaults | settings))  # fmt: skip

    def _clean_run(self, make_spec: Callable[..., JobSpec]) -> bytes:
        work = Path(tempfile.mkdtemp(dir=self.scratch))
        result = run_job(make_spec(work / "out.jsonl"), state_dir=work / "state")
        assert result.state == "succeeded", result.error
        return (work / "out.jsonl").read_bytes()

    def workdir(self) -> Path:
        self.runs += 1
        work = self.scratch / f"run{self.runs}"
        work.mkdir()
        return work


def wrongly_failed(store: JobStore, job_id: str, expected: set[int] = frozenset()) -> int:
    rows = {
        row
        for shard in store.shards.failed(job_id)
        for row in range(shard.row_start, shard.row_end)
    }
    return len(rows - expected)


def judge(output: Path, clean: bytes, state: str, error: str | None) -> tuple[str, str]:
    if state == "succeeded" and output.is_file() and output.read_bytes() == clean:
        return "identical", ""
    if state in ("paused", "failed") and error and "\n" not in error and not output.exists():
        return "stopped", error
    return "wrong", f"{state}: {error}"


# --- one function per kind of fault: injects it once and judges the job


def disk_full(bench: Bench) -> Run:
    """The work dir's disk fills mid-job: paused naming it; freed and rerun: identical."""
    work = bench.workdir()
    output, state_dir = work / "out.jsonl", work / "state"
    with (
        full_disk(state_dir / "jobs", work / "disk-is-full") as disk,
        environment(**disk.environment, MTFLEET_REVERSE_DELAY_S="0.05"),
    ):
        job = JobThread(bench.alpaca_spec(output), state_dir)
        job.start()
        wait_for(lambda: job.shards_done() >= 2, timeout_s=120)
        disk.fill()
        paused = job.outcome()
        store = JobStore.for_state_dir(state_dir)
        wrong = wrongly_failed(store, paused.job_id)
        ended, detail = judge(output, bench.clean, paused.state, paused.error)
        if ended == "stopped":
            disk.free()
            rerun = run_job(bench.alpaca_spec(output), state_dir=state_dir)
            ended, _ = judge(output, bench.clean, rerun.state, rerun.error)
            detail = f"paused: {paused.error}; rerun after freeing: {ended}"
    return Run("disk_full", 1, ended, wrong, 0, detail)


def postgres_restart(bench: Bench) -> Run:
    work = bench.workdir()
    output = work / "out.jsonl"
    with (
        throwaway_postgres() as server,
        local_cluster(head_cpus=2),
        environment(MTFLEET_REVERSE_DELAY_S="0.2"),
    ):
        job = JobThread(bench.alpaca_spec(output), work / "state", server.url)
        job.start()
        wait_for(lambda: job.shards_done() >= 2)
        server.stop()
        wait_for(lambda: "Retrying" in log_path(job.work_dir(), "coordinator").read_text())
        server.start()
        result = job.outcome()
        wrong = wrongly_failed(JobStore(server.url), result.job_id)
    ended, detail = judge(output, bench.clean, result.state, result.error)
    return Run("postgres_restart", 1, ended, wrong, 0, detail)


def sqlite_lock(bench: Bench) -> Run:
    work = bench.workdir()
    output = work / "out.jsonl"
    with local_cluster(head_cpus=2), environment(MTFLEET_REVERSE_DELAY_S="0.2"):
        job = JobThread(bench.alpaca_spec(output), work / "state")
        job.start()
        wait_for(lambda: job.shards_done() >= 2)
        with sqlite_locked(work / "state" / "jobs.db", hold_s=8):
            pass
        result = job.outcome()
    wrong = wrongly_failed(JobStore.for_state_dir(work / "state"), result.job_id)
    ended, detail = judge(output, bench.clean, result.state, result.error)
    return Run("sqlite_lock", 1, ended, wrong, 0, detail)


def hang(bench: Bench) -> Run:
    """A translator hangs on the marked row every time: only that row may fail."""
    work = bench.workdir()
    output = work / "out.jsonl"
    with environment(MTFLEET_REVERSE_HANG_ON="MARKER"):
        result = run_job(bench.marked_spec(output), state_dir=work / "state")
    store = JobStore.for_state_dir(work / "state")
    wrong = wrongly_failed(store, result.job_id, {MARKED_ROW})
    clean_rows = bench.clean_marked.decode().splitlines()
    rows = output.read_text().splitlines() if output.exists() else []
    others_identical = len(rows) == len(clean_rows) and all(
        row == clean
        for i, (row, clean) in enumerate(zip(rows, clean_rows, strict=True))
        if i != MARKED_ROW
    )
    restarts = store.jobs.get(result.job_id).counters.get("watchdog_restarts", 0)
    ended = "identical" if result.state == "succeeded" and others_identical else "wrong"
    detail = f"row {MARKED_ROW} kept as source after {restarts} watchdog restarts"
    return Run("hang", restarts, ended, wrong, 0, detail)


def device_oom(bench: Bench) -> Run:
    work = bench.workdir()
    output = work / "out.jsonl"
    with environment(MTFLEET_REVERSE_OOM_ABOVE="40"):
        spec = bench.marked_spec(output, shard_tokens=400, max_batch_tokens=256)
        result = run_job(spec, state_dir=work / "state")
    wrong = wrongly_failed(JobStore.for_state_dir(work / "state"), result.job_id)
    ended, detail = judge(output, bench.clean_marked, result.state, result.error)
    return Run("device_oom", 3, ended, wrong, 0, detail or "batch budget 256 halved to 32")


def input_modified(bench: Bench) -> Run:
    work = bench.workdir()
    changing, output = work / "input.jsonl", work / "out.jsonl"
    shutil.copyfile(bench.alpaca, changing)
    spec = bench.alpaca_spec(output).model_copy(update={"input": str(changing)})
    with local_cluster(head_cpus=2), environment(MTFLEET_REVERSE_DELAY_S="0.2"):
        job = JobThread(spec, work / "state")
        job.start()
        wait_for(lambda: job.shards_done() >= 2)
        with changing.open("a") as stream:
            stream.write(
                json.dumps({"instruction": "Added.", "input": "", "output": "Late."}) + "\n"
            )
        result = job.outcome()
    wrong = wrongly_failed(JobStore.for_state_dir(work / "state"), result.job_id)
    ended, detail = judge(output, bench.clean, result.state, result.error)
    return Run("input_modified", 1, ended, wrong, 0, detail)


def coordinator_restart_node_loss(bench: Bench) -> Run:
    """A detached job, no driver: its coordinator dies and a node leaves while Ray restarts it."""
    work = bench.workdir()
    output = work / "out.jsonl"
    spec = bench.alpaca_spec(output, shard_tokens=1000)
    with local_cluster(head_cpus=1) as cluster, environment(MTFLEET_REVERSE_DELAY_S="1.0"):
        leaving = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        handle = prepare_job(spec, state_dir=work / "state")
        store = JobStore(handle.store_url)
        start_coordinator(handle)
        wait_for(
            lambda: any(
                s.state.value == "leased" and s.lease_owner.startswith(leaving.node_id[:8])
                for s in store.shards.in_row_order(handle.job_id)
            ),
            poll_s=0.02,
        )
        coordinator = ray.get_actor(coordinator_name(handle.job_id), namespace=NAMESPACE)
        ray.kill(coordinator, no_restart=False)
        cluster.remove_node(leaving)
        wait_for(lambda: store.jobs.get(handle.job_id).state.value in ("succeeded", "failed"), 180)
        ray.kill(coordinator, no_restart=True)
    job = store.jobs.get(handle.job_id)
    ended, detail = judge(output, bench.clean, job.state.value, job.error)
    return Run("coordinator_restart_node_loss", 2, ended, wrongly_failed(store, job.id), 0, detail)


KINDS: dict[str, Callable[[Bench], Run]] = {
    "disk_full": disk_full,
    "postgres_restart": postgres_restart,
    "sqlite_lock": sqlite_lock,
    "hang": hang,
    "device_oom": device_oom,
    "input_modified": input_modified,
    "coordinator_restart_node_loss": coordinator_restart_node_loss,
}


def summary(runs: list[Run]) -> dict[str, dict[str, int]]:
    kinds: dict[str, dict[str, int]] = {}
    for run in runs:
        row = kinds.setdefault(
            run.kind,
            {"jobs": 0, "faults_injected": 0, "identical": 0, "stopped_cleanly": 0, "wrong": 0,
             "rows_wrongly_failed": 0},
        )  # fmt: skip
        row["jobs"] += 1
        row["faults_injected"] += run.faults_injected
        row[{"identical": "identical", "stopped": "stopped_cleanly"}.get(run.ended, "wrong")] += 1
        row["rows_wrongly_failed"] += run.rows_wrongly_failed
    return kinds


def print_table(kinds: dict[str, dict[str, int]]) -> None:
    columns = ["jobs", "faults_injected", "identical", "stopped_cleanly", "wrong",
               "rows_wrongly_failed"]  # fmt: skip
    print(f"{'kind':30}" + "".join(f"{name:>{len(name) + 2}}" for name in columns))
    for kind, row in kinds.items():
        print(f"{kind:30}" + "".join(f"{row[name]:>{len(name) + 2}}" for name in columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated; default: all")
    parser.add_argument("--repeat", type=int, default=1, help="jobs per kind")
    args = parser.parse_args()
    chosen = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        parser.error(f"unknown kinds {', '.join(unknown)}; known: {', '.join(KINDS)}")
    started = time.time()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="mtfleet-chaos-") as scratch:
        bench = Bench(Path(scratch))
        for kind in chosen:
            for _ in range(args.repeat):
                began = time.monotonic()
                run = KINDS[kind](bench)
                run = Run(**{**asdict(run), "seconds": round(time.monotonic() - began, 1)})
                print(f"{run.kind}: {run.ended} ({run.seconds} s) {run.detail}", flush=True)
                runs.append(run)
    kinds = summary(runs)
    results = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "ray": ray.__version__,
        },
        "seconds": round(time.time() - started, 1),
        "kinds": kinds,
        "rows_wrongly_failed": sum(row["rows_wrongly_failed"] for row in kinds.values()),
        "runs": [asdict(run) for run in runs],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print_table(kinds)
    print(f"wrote {RESULTS}")
    clean = all(row["wrong"] == 0 and row["rows_wrongly_failed"] == 0 for row in kinds.values())
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
