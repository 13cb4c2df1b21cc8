"""The states a job and a shard can be in, and the moves between them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PLANNING = "planning"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def can_move_to(self, to: JobState) -> bool:
        return to in _JOB_MOVES[self]


class ShardState(StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"

    def can_move_to(self, to: ShardState) -> bool:
        return to in _SHARD_MOVES[self]


# A job that has ended, and one that has not (its files are in use).
TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE = frozenset(set(JobState) - TERMINAL)

_JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    # planning ends with the shards written and the job running (or failed, naming the input's
    # fault); a job paused while planned is planned all the same, and waits for its resume
    JobState.PLANNING: frozenset(
        {JobState.RUNNING, JobState.PAUSED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.PAUSED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.PAUSED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    # only to retry its failed rows (`store.jobs.retry_failed`): its done shards stay done
    JobState.SUCCEEDED: frozenset({JobState.QUEUED}),
    # a failed or cancelled job keeps its done shards, so rerunning it queues it again (or plans
    # it again, when it failed or was cancelled before its plan was written)
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.PLANNING}),
    JobState.CANCELLED: frozenset({JobState.QUEUED, JobState.PLANNING}),
}

_SHARD_MOVES: dict[ShardState, frozenset[ShardState]] = {
    # pending -> failed: a one-row shard that failed on every attempt, failed without a lease
    ShardState.PENDING: frozenset({ShardState.LEASED, ShardState.FAILED}),
    ShardState.LEASED: frozenset({ShardState.PENDING, ShardState.DONE, ShardState.FAILED}),
    ShardState.DONE: frozenset(),
    # failed -> pending: only when a succeeded job's failed rows are retried
    ShardState.FAILED: frozenset({ShardState.PENDING}),
}
