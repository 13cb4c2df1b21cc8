"""The job store: jobs and their shards, each move written to the database before it takes effect.

One JobStore per process; every method is one transaction. SQLite (a file, WAL) serves one machine,
PostgreSQL a cluster; several processes may open the same store at once.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from mtfleet.errors import JobError, StoreError
from mtfleet.retry import retry
from mtfleet.store.schema import ensure_schema, job_counters, job_events, jobs, shards
from mtfleet.store.states import TERMINAL, JobState, ShardState

log = logging.getLogger(__name__)

# any constant works: it only keeps two processes from creating the PostgreSQL tables at once
_SCHEMA_LOCK_KEY = 0x6D74666C
# SQLite waits this long for a lock itself; past it, the retries below take over
_SQLITE_BUSY_TIMEOUT_MS = 5_000
# Connections a store holds at most (SQLAlchemy's defaults, made explicit): its callers take turns
# for them (`Turns`), so 64 threads of a coordinator hold 15 connections of the server.
_POOL_SIZE = 5
_POOL_OVERFLOW = 10
# A transient error (a server restarting, a connection reset, SQLite busy) is retried, with backoff
# and jitter, for up to this long before it is raised.
STORE_RETRY_S = 60.0
# SQLSTATEs of errors that pass: connection exceptions (class 08), a server shutting down or
# starting up, too many connections, a serialization failure, a deadlock
_TRANSIENT_SQLSTATE_CLASSES = ("08",)
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})
_TRANSIENT_SQLITE_MESSAGES = ("database is locked", "database is busy", "database table is locked")
_POSTGRES_CONNECT_TIMEOUT_S = 10
_URL_FORMS = "sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"


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


class Turns:
    """Callers take turns in the order they came, `limit` at a time (a fair semaphore): none
    waits while a turn is free, none is overtaken, and a turn that ends is handed to the first
    in line, who alone is woken. A thread that holds a turn (a store method called by another)
    goes on without another."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._waiting: collections.deque[threading.Event] = collections.deque()
        self._held = 0
        self._depth = threading.local()

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        depth = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._lock:
                handed = None
                if self._held < self.limit and not self._waiting:
                    self._held += 1
                else:
                    handed = threading.Event()
                    self._waiting.append(handed)
            if handed is not None:
                handed.wait()
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n = depth
            if depth == 0:
                with self._lock:
                    if self._waiting:
                        self._waiting.popleft().set()
                    else:
                        self._held -= 1


class TransientStoreError(StoreError):
    """The store failed in a way that passes: its server restarts, a connection was reset, SQLite
    is locked by another process. Retried for `STORE_RETRY_S` before it is raised."""


Method = TypeVar("Method", bound=Callable[..., Any])


def _retried(method: Method) -> Method:
    """The store method, run again (it is one transaction) while it fails on a transient error."""

    @functools.wraps(method)
    def retrying(self: JobStore, *args: Any, **kwargs: Any) -> Any:
        if getattr(self._retrying, "active", False):
            # a method called by another: the outer call retries the whole of it
            return method(self, *args, **kwargs)
        self._retrying.active = True
        try:
            return retry(
                lambda: method(self, *args, **kwargs),
                on=TransientStoreError,
                budget_s=self.retry_s,
                on_retry=_log_retry,
            )
        finally:
            self._retrying.active = False

    return retrying  # type: ignore[return-value]


def _log_retry(error: BaseException, wait_s: float) -> None:
    log.warning("%s Retrying in %.2f s.", error, wait_s)


