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
from mtfleet.store.shards import move_shard, select_leased_shard, select_shard
from mtfleet.store.states import JobState, ShardState


class LeasesRepository(Repository):
    """The leases on the shards of the store's jobs."""

    @retried
    def take(self, job_id: str, owner: str, ttl_s: float) -> ShardRecord | None:
        """Lease the pending shard with the lowest row_start to `owner` for `ttl_s` seconds: of
        those never leased first, so that a shard that went back (failed, expired) is retried
        after them, and an engine that fails every row fails many shards before any is bisected.

        None when the job is not running (queued, paused, finished) or no shard is pending.
        """
        with self.db.transaction(write=True) as conn:
            # the share lock makes a pause wait for leases being handed out, and the reverse
            if self._job_row(conn, job_id, lock="share").state != JobState.RUNNING:
                return None
            pending = sa.select(shards).where(
                shards.c.job_id == job_id, shards.c.state == ShardState.PENDING
            )
            row = None
            for candidates in (pending.where(shards.c.attempts == 0), pending):
                row = conn.execute(
                    candidates.order_by(shards.c.row_start)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                if row is not None:
                    break
            if row is None:
                return None
            move_shard(
                conn,
                row,
                ShardState.LEASED,
                lease_id=uuid.uuid4().hex,
                lease_owner=owner,
                lease_expires_at=self.db.clock() + ttl_s,
                attempts=row.attempts + 1,
            )
            return shard_record(select_shard(conn, job_id, row.shard_index))

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
    ) -> bool:
        """Mark the shard done with its part file; False, changing nothing, when the lease is stale
        (expired and handed on, released, or completed by another), so a shard counts once.

        True again for the completion already written: a retry after a commit whose answer was
        lost must not have the accepted part deleted as a stale one."""
        with self.db.transaction(write=True) as conn:
            row = select_leased_shard(conn, job_id, index, lease_id)
            if row is None:
                done = select_shard(conn, job_id, index)
                return (
                    done is not None
                    and done.state == ShardState.DONE
                    and done.lease_id == lease_id
                    and done.part_path == str(part_path)
                )
            move_shard(
                conn,
                row,
                ShardState.DONE,
                part_path=str(part_path),
                stats=dict(stats),
                lease_expires_at=None,
                error=None,
            )
            # kept as a counter, so progress never reads every shard's stats
            add_to_counter(conn, job_id, "segments_done", int(stats.get("segments", 0)))
        return True

    @retried
    def release(self, job_id: str, index: int, lease_id: str, error: str | None) -> bool:
        """Give a leased shard back to pending, keeping `error` for the record; False when the
        lease is stale."""
        with self.db.transaction(write=True) as conn:
            row = select_leased_shard(conn, job_id, index, lease_id)
            if row is None:
                return False
            move_shard(conn, row, ShardState.PENDING, **NO_LEASE, error=error or row.error)
        return True

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
                sa.update(shards)
                .where(
                    shards.c.job_id == job_id,
                    shards.c.shard_index == index,
                    shards.c.state == ShardState.LEASED,
                    shards.c.lease_id == current,
                )
                .values(**values)
            ).rowcount
        return updated == 1

    def _release_leases(
        self, conn: sa.Connection, job_id: str, condition: sa.ColumnElement[bool]
    ) -> list[int]:
        rows = conn.execute(
            sa.select(shards)
            .where(shards.c.job_id == job_id, shards.c.state == ShardState.LEASED, condition)
            .order_by(shards.c.shard_index)
            .with_for_update()
        ).all()
        for row in rows:
            move_shard(conn, row, ShardState.PENDING, **NO_LEASE)
        return [row.shard_index for row in rows]
