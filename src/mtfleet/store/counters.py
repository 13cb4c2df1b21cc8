"""Counters and progress: what a job has done, summed by the database, never by reading every
shard."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from mtfleet.store.database import Repository, retried, upsert_base
from mtfleet.store.schema import job_counters, jobs, shards
from mtfleet.store.states import JobState, ShardState


class CountersRepository(Repository):
    """The counters of the store's jobs (`segments_done`, `lease_expiries`, ...) and the progress
    read from them and from the shards' states."""

    @retried
    def add(self, job_id: str, name: str, n: int = 1) -> int:
        """Add `n` to the job's counter `name` (0 when new); returns the new value."""
        with self.db.transaction(write=True) as conn:
            self._job_row(conn, job_id)
            return add_to_counter(conn, job_id, name, n)

    @retried
    def progress(self, job_id: str) -> dict[str, Any]:
        """Shard counts per state and the rows, units and segments of the done shards.

        Aggregated by the database (one row per state), so a poll costs the same for ten shards
        or a hundred thousand; segments are the job's `segments_done` counter, which each accepted
        completion adds its stats' `segments` to.
        """
        with self.db.transaction() as conn:
            self._job_row(conn, job_id)
            per_state = conn.execute(
                sa.select(
                    shards.c.state,
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(shards.c.row_end - shards.c.row_start), 0),
                    sa.func.coalesce(sa.func.sum(shards.c.units), 0),
                )
                .where(shards.c.job_id == job_id)
                .group_by(shards.c.state)
            ).all()
            segments = conn.execute(
                sa.select(job_counters.c.value).where(
                    job_counters.c.job_id == job_id, job_counters.c.name == "segments_done"
                )
            ).scalar()
        counts = {state.value: 0 for state in ShardState}
        rows = {state.value: 0 for state in ShardState}
        units = {state.value: 0 for state in ShardState}
        for state, count, state_rows, state_units in per_state:
            counts[state], rows[state], units[state] = count, int(state_rows), int(state_units)
        return {
            "shards": counts,
            "rows_total": sum(rows.values()),
            "rows_done": rows[ShardState.DONE],
            "units_total": sum(units.values()),
            "units_done": units[ShardState.DONE],
            "segments_done": int(segments or 0),
        }

    @retried
    def progress_by_job(self) -> dict[str, dict[str, Any]]:
        """Per job: its state, rows total and done, and segments done; three aggregate queries
        for the whole store, none per job and no spec read (what a metrics scrape needs)."""
        with self.db.transaction() as conn:
            states = conn.execute(sa.select(jobs.c.id, jobs.c.state)).all()
            rows = conn.execute(
                sa.select(
                    shards.c.job_id,
                    shards.c.state,
                    sa.func.sum(shards.c.row_end - shards.c.row_start),
                ).group_by(shards.c.job_id, shards.c.state)
            ).all()
            segments = conn.execute(
                sa.select(job_counters.c.job_id, job_counters.c.value).where(
                    job_counters.c.name == "segments_done"
                )
            ).all()
        by_job: dict[str, dict[str, Any]] = {
            job_id: {
                "state": JobState(state),
                "rows_total": 0,
                "rows_done": 0,
                "segments_done": 0,
            }
            for job_id, state in states
        }
        for job_id, state, state_rows in rows:
            if job_id in by_job:
                by_job[job_id]["rows_total"] += int(state_rows or 0)
                if state == ShardState.DONE:
                    by_job[job_id]["rows_done"] += int(state_rows or 0)
        for job_id, value in segments:
            if job_id in by_job:
                by_job[job_id]["segments_done"] = int(value or 0)
        return by_job

    @retried
    def work_by_translator(self, job_id: str) -> list[dict[str, Any]]:
        """Per node and translator, the done shards, segments and busy seconds, summed by the
        database from the shards' stats."""
        node = shards.c.stats["node_id"].as_string()
        worker = shards.c.stats["worker_id"].as_string()
        with self.db.transaction() as conn:
            self._job_row(conn, job_id)
            rows = conn.execute(
                sa.select(
                    node,
                    worker,
                    sa.func.count(),
                    sa.func.sum(shards.c.stats["segments"].as_integer()),
                    sa.func.sum(shards.c.stats["elapsed_s"].as_float()),
                )
                .where(shards.c.job_id == job_id, shards.c.state == ShardState.DONE)
                .group_by(node, worker)
            ).all()
        return [
            {
                "node_id": node_id or "?",
                "worker_id": worker_id or "?",
                "shards_done": count,
                "segments": int(segments or 0),
                "busy_s": float(busy or 0.0),
            }
            for node_id, worker_id, count, segments, busy in rows
        ]


def add_to_counter(conn: sa.Connection, job_id: str, name: str, n: int) -> int:
    upsert = upsert_base(conn, job_counters).values(job_id=job_id, name=name, value=n)
    return conn.execute(
        upsert.on_conflict_do_update(
            index_elements=[job_counters.c.job_id, job_counters.c.name],
            set_={"value": job_counters.c.value + upsert.excluded.value},
        ).returning(job_counters.c.value)
    ).scalar_one()
