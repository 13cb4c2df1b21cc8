"""Reaching a job's coordinator: start or find it, read its progress, steer its job, stop it.

The one place the CLI's run (`job.py`) and the API (`api/jobs.py`) touch a coordinator, with one
call timeout. A pause, resume or cancel goes through the live coordinator, which wakes the
translators waiting on it for a lease, or through the store when none runs; either way the job's
history says who asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mtfleet.cluster.coordinator import JobCoordinatorActor, coordinator_name, wait_ended
from mtfleet.cluster.runtime import NAMESPACE, head_node_id
from mtfleet.cluster.steering import STEERED, cannot, move_job
from mtfleet.errors import JobError
from mtfleet.store import TERMINAL, JobRecord, JobState, JobStore

# a call to a coordinator (its progress, a move) waits this long at most
CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class JobHandle:
    job_id: str
    store_url: str
    work_dir: Path


def store_url_for(state_dir: Path, store_url: str | None) -> str:
    if store_url:
        return store_url
    state_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(state_dir / 'jobs.db').resolve()}"


def handle_for(job_id: str, state_dir: Path, store_url: str) -> JobHandle:
    """Where a job's work files are: one folder per job under the state dir."""
    return JobHandle(job_id, store_url, Path(state_dir).expanduser().resolve() / "jobs" / job_id)


def start_coordinator(handle: JobHandle, timeout_s: float | None = None) -> Any:
    """The job's coordinator: found by name, or started (again) from the store; waits at most
    `timeout_s` for it to start (GetTimeoutError), so a cluster without room hangs no caller."""
    head = head_node_id()
    strategy = NodeAffinitySchedulingStrategy(head, soft=True) if head else None
    coordinator = JobCoordinatorActor.options(
        name=coordinator_name(handle.job_id),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=strategy,
    ).remote(handle.job_id, handle.store_url, str(handle.work_dir))
    ray.get(coordinator.start.remote(), timeout=timeout_s)
    return coordinator


def find_coordinator(job_id: str) -> Any | None:
    """The job's live coordinator, or None."""
    try:
        return ray.get_actor(coordinator_name(job_id), namespace=NAMESPACE)
    except ValueError:
        return None


def drop_stale(store: JobStore, job_id: str) -> None:
    """A queued job has no live coordinator: one left from its failed or cancelled run would not
    start it again, so it goes."""
    if store.jobs.get(job_id).state in (JobState.QUEUED, JobState.PLANNING):
        stop_coordinator(store, job_id)


def stop_coordinator(store: JobStore, job_id: str, *, free_name: bool = True) -> None:
    """Stops the job's coordinator, if one runs (its translators die with it); a job that ended
    first lets it stop its translators. With `free_name`, returns once the coordinator's name is
    free again (a coordinator started next needs it); a driver that is done returns at once."""
    coordinator = find_coordinator(job_id)
    if coordinator is None:
        return
    try:
        ended = store.jobs.get(job_id).state in TERMINAL
    except JobError:  # deleted meanwhile
        ended = False
    if ended:
        wait_ended(coordinator)
    ray.kill(coordinator, no_restart=True)
    if not free_name:
        return
    # Its name is free once Ray has seen it die; a coordinator started later needs the name.
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while time.monotonic() < deadline and find_coordinator(job_id) is not None:
        time.sleep(0.05)


def report(coordinator: Any, wait_s: float = 0.0) -> dict[str, Any] | None:
    """The coordinator's progress report, given once the job ended or `wait_s` passed; None when
    the coordinator is gone or does not answer in time."""
    try:
        reply: dict[str, Any] = ray.get(
            coordinator.progress.remote(wait_s), timeout=CALL_TIMEOUT_S + wait_s
        )
    except (RayActorError, GetTimeoutError):
        return None
    return reply


def steer(
    store: JobStore,
    job_id: str,
    to: JobState,
    actor: str,
    *,
    message: str | None = None,
    error: str | None = None,
) -> JobRecord:
    """Moves the job to `to` (paused, running or cancelled) through its live coordinator, or the
    store when none answers; the job as it is then, whichever of two racing calls won. The history
    says `actor` moved it (`message`, else the move's own sentence); a move the job's state does
    not allow is a JobError, one sentence."""
    moved, state = _move(store, job_id, to, error)
    if moved:
        kind, sentence = STEERED[to]
        store.events.add(job_id, kind, message or sentence, actor=actor)
    if state != to.value:
        raise JobError(cannot(job_id, JobState(state), to))
    return store.jobs.get(job_id)


def _move(store: JobStore, job_id: str, to: JobState, error: str | None) -> tuple[bool, str]:
    coordinator = find_coordinator(job_id) if ray.is_initialized() else None
    if coordinator is not None:
        try:
            moved: tuple[bool, str] = ray.get(
                coordinator.move.remote(to.value, error), timeout=CALL_TIMEOUT_S
            )
            return moved
        except (RayActorError, GetTimeoutError):
            pass  # gone or stuck: the store is the truth, and its next coordinator reads it
    return move_job(store, job_id, to, error)


def start_job(store: JobStore, handle: JobHandle, timeout_s: float | None = None) -> Any:
    """Starts the coordinator of a job just submitted or retried: a stale one goes first."""
    drop_stale(store, handle.job_id)
    return start_coordinator(handle, timeout_s)
