"""What the store's repositories hand out: jobs, shards and events as frozen records, and the
rows a shard plan becomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mtfleet.errors import JobError
from mtfleet.store.states import JobState, ShardState


@dataclass(frozen=True)
class ShardPlan:
    """One contiguous row range [row_start, row_end) as the planner cut it; with `part_path`,
    done at planning (its units filled from the translation memory), `stats` its completion's."""

    row_start: int
    row_end: int
    units: int
    est_tokens: int
    part_path: str | None = None
    stats: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class JobRecord:
    id: str
    spec: dict[str, Any]
    state: JobState
    created_at: float
    updated_at: float
    error: str | None
    manifest: dict[str, Any] | None
    counters: dict[str, int]


@dataclass(frozen=True)
class ShardRecord:
    job_id: str
    index: int
    row_start: int
    row_end: int
    units: int
    est_tokens: int
    state: ShardState
    lease_id: str | None
    lease_owner: str | None
    lease_expires_at: float | None
    attempts: int
    part_path: str | None
    stats: dict[str, Any]
    error: str | None
    # failures counted toward bisection: once max_attempts, the shard is halved (or one row fails)
    failures: int = 0


@dataclass(frozen=True)
class EventRecord:
    """One entry of a job's history."""

    id: int
    job_id: str
    at: float
    kind: str
    actor: str | None
    message: str


# the lease columns of a shard that no one holds
NO_LEASE: dict[str, Any] = {"lease_id": None, "lease_owner": None, "lease_expires_at": None}


def check_plan(job_id: str, shards_plan: Sequence[ShardPlan]) -> None:
    previous_end = None
    for plan in sorted(shards_plan, key=lambda plan: plan.row_start):
        if plan.row_end <= plan.row_start or (
            previous_end is not None and plan.row_start < previous_end
        ):
            raise JobError(
                f"The shard plan of job {job_id!r} has an empty or overlapping row range "
                f"[{plan.row_start}, {plan.row_end})."
            )
        previous_end = plan.row_end


def new_shard(job_id: str, index: int, plan: ShardPlan) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "shard_index": index,
        "row_start": plan.row_start,
        "row_end": plan.row_end,
        "units": plan.units,
        "est_tokens": plan.est_tokens,
        "state": ShardState.PENDING,
        "attempts": 0,
        "failures": 0,
        "stats": {},
        **NO_LEASE,
        "part_path": None,
        "error": None,
        **(
            {"state": ShardState.DONE, "part_path": plan.part_path, "stats": dict(plan.stats or {})}
            if plan.part_path is not None
            else {}
        ),
    }


def job_record(row: sa.Row, counters: dict[str, int]) -> JobRecord:
    return JobRecord(**{**row._mapping, "state": JobState(row.state)}, counters=counters)


def shard_record(row: sa.Row) -> ShardRecord:
    columns = {**row._mapping, "state": ShardState(row.state)}
    return ShardRecord(index=columns.pop("shard_index"), **columns)
