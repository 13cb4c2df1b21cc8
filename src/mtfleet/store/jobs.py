"""Jobs: their rows, specs, states and manifests, and the plan of shards each is created with."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from mtfleet.errors import JobError
from mtfleet.store.database import Repository, retried, upsert_base
from mtfleet.store.records import (
    NO_LEASE,
    JobRecord,
    ShardPlan,
    check_plan,
    job_record,
    new_shard,
)
from mtfleet.store.schema import job_counters, jobs, shards
from mtfleet.store.shards import move_shard
from mtfleet.store.states import TERMINAL, JobState, ShardState


class JobsRepository(Repository):
    """The store's jobs: each created once under its id, moved only by `set_state`."""

    def create(
        self,
        job_id: str,
        spec: Mapping[str, Any],
        shards_plan: Sequence[ShardPlan] | None,
        *,
        identity: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict,
    ) -> JobRecord:
        """Create a job, or return the job already stored under `job_id` when `identity` of
        its spec is equal (a resume; the stored shards are kept as they are). See create_or_find."""
        return self.create_or_find(job_id, spec, shards_plan, identity=identity)[0]

    @retried
    def create_or_find(
        self,
        job_id: str,
        spec: Mapping[str, Any],
        shards_plan: Sequence[ShardPlan] | None,
        *,
        identity: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict,
    ) -> tuple[JobRecord, bool]:
        """Create a queued job with its pending shards (or, with no plan yet, a `planning` job
        without shards), and say True; or find the job stored under `job_id` and say False.

        Two specs name the same job when `identity` of each is equal (settings that do not change
        the output may differ); a different one is a JobError. Concurrent calls create one job.
        """
        if shards_plan is not None:
            check_plan(job_id, shards_plan)
        # compare the spec as it will read back: tuples become lists, keys become strings
        spec = json.loads(json.dumps(spec))
        now = self.db.clock()
        with self.db.transaction(write=True) as conn:
            inserted = conn.execute(
                upsert_base(conn, jobs)
                .values(
                    id=job_id,
                    spec=spec,
                    state=JobState.PLANNING if shards_plan is None else JobState.QUEUED,
                    created_at=now,
                    updated_at=now,
                    error=None,
                    manifest=None,
                )
                .on_conflict_do_nothing(index_elements=[jobs.c.id])
                .returning(jobs.c.id)
            ).first()
            if inserted is not None:
                if shards_plan is not None:
                    self._insert_plan(conn, job_id, shards_plan)
                return self._read_job(conn, job_id), True
            existing = self._read_job(conn, job_id)
        found, wanted = identity(existing.spec), identity(spec)
        if found != wanted:
            differing = sorted(
                key for key in found.keys() | wanted.keys() if found.get(key) != wanted.get(key)
            )
            raise JobError(
                f"Job {job_id!r} already exists with a different spec "
                f"(differs in {', '.join(differing)}); rerun it with the same settings "
                "or choose another job id."
            )
        return existing, False

    @retried
    def add_plan(self, job_id: str, shards_plan: Sequence[ShardPlan], first_index: int = 0) -> bool:
        """Writes shards of a job being planned, the first numbered `first_index`, and sets it
        running if it is `planning`, in one transaction. A shard it has already keeps its own (a
        plan resumed, or a unit file planned again); a job paused meanwhile stays paused. False,
        writing nothing, when the job has ended."""
        check_plan(job_id, shards_plan)
        with self.db.transaction(write=True) as conn:
            state = JobState(self._job_row(conn, job_id, lock="update").state)
            if state in TERMINAL:
                return False
            stored, stored_end = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(shards.c.row_end), 0))
                .select_from(shards)
                .where(shards.c.job_id == job_id)
            ).one()
            added = shards_plan[max(0, stored - first_index) :]
            if added and added[0].row_start != stored_end:
                raise JobError(
                    f"The shard plan of job {job_id!r} does not go on where its stored shards end "
                    f"(row {stored_end})."
                )
            self._insert_plan(conn, job_id, added, max(stored, first_index))
            if state is JobState.PLANNING:
                conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(state=JobState.RUNNING, error=None, updated_at=self.db.clock())
                )
        return True

    @retried
    def update_spec(self, job_id: str, spec: Mapping[str, Any]) -> JobRecord:
        """Replaces the stored spec: a resumed job may run with other fleet settings."""
        with self.db.transaction(write=True) as conn:
            self._job_row(conn, job_id, lock="update")
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(spec=json.loads(json.dumps(spec)), updated_at=self.db.clock())
            )
            return self._read_job(conn, job_id)

    @retried
    def get(self, job_id: str) -> JobRecord:
        with self.db.transaction() as conn:
            return self._read_job(conn, job_id)

    def find(self, job_id: str) -> JobRecord | None:
        """The job, or None when the store has none of that id."""
        try:
            return self.get(job_id)
        except JobError:
            return None

    @retried
    def all(self, state: JobState | None = None) -> list[JobRecord]:
        """Jobs oldest first, all of them or those in `state`."""
        query = sa.select(jobs).order_by(jobs.c.created_at, jobs.c.id)
        if state is not None:
            query = query.where(jobs.c.state == state)
        with self.db.transaction() as conn:
            rows = conn.execute(query).all()
            counters: dict[str, dict[str, int]] = {}
            for counter in conn.execute(sa.select(job_counters)):
                counters.setdefault(counter.job_id, {})[counter.name] = counter.value
        return [job_record(row, counters.get(row.id, {})) for row in rows]

    @retried
    def set_state(self, job_id: str, state: JobState, error: str | None = None) -> JobRecord:
        """The one place a job moves: refuses a move its state does not allow, then writes it."""
        with self.db.transaction(write=True) as conn:
            current = JobState(self._job_row(conn, job_id, lock="update").state)
            if not current.can_move_to(state):
                raise JobError(f"Job {job_id!r} is {current} and cannot become {state}.")
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(state=state, error=error, updated_at=self.db.clock())
            )
            return self._read_job(conn, job_id)

    @retried
    def set_manifest(self, job_id: str, manifest: Mapping[str, Any]) -> None:
        with self.db.transaction(write=True) as conn:
            updated = conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(manifest=dict(manifest), updated_at=self.db.clock())
            ).rowcount
            if not updated:
                raise self._unknown_job(job_id)

    @retried
    def delete(self, job_id: str) -> JobRecord:
        """Deletes a finished job with its shards, counters and events, and returns it as it was.
        An active job is refused (its files are in use): a JobError saying so."""
        with self.db.transaction(write=True) as conn:
            state = JobState(self._job_row(conn, job_id, lock="update").state)
            if state not in TERMINAL:
                raise JobError(
                    f"Job {job_id!r} is {state}; only a finished (succeeded, failed or "
                    "cancelled) job can be deleted, so cancel it first."
                )
            record = self._read_job(conn, job_id)
            conn.execute(sa.delete(jobs).where(jobs.c.id == job_id))
        return record

    @retried
    def retry_failed(self, job_id: str) -> list[int]:
        """Queues a succeeded job again with its failed shards pending, their failures counted
        afresh (its done shards stay done); the shards retried. A job that did not succeed, or
        has no failed shard, is a JobError saying so and changes nothing."""
        with self.db.transaction(write=True) as conn:
            state = JobState(self._job_row(conn, job_id, lock="update").state)
            if state is not JobState.SUCCEEDED:
                raise JobError(
                    f"Job {job_id} is {state}; only the failed rows of a succeeded job are "
                    "retried (submit it again to go on with it)."
                )
            rows = conn.execute(
                sa.select(shards)
                .where(shards.c.job_id == job_id, shards.c.state == ShardState.FAILED)
                .order_by(shards.c.shard_index)
                .with_for_update()
            ).all()
            if not rows:
                raise JobError(f"Job {job_id} has no failed rows to retry.")
            for row in rows:
                move_shard(conn, row, ShardState.PENDING, **NO_LEASE, failures=0)
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(state=JobState.QUEUED, error=None, updated_at=self.db.clock())
            )
        return [row.shard_index for row in rows]

    def _insert_plan(
        self, conn: sa.Connection, job_id: str, shards_plan: Sequence[ShardPlan], first: int = 0
    ) -> None:
        if shards_plan:
            conn.execute(
                sa.insert(shards),
                [new_shard(job_id, index, plan) for index, plan in enumerate(shards_plan, first)],
            )

    def _read_job(self, conn: sa.Connection, job_id: str) -> JobRecord:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise self._unknown_job(job_id)
        counters = conn.execute(
            sa.select(job_counters.c.name, job_counters.c.value).where(
                job_counters.c.job_id == job_id
            )
        ).all()
        return job_record(row, {name: value for name, value in counters})
