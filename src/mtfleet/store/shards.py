"""Shards: the row ranges of a job, read in row order, split in halves, failed for good.

Their leases are `leases.py`; both move a shard only through `move_shards`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mtfleet.errors import JobError
from mtfleet.store.database import Repository, retried
from mtfleet.store.records import ShardPlan, ShardRecord, new_shard, shard_record
from mtfleet.store.schema import shards
from mtfleet.store.states import ShardState


class ShardsRepository(Repository):
    """The shards of the store's jobs."""

    @retried
    def exist(self, job_id: str) -> bool:
        with self.db.transaction() as conn:
            self._job_row(conn, job_id)
            return (
                conn.execute(
                    sa.select(shards.c.shard_index).where(shards.c.job_id == job_id)
                ).first()
                is not None
            )

    @retried
    def in_row_order(self, job_id: str) -> list[ShardRecord]:
        """The job's shards in row order, the order their parts are assembled in."""
        with self.db.transaction() as conn:
            self._job_row(conn, job_id)
            rows = conn.execute(
                sa.select(shards).where(shards.c.job_id == job_id).order_by(shards.c.row_start)
            ).all()
        return [shard_record(row) for row in rows]

    @retried
    def page(self, job_id: str, row_start: int, limit: int) -> list[ShardRecord]:
        """Up to `limit` shards from the one starting at `row_start` on, in row order: assembly
        walks a job's shards a page at a time."""
        with self.db.transaction() as conn:
            rows = conn.execute(
                sa.select(shards)
                .where(shards.c.job_id == job_id, shards.c.row_start >= row_start)
                .order_by(shards.c.row_start)
                .limit(limit)
            ).all()
        return [shard_record(row) for row in rows]

    @retried
    def get(self, job_id: str, index: int) -> ShardRecord:
        with self.db.transaction() as conn:
            row = select_shard(conn, job_id, index)
        if row is None:
            raise JobError(f"Job {job_id!r} has no shard {index}.")
        return shard_record(row)

    @retried
    def at_row(self, job_id: str, row: int) -> ShardRecord | None:
        """The shard whose row range holds `row`; None when no shard does (yet)."""
        with self.db.transaction() as conn:
            found = conn.execute(
                sa.select(shards)
                .where(shards.c.job_id == job_id, shards.c.row_start <= row, shards.c.row_end > row)
                .limit(1)
            ).first()
        return None if found is None else shard_record(found)

    @retried
    def failed(self, job_id: str, limit: int | None = None) -> list[ShardRecord]:
        """The job's failed shards in row order, the first `limit` of them when given."""
        with self.db.transaction() as conn:
            self._job_row(conn, job_id)
            rows = conn.execute(
                sa.select(shards)
                .where(shards.c.job_id == job_id, shards.c.state == ShardState.FAILED)
                .order_by(shards.c.row_start)
                .limit(limit)
            ).all()
        return [shard_record(row) for row in rows]

    @retried
    def count_failure(self, job_id: str, index: int) -> int:
        """Counts one more failure of shard `index` toward its bisection; the new count (0 when
        the shard is gone: split or done meanwhile)."""
        with self.db.transaction(write=True) as conn:
            return (
                conn.execute(
                    sa.update(shards)
                    .where(shards.c.job_id == job_id, shards.c.shard_index == index)
                    .values(failures=shards.c.failures + 1)
                    .returning(shards.c.failures)
                ).scalar()
                or 0
            )

    @retried
    def split(self, job_id: str, index: int) -> list[int]:
        """Replace a pending shard by its two halves by row range: new indices, no attempts yet.

        The caller decides when a shard has failed often enough to split. Units and estimated
        tokens are shared out in proportion to rows. Returns the new indices in row order.
        """
        with self.db.transaction(write=True) as conn:
            # the exclusive job lock keeps two splits from taking the same new indices
            self._job_row(conn, job_id, lock="update")
            row = select_shard(conn, job_id, index, lock=True)
            if row is None:
                raise JobError(f"Job {job_id!r} has no shard {index}.")
            if row.state != ShardState.PENDING:
                raise JobError(
                    f"Shard {index} of job {job_id!r} is {row.state}; only a pending shard "
                    "can be split."
                )
            if row.row_end - row.row_start < 2:
                raise JobError(
                    f"Shard {index} of job {job_id!r} holds only row {row.row_start} "
                    "and cannot be split."
                )
            first_index = conn.execute(
                sa.select(sa.func.max(shards.c.shard_index) + 1).where(shards.c.job_id == job_id)
            ).scalar_one()
            rows = row.row_end - row.row_start
            middle = row.row_start + rows // 2
            low_units = row.units * (middle - row.row_start) // rows
            low_tokens = row.est_tokens * (middle - row.row_start) // rows
            halves = [
                ShardPlan(row.row_start, middle, low_units, low_tokens),
                ShardPlan(middle, row.row_end, row.units - low_units, row.est_tokens - low_tokens),
            ]
            conn.execute(
                sa.delete(shards).where(shards.c.job_id == job_id, shards.c.shard_index == index)
            )
            conn.execute(
                sa.insert(shards),
                [new_shard(job_id, first_index + n, half) for n, half in enumerate(halves)],
            )
        return [first_index, first_index + 1]

    @retried
    def fail(self, job_id: str, index: int, lease_id: str | None, error: str) -> bool:
        """Mark the shard failed for good, keeping `error`. With a lease: False when it is stale.
        Without one: the coordinator's own decision, for a pending (or leased) shard."""
        with self.db.transaction(write=True) as conn:
            failed = {"lease_expires_at": None, "error": error}
            if lease_id is not None:
                leased = the_lease(job_id, index, lease_id)
                return bool(
                    move_shards(conn, leased, ShardState.LEASED, ShardState.FAILED, **failed)
                )
            row = select_shard(conn, job_id, index, lock=True)
            if row is None:
                raise JobError(f"Job {job_id!r} has no shard {index}.")
            move_shard(conn, row, ShardState.FAILED, **failed)
        return True


