"""Leases: a pending shard handed to one translator until it completes, fails, expires or is
released; a lease id that is no longer current changes nothing, so a completion counts once."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mtfleet.store.counters import add_to_counter
from mtfleet.store.database import Repository, retried
from mtfleet.store.records import NO_LEASE, ShardRecord, shard_record
from mtfleet.store.schema import shards
from mtfleet.store.shards import move_shard, move_shards, select_shard, the_lease, the_shard
from mtfleet.store.states import JobState, ShardState


class LeasesRepository(Repository):
    """The leases on the shards of the store's jobs."""

    @retried
    def take(
        self, job_id: str, owner: str, ttl_s: float, rows_planned: int | None = None
    ) -> ShardRecord | None:
        """Lease the pending shard with the lowest row_start to `owner` for `ttl_s` seconds: of
        those never leased first, so that a shard that went back (failed, expired) is retried
        after them, and an engine that fails every row fails many shards before any is bisected.
        With `rows_planned` (the job is still planned), only of shards within those rows.

        None when the job is not running (queued, paused, finished) or no shard is pending.
        """
        planned = () if rows_planned is None else (shards.c.row_end <= rows_planned,)
        with self.db.transaction(write=True) as conn:
            # the share lock makes a pause wait for leases being handed out, and the reverse; it
            # comes first, as in every transaction that locks a job and its shards
            if self._job_row(conn, job_id, lock="share").state != JobState.RUNNING:
                return None
            leased = move_shards(
                conn,
                the_shard(
                    job_id,
                    sa.func.coalesce(
                        _first_pending(job_id, shards.c.attempts == 0, *planned),
                        _first_pending(job_id, *planned),
                    ),
                ),
                ShardState.PENDING,
                ShardState.LEASED,
                lease_id=uuid.uuid4().hex,
                lease_owner=owner,
                lease_expires_at=self.db.clock() + ttl_s,
                attempts=shards.c.attempts + 1,
            )
        return shard_record(leased[0]) if leased else None

    @retried
    def renew(self, job_id: str, index: int, lease_id: str, ttl_s: float) -> bool:
        """Push the lease's expiry to now + `ttl_s`; False when the lease is no longer current."""
        return self._update_current_lease(
            job_id, index, lease_id, lease_expires_at=self.db.clock() + ttl_s
        )

    @retried
    def hand_over(
        self, job_id: str, index: int, lease_id: str, to_lease_id: str, to_owner: str, ttl_s: float
    ) -> bool:
        """Make `to_lease_id` of `to_owner` the shard's lease in place of `lease_id` (a backup
        that completed first, or goes on alone): `lease_id` is stale from then on. False,
        changing nothing, when `lease_id` is no longer current."""
        return self._update_current_lease(
            job_id,
            index,
            lease_id,
            lease_id=to_lease_id,
            lease_owner=to_owner,
            lease_expires_at=self.db.clock() + ttl_s,
        )

    @retried
    def complete(
        self,
        job_id: str,
        index: int,
        lease_id: str,
        part_path: str | Path,
        stats: Mapping[str, Any],
        counted: Mapping[str, int] | None = None,
    ) -> bool:
        """Mark the shard done with its part file, and add `counted` to the job's counters of
        those names; False, changing nothing, when the lease is stale (expired and handed on,
        released, or completed by another), so a shard counts once.

        True again for the completion already written: a retry after a commit whose answer was
        lost must not have the accepted part deleted as a stale one.

        Committed without waiting for the disk: every completion waits for the one before to
        commit (they add to one counter), and a completion lost in a crash of the database
        server is a shard translated again, never one lost or counted twice."""
        with self.db.transaction(write=True, wait_for_disk=False) as conn:
            if not move_shards(
                conn,
                the_lease(job_id, index, lease_id),
                ShardState.LEASED,
                ShardState.DONE,
                part_path=str(part_path),
                stats=dict(stats),
                lease_expires_at=None,
                error=None,
            ):
                done = select_shard(conn, job_id, index)
                return (
                    done is not None
                    and done.state == ShardState.DONE
                    and done.lease_id == lease_id
                    and done.part_path == str(part_path)
                )
            # kept as counters, so progress never reads every shard's stats; written last, as
            # every completion waits for their row locks until the one before has committed
            for name, n in (counted or {}).items():
                add_to_counter(conn, job_id, name, n)
            add_to_counter(conn, job_id, "segments_done", int(stats.get("segments", 0)))
        return True

    @retried
    def release(self, job_id: str, index: int, lease_id: str, error: str | None) -> bool:
        """Give a leased shard back to pending, keeping `error` for the record; False when the
        lease is stale."""
        kept = {"error": error} if error else {}
        with self.db.transaction(write=True) as conn:
            return bool(
                move_shards(
                    conn,
                    the_lease(job_id, index, lease_id),
                    ShardState.LEASED,
                    ShardState.PENDING,
                    **NO_LEASE,
                    **kept,
                )
            )

    @retried
    def release_owner(self, job_id: str, owner: str) -> list[int]:
        """Put every shard leased to `owner` (a translator that died) back to pending."""
        with self.db.transaction(write=True) as conn:
            return self._release_leases(conn, job_id, shards.c.lease_owner == owner)

    @retried
    def release_all(self, job_id: str) -> list[int]:
        """Put every leased shard of the job back to pending: its translators were stopped (a
        cancelled job holds no lease)."""
        with self.db.transaction(write=True) as conn:
            return self._release_leases(conn, job_id, sa.true())

    @retried
    def expire(self, job_id: str) -> list[int]:
        """Put every shard whose lease is past its expiry back to pending, counting each in the
        job's counter `lease_expiries`."""
        with self.db.transaction(write=True) as conn:
            expired = self._release_leases(
                conn, job_id, shards.c.lease_expires_at <= self.db.clock()
            )
            if expired:
                add_to_counter(conn, job_id, "lease_expiries", len(expired))
            return expired

    def _update_current_lease(
        self, job_id: str, index: int, current: str, /, **values: object
    ) -> bool:
        """Sets `values` on the shard while `current` is its lease id; False otherwise."""
        with self.db.transaction(write=True) as conn:
            updated = conn.execute(
                sa.update(shards).where(the_lease(job_id, index, current)).values(**values)
            ).rowcount
        return updated == 1

    def _release_leases(
        self, conn: sa.Connection, job_id: str, condition: sa.ColumnElement[bool]
    ) -> list[int]:
        # locked in index order, so that two releases of many shards never wait for each other
        rows = conn.execute(
            sa.select(shards)
            .where(shards.c.job_id == job_id, shards.c.state == ShardState.LEASED, condition)
            .order_by(shards.c.shard_index)
            .with_for_update()
        ).all()
        for row in rows:
            move_shard(conn, row, ShardState.PENDING, **NO_LEASE)
        return [row.shard_index for row in rows]


def _first_pending(job_id: str, *conditions: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
    """The index of the job's pending shard of `conditions` with the lowest row_start, locked;
    one that another lease holds locked is passed over, not waited for."""
    return (
        sa.select(shards.c.shard_index)
        .where(shards.c.job_id == job_id, shards.c.state == ShardState.PENDING, *conditions)
        .order_by(shards.c.row_start)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