class JobStore:
    """Jobs, their shards and the leases on them, in SQLite or PostgreSQL.

    `clock` returns UTC epoch seconds; tests pass a fake one to move leases past their expiry.
    Every method retries transient errors for `retry_s` seconds; the constructor only a SQLite
    file locked by another process creating it, so a server that cannot be reached at all is
    reported at once.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        retry_s: float = STORE_RETRY_S,
    ) -> None:
        parsed = _parse_url(url)
        # the URL as the user wrote it, to name the store in messages
        self.url = parsed.render_as_string(hide_password=True)
        self._engine = _create_engine(parsed)
        self._clock = clock
        self.retry_s = retry_s
        self._retrying = threading.local()
        self._sqlite_writer = Turns(1)
        self._connection = Turns(_POOL_SIZE + _POOL_OVERFLOW)
        if self._engine.dialect.name == "sqlite":
            # two commands starting at once on a new state dir: one waits for the other's schema
            retry(
                self._create_schema, on=TransientStoreError, budget_s=retry_s, on_retry=_log_retry
            )
        else:
            self._create_schema()

    def _create_schema(self) -> None:
        with self._transaction(write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
            ensure_schema(conn, self.url)

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
        database = self._engine.url.database
        if self._engine.dialect.name != "sqlite" or not database:
            return None
        return Path(database).expanduser().resolve().parent

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # jobs

    def create_job(
        self,
        job_id: str,
        spec: Mapping[str, Any],
        shards_plan: Sequence[ShardPlan] | None,
        *,
        identity: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict,
    ) -> JobRecord:
        """Create a job, or return the job already stored under `job_id` when `identity` of
        its spec is equal (a resume; the stored shards are kept as they are). See create_or_find_job."""
        return self.create_or_find_job(job_id, spec, shards_plan, identity=identity)[0]

    @_retried
    def create_or_find_job(
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
            _check_plan(job_id, shards_plan)
        # compare the spec as it will read back: tuples become lists, keys become strings
        spec = json.loads(json.dumps(spec))
        now = self._clock()
        with self._transaction(write=True) as conn:
            inserted = conn.execute(
                _upsert_base(conn, jobs)
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

    @_retried
    def add_plan(self, job_id: str, shards_plan: Sequence[ShardPlan]) -> bool:
        """Writes the shards of a job being planned and sets it running if it is `planning`, in
        one transaction. A job that has shards keeps them (its unit file was planned again); a job
        paused meanwhile stays paused. False, writing nothing, when the job has ended."""
        _check_plan(job_id, shards_plan)
        with self._transaction(write=True) as conn:
            state = JobState(self._job_row(conn, job_id, lock="update").state)
            if state in TERMINAL:
                return False
            has_shards = conn.execute(
                sa.select(shards.c.shard_index).where(shards.c.job_id == job_id).limit(1)
            ).first()
            if has_shards is None:
                self._insert_plan(conn, job_id, shards_plan)
            if state is JobState.PLANNING:
                conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.id == job_id)
                    .values(state=JobState.RUNNING, error=None, updated_at=self._clock())
                )
        return True

    @_retried
    def has_shards(self, job_id: str) -> bool:
        with self._transaction() as conn:
            self._job_row(conn, job_id)
            return (
                conn.execute(
                    sa.select(shards.c.shard_index).where(shards.c.job_id == job_id)
                ).first()
                is not None
            )

    @_retried
    def update_spec(self, job_id: str, spec: Mapping[str, Any]) -> JobRecord:
        """Replaces the stored spec: a resumed job may run with other fleet settings."""
        with self._transaction(write=True) as conn:
            self._job_row(conn, job_id, lock="update")
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(spec=json.loads(json.dumps(spec)), updated_at=self._clock())
            )
            return self._read_job(conn, job_id)

    @_retried
    def get_job(self, job_id: str) -> JobRecord:
        with self._transaction() as conn:
            return self._read_job(conn, job_id)

    def find_job(self, job_id: str) -> JobRecord | None:
        """The job, or None when the store has none of that id."""
        try:
            return self.get_job(job_id)
        except JobError:
            return None

    @_retried
    def list_jobs(self, state: JobState | None = None) -> list[JobRecord]:
        """Jobs oldest first, all of them or those in `state`."""
        query = sa.select(jobs).order_by(jobs.c.created_at, jobs.c.id)
        if state is not None:
            query = query.where(jobs.c.state == state)
        with self._transaction() as conn:
            rows = conn.execute(query).all()
            counters: dict[str, dict[str, int]] = {}
            for counter in conn.execute(sa.select(job_counters)):
                counters.setdefault(counter.job_id, {})[counter.name] = counter.value
        return [_job_record(row, counters.get(row.id, {})) for row in rows]

    @_retried
    def set_job_state(self, job_id: str, state: JobState, error: str | None = None) -> JobRecord:
        """The one place a job moves: refuses a move its state does not allow, then writes it."""
        with self._transaction(write=True) as conn:
            current = JobState(self._job_row(conn, job_id, lock="update").state)
            if not current.can_move_to(state):
                raise JobError(f"Job {job_id!r} is {current} and cannot become {state}.")
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(state=state, error=error, updated_at=self._clock())
            )
            return self._read_job(conn, job_id)

    @_retried
    def set_manifest(self, job_id: str, manifest: Mapping[str, Any]) -> None:
        with self._transaction(write=True) as conn:
            updated = conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(manifest=dict(manifest), updated_at=self._clock())
            ).rowcount
            if not updated:
                raise self._unknown_job(job_id)

    @_retried
    def delete_job(self, job_id: str) -> JobRecord:
        """Deletes a finished job with its shards, counters and events, and returns it as it was.
        An active job is refused (its files are in use): a JobError saying so."""
        with self._transaction(write=True) as conn:
            state = JobState(self._job_row(conn, job_id, lock="update").state)
            if state not in TERMINAL:
                raise JobError(
                    f"Job {job_id!r} is {state}; only a finished (succeeded, failed or "
                    "cancelled) job can be deleted, so cancel it first."
                )
            record = self._read_job(conn, job_id)
            conn.execute(sa.delete(jobs).where(jobs.c.id == job_id))
        return record

    @_retried
    def incr_counter(self, job_id: str, name: str, n: int = 1) -> int:
        """Add `n` to the job's counter `name` (0 when new); returns the new value."""
        with self._transaction(write=True) as conn:
            self._job_row(conn, job_id)
            return self._add_to_counter(conn, job_id, name, n)

    # events: a job's history

    @_retried
    def add_event(
        self, job_id: str, kind: str, message: str, *, actor: str | None = None
    ) -> EventRecord:
        """Records that `kind` happened to job `job_id` (`message`, one sentence), asked for by
        `actor` (a client) or, with None, done by the cluster itself."""
        at = self._clock()
        with self._transaction(write=True) as conn:
            self._job_row(conn, job_id)
            event_id = conn.execute(
                sa.insert(job_events).values(
                    job_id=job_id, at=at, kind=kind, actor=actor, message=message
                )
            ).inserted_primary_key[0]
        return EventRecord(event_id, job_id, at, kind, actor, message)

    @_retried
    def events(self, job_id: str, *, after: int = 0, limit: int = 200) -> list[EventRecord]:
        """Up to `limit` events of the job after event id `after`, oldest first."""
        with self._transaction() as conn:
            self._job_row(conn, job_id)
            rows = conn.execute(
                sa.select(job_events)
                .where(job_events.c.job_id == job_id, job_events.c.id > after)
                .order_by(job_events.c.id)
                .limit(limit)
            ).all()
        return [EventRecord(**row._mapping) for row in rows]

    # shards

    @_retried
    def count_failure(self, job_id: str, index: int) -> int:
        """Counts one more failure of shard `index` toward its bisection; the new count (0 when
        the shard is gone: split or done meanwhile)."""
        with self._transaction(write=True) as conn:
            return (
                conn.execute(
                    sa.update(shards)
                    .where(shards.c.job_id == job_id, shards.c.shard_index == index)
                    .values(failures=shards.c.failures + 1)
                    .returning(shards.c.failures)
                ).scalar()
                or 0
            )

    @_retried
    def shards(self, job_id: str) -> list[ShardRecord]:
        """The job's shards in row order, the order their parts are assembled in."""
        with self._transaction() as conn:
            self._job_row(conn, job_id)
            rows = conn.execute(
                sa.select(shards).where(shards.c.job_id == job_id).order_by(shards.c.row_start)
            ).all()
        return [_shard_record(row) for row in rows]

    @_retried
    def shard_page(self, job_id: str, row_start: int, limit: int) -> list[ShardRecord]:
        """Up to `limit` shards from the one starting at `row_start` on, in row order: assembly
        walks a job's shards a page at a time."""
        with self._transaction() as conn:
            rows = conn.execute(
                sa.select(shards)
                .where(shards.c.job_id == job_id, shards.c.row_start >= row_start)
                .order_by(shards.c.row_start)
                .limit(limit)
            ).all()
        return [_shard_record(row) for row in rows]

    @_retried
    def shard(self, job_id: str, index: int) -> ShardRecord:
        with self._transaction() as conn:
            row = self._select_shard(conn, job_id, index)
        if row is None:
            raise JobError(f"Job {job_id!r} has no shard {index}.")
        return _shard_record(row)

    @_retried
    def lease_shard(self, job_id: str, owner: str, ttl_s: float) -> ShardRecord | None:
        """Lease the pending shard with the lowest row_start to `owner` for `ttl_s` seconds: of
        those never leased first, so that a shard that went back (failed, expired) is retried
        after them, and an engine that fails every row fails many shards before any is bisected.

        None when the job is not running (queued, paused, finished) or no shard is pending.
        """
        with self._transaction(write=True) as conn:
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
            self._move_shard(
                conn,
                row,
                ShardState.LEASED,
                lease_id=uuid.uuid4().hex,
                lease_owner=owner,
                lease_expires_at=self._clock() + ttl_s,
                attempts=row.attempts + 1,
            )
            return _shard_record(self._select_shard(conn, job_id, row.shard_index))

    @_retried
    def renew_lease(self, job_id: str, index: int, lease_id: str, ttl_s: float) -> bool:
        """Push the lease's expiry to now + `ttl_s`; False when the lease is no longer current."""
        return self._update_current_lease(
            job_id, index, lease_id, lease_expires_at=self._clock() + ttl_s
        )

    @_retried
    def hand_over_lease(
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
            lease_expires_at=self._clock() + ttl_s,
        )

    def _update_current_lease(
        self, job_id: str, index: int, current: str, /, **values: object
    ) -> bool:
        """Sets `values` on the shard while `current` is its lease id; False otherwise."""
        with self._transaction(write=True) as conn:
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

    @_retried
    def complete_shard(
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
        with self._transaction(write=True) as conn:
            row = self._select_leased_shard(conn, job_id, index, lease_id)
            if row is None:
                done = self._select_shard(conn, job_id, index)
                return (
                    done is not None
                    and done.state == ShardState.DONE
                    and done.lease_id == lease_id
                    and done.part_path == str(part_path)
                )
            self._move_shard(
                conn,
                row,
                ShardState.DONE,
                part_path=str(part_path),
                stats=dict(stats),
                lease_expires_at=None,
                error=None,
            )
            # kept as a counter, so progress never reads every shard's stats
            self._add_to_counter(conn, job_id, "segments_done", int(stats.get("segments", 0)))
        return True

    @_retried
    def release_shard(self, job_id: str, index: int, lease_id: str, error: str | None) -> bool:
        """Give a leased shard back to pending, keeping `error` for the record; False when the
        lease is stale."""
        with self._transaction(write=True) as conn:
            row = self._select_leased_shard(conn, job_id, index, lease_id)
            if row is None:
                return False
            self._move_shard(conn, row, ShardState.PENDING, **_NO_LEASE, error=error or row.error)
        return True

    @_retried
    def release_owner(self, job_id: str, owner: str) -> list[int]:
        """Put every shard leased to `owner` (a translator that died) back to pending."""
        with self._transaction(write=True) as conn:
            return self._release_leases(conn, job_id, shards.c.lease_owner == owner)

    @_retried
    def release_leases(self, job_id: str) -> list[int]:
        """Put every leased shard of the job back to pending: its translators were stopped (a
        cancelled job holds no lease)."""
        with self._transaction(write=True) as conn:
            return self._release_leases(conn, job_id, sa.true())

    @_retried
    def expire_leases(self, job_id: str) -> list[int]:
        """Put every shard whose lease is past its expiry back to pending, counting each in the
        job's counter `lease_expiries`."""
        with self._transaction(write=True) as conn:
            expired = self._release_leases(conn, job_id, shards.c.lease_expires_at <= self._clock())
            if expired:
                self._add_to_counter(conn, job_id, "lease_expiries", len(expired))
            return expired

    @_retried
    def split_shard(self, job_id: str, index: int) -> list[int]:
        """Replace a pending shard by its two halves by row range: new indices, no attempts yet.

        The caller decides when a shard has failed often enough to split. Units and estimated
        tokens are shared out in proportion to rows. Returns the new indices in row order.
        """
        with self._transaction(write=True) as conn:
            # the exclusive job lock keeps two splits from taking the same new indices
            self._job_row(conn, job_id, lock="update")
            row = self._select_shard(conn, job_id, index, lock=True)
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
                [_new_shard(job_id, first_index + n, half) for n, half in enumerate(halves)],
            )
        return [first_index, first_index + 1]

    @_retried
    def fail_shard(self, job_id: str, index: int, lease_id: str | None, error: str) -> bool:
        """Mark the shard failed for good, keeping `error`. With a lease: False when it is stale.
        Without one: the coordinator's own decision, for a pending (or leased) shard."""
        with self._transaction(write=True) as conn:
            if lease_id is not None:
                row = self._select_leased_shard(conn, job_id, index, lease_id)
                if row is None:
                    return False
            else:
                row = self._select_shard(conn, job_id, index, lock=True)
                if row is None:
                    raise JobError(f"Job {job_id!r} has no shard {index}.")
            self._move_shard(conn, row, ShardState.FAILED, lease_expires_at=None, error=error)
        return True

    @_retried
    def retry_failed(self, job_id: str) -> list[int]:
        """Queues a succeeded job again with its failed shards pending, their failures counted
        afresh (its done shards stay done); the shards retried. A job that did not succeed, or
        has no failed shard, is a JobError saying so and changes nothing."""
        with self._transaction(write=True) as conn:
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
                self._move_shard(conn, row, ShardState.PENDING, **_NO_LEASE, failures=0)
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(state=JobState.QUEUED, error=None, updated_at=self._clock())
            )
        return [row.shard_index for row in rows]

    @_retried
    def progress(self, job_id: str) -> dict[str, Any]:
        """Shard counts per state and the rows, units and segments of the done shards.

        Aggregated by the database (one row per state), so a poll costs the same for ten shards
        or a hundred thousand; segments are the job's `segments_done` counter, which each accepted
        completion adds its stats' `segments` to.
        """
        with self._transaction() as conn:
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

    @_retried
    def progress_by_job(self) -> dict[str, dict[str, Any]]:
        """Per job: its state, rows total and done, and segments done; three aggregate queries
        for the whole store, none per job and no spec read (what a metrics scrape needs)."""
        with self._transaction() as conn:
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

    @_retried
    def failed_shards(self, job_id: str, limit: int | None = None) -> list[ShardRecord]:
        """The job's failed shards in row order, the first `limit` of them when given."""
        with self._transaction() as conn:
            self._job_row(conn, job_id)
            rows = conn.execute(
                sa.select(shards)
                .where(shards.c.job_id == job_id, shards.c.state == ShardState.FAILED)
                .order_by(shards.c.row_start)
                .limit(limit)
            ).all()
        return [_shard_record(row) for row in rows]

    @_retried
    def work_by_translator(self, job_id: str) -> list[dict[str, Any]]:
        """Per node and translator, the done shards, segments and busy seconds, summed by the
        database from the shards' stats."""
        node = shards.c.stats["node_id"].as_string()
        worker = shards.c.stats["worker_id"].as_string()
        with self._transaction() as conn:
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

    @_retried
    def shard_at(self, job_id: str, row: int) -> ShardRecord | None:
        """The shard whose row range holds `row`; None when no shard does (yet)."""
        with self._transaction() as conn:
            found = conn.execute(
                sa.select(shards)
                .where(shards.c.job_id == job_id, shards.c.row_start <= row, shards.c.row_end > row)
                .limit(1)
            ).first()
        return None if found is None else _shard_record(found)

    # private

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction; on SQLite a writing one takes the write lock at BEGIN (IMMEDIATE)
        so two writers queue instead of failing when one upgrades its read lock. The callers of
        one process (a coordinator's 64 threads) take turns for a connection, in order
        (`Turns`): SQLAlchemy's pool let a lease wait 11 s for one behind 64 callers
        (`bench/ledger.py`); on SQLite, writers take turns one at a time first, as its busy handler
        makes a waiting writer sleep ever longer while others take the lock (a lease waited 26 s)."""
        writer = (
            self._sqlite_writer.turn()
            if write and self._engine.dialect.name == "sqlite"
            else contextlib.nullcontext()
        )
        try:
            with writer, self._connection.turn(), self._engine.connect() as conn:
                conn.execution_options(mtfleet_write=write)
                with conn.begin():
                    yield conn
        except sa.exc.DBAPIError as exc:
            error = TransientStoreError if _transient(exc) else StoreError
            raise error(f"The job store at {self.url} cannot be used: {_reason(exc)}.") from exc

    def _insert_plan(
        self, conn: sa.Connection, job_id: str, shards_plan: Sequence[ShardPlan]
    ) -> None:
        if shards_plan:
            conn.execute(
                sa.insert(shards),
                [_new_shard(job_id, index, plan) for index, plan in enumerate(shards_plan)],
            )

    def _job_row(
        self, conn: sa.Connection, job_id: str, lock: Literal["share", "update"] | None = None
    ) -> sa.Row:
        """The job's id and state, row-locked on PostgreSQL when asked (SQLite locks the whole
        file at BEGIN IMMEDIATE)."""
        query = sa.select(jobs.c.id, jobs.c.state).where(jobs.c.id == job_id)
        if lock is not None:
            query = query.with_for_update(read=lock == "share")
        row = conn.execute(query).first()
        if row is None:
            raise self._unknown_job(job_id)
        return row

    def _unknown_job(self, job_id: str) -> JobError:
        return JobError(f"No job {job_id!r} in the job store at {self.url}.")

    def _read_job(self, conn: sa.Connection, job_id: str) -> JobRecord:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise self._unknown_job(job_id)
        counters = conn.execute(
            sa.select(job_counters.c.name, job_counters.c.value).where(
                job_counters.c.job_id == job_id
            )
        ).all()
        return _job_record(row, {name: value for name, value in counters})

    def _add_to_counter(self, conn: sa.Connection, job_id: str, name: str, n: int) -> int:
        upsert = _upsert_base(conn, job_counters).values(job_id=job_id, name=name, value=n)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=[job_counters.c.job_id, job_counters.c.name],
                set_={"value": job_counters.c.value + upsert.excluded.value},
            )
        )
        return conn.execute(
            sa.select(job_counters.c.value).where(
                job_counters.c.job_id == job_id, job_counters.c.name == name
            )
        ).scalar_one()

    def _select_shard(
        self, conn: sa.Connection, job_id: str, index: int, *, lock: bool = False
    ) -> sa.Row | None:
        query = sa.select(shards).where(shards.c.job_id == job_id, shards.c.shard_index == index)
        if lock:
            query = query.with_for_update()
        return conn.execute(query).first()

    def _select_leased_shard(
        self, conn: sa.Connection, job_id: str, index: int, lease_id: str
    ) -> sa.Row | None:
        """The shard, locked, if `lease_id` is its current lease; None when that lease is stale."""
        row = self._select_shard(conn, job_id, index, lock=True)
        if row is None or row.state != ShardState.LEASED or row.lease_id != lease_id:
            return None
        return row

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
            self._move_shard(conn, row, ShardState.PENDING, **_NO_LEASE)
        return [row.shard_index for row in rows]

    def _move_shard(self, conn: sa.Connection, row: sa.Row, to: ShardState, **values: Any) -> None:
        """The one place a shard moves: refuses a move its state does not allow, then writes it."""
        current = ShardState(row.state)
        if not current.can_move_to(to):
            raise JobError(
                f"Shard {row.shard_index} of job {row.job_id!r} is {current} "
                f"and cannot become {to}."
            )
        conn.execute(
            sa.update(shards)
            .where(shards.c.job_id == row.job_id, shards.c.shard_index == row.shard_index)
            .values(state=to, **values)
        )


_NO_LEASE: dict[str, Any] = {"lease_id": None, "lease_owner": None, "lease_expires_at": None}


def _upsert_base(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that can take ON CONFLICT, in the connection's dialect (sqlite or postgresql):
    its module is loaded with the engine, so a process on SQLite never loads PostgreSQL's."""
    return importlib.import_module(f"sqlalchemy.dialects.{conn.dialect.name}").insert(table)


