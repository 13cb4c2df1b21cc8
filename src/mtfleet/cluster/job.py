"""The driver side of a job: check, plan, start or find the coordinator, follow it to the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mtfleet.cluster.assemble import assemble
from mtfleet.cluster.coordinator import TERMINAL, JobCoordinator, coordinator_name
from mtfleet.cluster.plan import plan_job
from mtfleet.cluster.runtime import NAMESPACE, connect, head_node_id
from mtfleet.data import check_output_writable
from mtfleet.engines import check_model
from mtfleet.errors import DatasetError, JobError
from mtfleet.spec import JobSpec, fingerprint, stored_spec
from mtfleet.store import JobState, JobStore

POLL_S = 0.5
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    store_url: str
    work_dir: Path


@dataclass(frozen=True)
class JobResult:
    job_id: str
    state: str
    error: str | None
    manifest: dict[str, Any] | None


def resolve_spec(spec: JobSpec) -> JobSpec:
    """The spec with absolute paths: actors on other processes and nodes read them."""
    model = Path(spec.model).expanduser()
    return spec.model_copy(
        update={
            "input": str(Path(spec.input).expanduser().resolve()),
            "output": str(Path(spec.output).expanduser().resolve()),
            "model": str(model.resolve()) if model.exists() else spec.model,
        }
    )


def store_url_for(state_dir: Path, store_url: str | None) -> str:
    if store_url:
        return store_url
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(state_dir / 'jobs.db').resolve()}"


def handle_for(job_id: str, state_dir: Path, store_url: str) -> JobHandle:
    """Where a job's work files are: one folder per job under the state dir."""
    return JobHandle(job_id, store_url, Path(state_dir).expanduser().resolve() / "jobs" / job_id)


def prepare_job(
    spec: JobSpec,
    *,
    state_dir: str | Path = ".mtfleet",
    store_url: str | None = None,
    job_id: str | None = None,
) -> JobHandle:
    """Checks the spec against the input, output and model, then plans the job or finds it to resume."""
    spec = resolve_spec(spec)
    if not Path(spec.input).is_file():
        raise DatasetError(f"Input file {spec.input} does not exist.")
    check_output_writable(spec.output)
    check_model(spec.engine, spec.model, src_lang=spec.src_lang, tgt_lang=spec.tgt_lang)
    input_sha256 = fingerprint(spec.input)
    job_id = job_id or spec.default_job_id(input_sha256)
    state_dir = Path(state_dir).expanduser().resolve()
    url = store_url_for(state_dir, store_url)
    handle = handle_for(job_id, state_dir, url)
    work_dir = handle.work_dir
    store = JobStore(url)
    existing = store.find_job(job_id)
    if existing is not None:
        if existing.spec != stored_spec(spec, input_sha256):
            raise JobError(
                f"Job {job_id} already exists with other settings or another input; "
                "choose another --job-id or rerun it unchanged."
            )
        if not (work_dir / "units.idx").exists():
            plan_job(spec, work_dir)
        if existing.state in (JobState.FAILED, JobState.CANCELLED):
            # Rerunning a failed or cancelled job goes on from its finished shards.
            store.set_job_state(job_id, JobState.QUEUED)
        return handle
    store.create_job(job_id, stored_spec(spec, input_sha256), plan_job(spec, work_dir))
    return handle


def start_coordinator(handle: JobHandle) -> Any:
    """The job's coordinator: found by name, or started (again) from the store."""
    head = head_node_id()
    strategy = NodeAffinitySchedulingStrategy(head, soft=True) if head else None
    coordinator = JobCoordinator.options(
        name=coordinator_name(handle.job_id),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=strategy,
    ).remote(handle.job_id, handle.store_url, str(handle.work_dir))
    ray.get(coordinator.start.remote())
    return coordinator


def follow(handle: JobHandle, on_progress: Progress | None = None) -> JobResult:
    """Follows the job to its end, starting its coordinator again whenever it dies."""
    coordinator = start_coordinator(handle)
    while True:
        try:
            report = ray.get(coordinator.progress.remote(), timeout=30)
        except (RayActorError, GetTimeoutError):
            coordinator = start_coordinator(handle)
            continue
        if on_progress is not None:
            on_progress(report)
        if JobState(report["state"]) in TERMINAL:
            ray.kill(coordinator, no_restart=True)
            job = JobStore(handle.store_url).get_job(handle.job_id)
            return JobResult(handle.job_id, job.state.value, job.error, job.manifest)
        time.sleep(POLL_S)


def finished_result(handle: JobHandle) -> JobResult | None:
    """The result of a job that already succeeded; its output is assembled again if it went missing."""
    store = JobStore(handle.store_url)
    job = store.get_job(handle.job_id)
    if job.state is not JobState.SUCCEEDED:
        return None
    manifest = job.manifest or {}
    output = Path(manifest.get("output", ""))
    if not output.is_file() or fingerprint(output) != manifest.get("output_sha256"):
        manifest = assemble(store, handle.job_id)
        store.set_manifest(handle.job_id, manifest)
    return JobResult(handle.job_id, job.state.value, None, manifest)


def run_job(
    spec: JobSpec,
    *,
    state_dir: str | Path = ".mtfleet",
    store_url: str | None = None,
    job_id: str | None = None,
    address: str | None = None,
    detach: bool = False,
    on_progress: Progress | None = None,
) -> JobResult:
    """Runs a job to its end (or, detached, starts it and returns); the CLI and the API call this."""
    if detach and not address:
        raise JobError("--detach needs --address: a local cluster ends with this command.")
    handle = prepare_job(spec, state_dir=state_dir, store_url=store_url, job_id=job_id)
    finished = finished_result(handle)
    if finished is not None:
        return finished
    started_here = connect(address)
    try:
        if detach:
            start_coordinator(handle)
            return JobResult(handle.job_id, JobState.RUNNING.value, None, None)
        return follow(handle, on_progress)
    finally:
        if started_here:
            ray.shutdown()
