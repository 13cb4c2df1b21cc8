"""Ray clusters on one machine for tests and demos: started, handed over, always stopped."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

from mtfleet.cluster.coordinator import JobCoordinator
from mtfleet.cluster.job import JobResult, run_job
from mtfleet.cluster.runtime import NAMESPACE
from mtfleet.spec import JobSpec, stored_spec
from mtfleet.store import JobState, JobStore, ShardPlan

# The settings of the jobs that cluster and fault tests disturb: small shards, short leases, and
# attempts enough that only a row the engine refuses is ever failed.
DISTURBED_JOB = {"shard_tokens": 250, "lease_ttl_s": 5.0, "max_attempts": 50}


def reverse_spec(dataset: Path, output: Path, fields: list[str], **settings: Any) -> JobSpec:
    """A job of the reverse engine over `dataset`, with DISTURBED_JOB's settings unless given."""
    return JobSpec(
        input=str(dataset),
        output=str(output),
        model="reverse",
        engine="reverse",
        fields=fields,
        **(DISTURBED_JOB | settings),
    )


def coordinator_of_a_running_job(folder: Path) -> JobCoordinator:
    """A coordinator, as its actor holds one, of a running job of one shard in `folder`: its
    fleet loop never runs and it has no warm pool; nothing is placed yet."""
    store_url = f"sqlite:///{folder / 'jobs.db'}"
    with JobStore(store_url) as store:
        spec = reverse_spec(folder / "in.jsonl", folder / "out.jsonl", ["text"])
        store.jobs.create("job", stored_spec(spec, "key"), [ShardPlan(0, 10, 10, 1000)])
        store.jobs.set_state("job", JobState.RUNNING)
    return JobCoordinator("job", store_url, str(folder / "work"))


def write_jsonl(
    path: Path, rows: Iterable[Mapping[str, Any]], *, ensure_ascii: bool = True
) -> Path:
    """`rows` as JSONL at `path` (its folder made); `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=ensure_ascii) + "\n" for row in rows))
    return path


def repeated_jsonl(source: Path, copies: int, path: Path) -> Path:
    """The rows of the JSON array `source`, `copies` times over, as JSONL at `path`."""
    return write_jsonl(path, json.loads(source.read_text()) * copies, ensure_ascii=False)


@contextlib.contextmanager
def local_cluster(head_cpus: int = 1, head_gpus: int = 0) -> Iterator[Cluster]:
    """A multi-node Ray cluster in this machine's processes; this process is its driver."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": head_cpus, "num_gpus": head_gpus, "include_dashboard": False},
    )
    try:
        ray.init(
            address=cluster.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, poll_s: float = 0.1) -> None:
    """Waits until `condition()` holds; fails loudly when it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"condition not met in {timeout_s} s")


class JobThread(threading.Thread):
    """Runs a job to its end in the background, keeping its progress reports, while a test (or
    the chaos bench) changes the cluster under it."""

    def __init__(self, spec: JobSpec, state_dir: Path, store_url: str | None = None) -> None:
        super().__init__(daemon=True)
        self.spec, self.state_dir, self.store_url = spec, state_dir, store_url
        self.reports: list[dict[str, Any]] = []
        self.result: JobResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = run_job(
                self.spec,
                state_dir=self.state_dir,
                store_url=self.store_url,
                on_progress=self.reports.append,
            )
        except BaseException as error:
            self.error = error

    def shards_done(self) -> int:
        return self.reports[-1]["shards"]["done"] if self.reports else 0

    def work_dir(self) -> Path:
        """The job's work dir, once a progress report has named the job."""
        return Path(self.state_dir).resolve() / "jobs" / self.reports[-1]["job_id"]

    def outcome(self, timeout_s: float = 180) -> JobResult:
        """The job's result, once it has ended; raises what the job raised."""
        self.join(timeout_s)
        if self.is_alive():
            raise TimeoutError(f"the job did not end in {timeout_s} s")
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result