def _parse_url(url: str) -> sa.URL:
    try:
        return sa.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"The job store URL {url!r} is not a URL; use {_URL_FORMS}.") from None


def _create_engine(parsed: sa.URL) -> sa.Engine:
    url = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        connect_args = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = _POSTGRES_CONNECT_TIMEOUT_S
        return sa.create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            connect_args=connect_args,
            pool_pre_ping=True,
            pool_size=_POOL_SIZE,
            max_overflow=_POOL_OVERFLOW,
        )
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StoreError(
                f"The job store URL {url!r} names no file; other processes must be able to "
                "open the store, so use sqlite:///PATH."
            )
        engine = sa.create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            pool_size=_POOL_SIZE,
            max_overflow=_POOL_OVERFLOW,
        )
        sa.event.listen(engine, "connect", _prepare_sqlite_connection)
        sa.event.listen(engine, "begin", _begin_sqlite_transaction)
        return engine
    raise StoreError(
        f"The job store URL {url!r} names an unsupported database {backend!r}; use {_URL_FORMS}."
    )


def _prepare_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 must not emit BEGIN itself: _begin_sqlite_transaction does, in the mode it needs
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    # SQLite's advice for WAL: a commit is safe from any crash of a process at once, and reaches
    # the disk at the next checkpoint; a power cut may lose the last commits (leases, completions
    # a translator then makes again), never the database. FULL fsynced every commit: a job store
    # that takes 3 commits a shard wrote 110 shards/s at most (`bench/ledger.py`).
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _begin_sqlite_transaction(conn: sa.Connection) -> None:
    write = conn.get_execution_options().get("mtfleet_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _transient(exc: sa.exc.DBAPIError) -> bool:
    """The error passes by itself: judged by its SQLSTATE on PostgreSQL, its message on SQLite."""
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate:
        return sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES) or sqlstate in _TRANSIENT_SQLSTATES
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    if type(exc.orig).__module__.startswith("sqlite3"):
        message = str(exc.orig).lower()
        return any(known in message for known in _TRANSIENT_SQLITE_MESSAGES)
    # psycopg gives no SQLSTATE when no server answered: refused, reset or closed connections
    return True


def _reason(exc: sa.exc.DBAPIError) -> str:
    lines = str(exc.orig).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc.orig).__name__


def _check_plan(job_id: str, shards_plan: Sequence[ShardPlan]) -> None:
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


def _new_shard(job_id: str, index: int, plan: ShardPlan) -> dict[str, Any]:
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
        **_NO_LEASE,
        "part_path": None,
        "error": None,
        **(
            {"state": ShardState.DONE, "part_path": plan.part_path, "stats": dict(plan.stats or {})}
            if plan.part_path is not None
            else {}
        ),
    }


def _job_record(row: sa.Row, counters: dict[str, int]) -> JobRecord:
    return JobRecord(**{**row._mapping, "state": JobState(row.state)}, counters=counters)


def _shard_record(row: sa.Row) -> ShardRecord:
    columns = {**row._mapping, "state": ShardState(row.state)}
    return ShardRecord(index=columns.pop("shard_index"), **columns)
