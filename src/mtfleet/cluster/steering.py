"""A job's moves a client asks for (pause, resume, cancel): how one is made, and how its history
tells it. The coordinator makes them while it runs (`JobCoordinator.pause`...), the store when none
does (`control.steer`); both through `move_job`, so a repeated or racing call finds the move done."""

from __future__ import annotations

from mtfleet.errors import JobError
from mtfleet.store import TERMINAL, JobState, JobStore

# a move a client asked for, as the job's history tells it: its kind and its sentence
STEERED = {
    JobState.PAUSED: ("paused", "Paused: no new leases; leased shards finish."),
    JobState.RUNNING: ("resumed", "Resumed."),
    JobState.CANCELLED: ("cancelled", "Cancelled."),
}
VERBS = {JobState.PAUSED: "pause", JobState.RUNNING: "resume", JobState.CANCELLED: "cancel"}


def move_job(
    store: JobStore, job_id: str, to: JobState, error: str | None = None
) -> tuple[bool, str]:
    """Moves the job to `to` unless it is there already: whether this call moved it, and the state
    it is in now (another, when its state does not allow the move)."""
    if store.jobs.get(job_id).state is to:
        return False, to.value
    try:
        store.jobs.set_state(job_id, to, error=error)
    except JobError:
        return False, store.jobs.get(job_id).state.value
    return True, to.value


def cannot(job_id: str, state: JobState, to: JobState) -> str:
    """The sentence of a move the job's state refused."""
    verb = VERBS[to]
    if state in TERMINAL:
        return f"Job {job_id} is {state}; only a queued, running or paused job can {verb}."
    return f"Job {job_id} is {state} and cannot {verb} now; try again once it runs."
