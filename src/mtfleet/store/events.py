"""Events: a job's history, who did what to it and what happened to it, in order."""

from __future__ import annotations

import sqlalchemy as sa

from mtfleet.store.database import Repository, retried
from mtfleet.store.records import EventRecord
from mtfleet.store.schema import job_events


class EventsRepository(Repository):
    """The histories of the store's jobs."""

    @retried
    def add(self, job_id: str, kind: str, message: str, *, actor: str | None = None) -> EventRecord:
        """Records that `kind` happened to job `job_id` (`message`, one sentence), asked for by
        `actor` (a client) or, with None, done by the cluster itself."""
        at = self.db.clock()
        with self.db.transaction(write=True) as conn:
            self._job_row(conn, job_id)
            event_id = conn.execute(
                sa.insert(job_events).values(
                    job_id=job_id, at=at, kind=kind, actor=actor, message=message
                )
            ).inserted_primary_key[0]
        return EventRecord(event_id, job_id, at, kind, actor, message)

    @retried
    def page(self, job_id: str, *, after: int = 0, limit: int = 200) -> list[EventRecord]:
        """Up to `limit` events of the job after event id `after`, oldest first."""
        with self.db.transaction() as conn:
            self._job_row(conn, job_id)
            rows = conn.execute(
                sa.select(job_events)
                .where(job_events.c.job_id == job_id, job_events.c.id > after)
                .order_by(job_events.c.id)
                .limit(limit)
            ).all()
        return [EventRecord(**row._mapping) for row in rows]
