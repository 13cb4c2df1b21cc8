"""The states a job and a shard can be in, and the moves between them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
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


_JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.PAUSED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.PAUSED: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    # a failed or cancelled job keeps its done shards, so rerunning it queues it again
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}

_SHARD_MOVES: dict[ShardState, frozenset[ShardState]] = {
    # pending -> failed: a one-row shard that failed on every attempt, failed without a lease
    ShardState.PENDING: frozenset({ShardState.LEASED, ShardState.FAILED}),
    ShardState.LEASED: frozenset({ShardState.PENDING, ShardState.DONE, ShardState.FAILED}),
    ShardState.DONE: frozenset(),
    ShardState.FAILED: frozenset(),
}
