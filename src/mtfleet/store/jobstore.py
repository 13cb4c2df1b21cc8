"""The job store: jobs and their shards, each move written to the database before it takes effect.

One JobStore per process; it is a few repositories over one schema and one `Database`, and every
repository method is one transaction. SQLite (a file, WAL) serves one machine, PostgreSQL a
cluster; several processes may open the same store at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mtfleet.errors import StoreError
from mtfleet.store.counters import CountersRepository
from mtfleet.store.database import STORE_RETRY_S, Database
from mtfleet.store.events import EventsRepository
from mtfleet.store.jobs import JobsRepository
from mtfleet.store.leases import LeasesRepository
from mtfleet.store.shards import ShardsRepository


class JobStore:
    """Jobs, their shards and the leases on them, in SQLite or PostgreSQL.

    `store.jobs` creates, finds and moves jobs; `store.shards` reads, splits and fails shards;
    `store.leases` hands shards to translators and takes their completions; `store.counters` and
    `store.events` keep what a job did. `clock` returns UTC epoch seconds (tests pass a fake one
    to move leases past their expiry); every method retries transient errors for `retry_s`.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        retry_s: float = STORE_RETRY_S,
    ) -> None:
        self.db = Database(url, clock=clock, retry_s=retry_s)
        self.url = self.db.url
        self.jobs = JobsRepository(self.db)
        self.shards = ShardsRepository(self.db)
        self.leases = LeasesRepository(self.db)
        self.counters = CountersRepository(self.db)
        self.events = EventsRepository(self.db)

    @classmethod
    def for_state_dir(
        cls, state_dir: str | Path, *, clock: Callable[[], float] = time.time
    ) -> JobStore:
        """The default store: the SQLite file `jobs.db` in `state_dir`, created if missing."""
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"Cannot create the state directory {state_dir}: {exc.strerror}."
            ) from None
        return cls(f"sqlite:///{state_dir / 'jobs.db'}", clock=clock)

    def directory(self) -> Path | None:
        """The folder of a SQLite store's file (no job may write there); None for a server."""
        return self.db.directory()

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