def select_shard(
    conn: sa.Connection, job_id: str, index: int, *, lock: bool = False
) -> sa.Row | None:
    query = sa.select(shards).where(shards.c.job_id == job_id, shards.c.shard_index == index)
    if lock:
        query = query.with_for_update()
    return conn.execute(query).first()


def the_shard(job_id: str, index: int | sa.ColumnElement[int]) -> sa.ColumnElement[bool]:
    return sa.and_(shards.c.job_id == job_id, shards.c.shard_index == index)


def the_lease(job_id: str, index: int, lease_id: str) -> sa.ColumnElement[bool]:
    """The shard while `lease_id` is its current lease."""
    return sa.and_(
        the_shard(job_id, index), shards.c.state == ShardState.LEASED, shards.c.lease_id == lease_id
    )


def move_shard(conn: sa.Connection, row: sa.Row, to: ShardState, **values: Any) -> None:
    """Moves the shard read as `row` (locked): refuses a move its state does not allow."""
    current = ShardState(row.state)
    if not current.can_move_to(to):
        raise JobError(
            f"Shard {row.shard_index} of job {row.job_id!r} is {current} and cannot become {to}."
        )
    move_shards(conn, the_shard(row.job_id, row.shard_index), current, to, **values)


def move_shards(
    conn: sa.Connection,
    where: sa.ColumnElement[bool],
    from_state: ShardState,
    to: ShardState,
    **values: Any,
) -> list[sa.Row]:
    """The one place shards move: refuses a move `from_state` does not allow, then moves the
    shards of `where`, which holds only shards in `from_state` (a current lease, a pending shard
    picked and locked, a row read locked), in one statement that reads nothing first; the shards
    moved, as they are now.

    `where` checks the state itself, rather than this adding it, so that a shard found by its key
    is found by its key: given both, PostgreSQL's planner may find it by its state, reading every
    pending shard's index entry (a lease took 200 ms at 100,000 shards, `bench/ledger.py`)."""
    if not from_state.can_move_to(to):
        raise JobError(f"A {from_state} shard cannot become {to}.")
    return conn.execute(
        sa.update(shards).where(where).values(state=to, **values).returning(*shards.c)
    ).all()
