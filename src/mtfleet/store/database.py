"""The job store's database: one engine and one connection policy that its repositories share.

A `Database` opens SQLite (a file, WAL) or PostgreSQL, creates or upgrades the schema
(`schema.py`), and runs each repository method as one transaction, retried while it fails on a
transient error; callers of one process take turns for its connections (`Turns`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import importlib
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from mtfleet.errors import JobError, StoreError
from mtfleet.retry import retry
from mtfleet.store.schema import ensure_schema, jobs

log = logging.getLogger(__name__)

# any constant works: it only keeps two processes from creating the PostgreSQL tables at once
_SCHEMA_LOCK_KEY = 0x6D74666C
# SQLite waits this long for a lock itself; past it, the retries below take over
_SQLITE_BUSY_TIMEOUT_MS = 5_000
# Connections a store holds at most: its callers take turns for them (`Turns`), so 64 threads of
# a coordinator hold 15 connections of the server. All are kept open: SQLAlchemy's default (5 kept,
# 10 more opened and closed as needed) made a PostgreSQL server start a backend for every tenth
# transaction at 1,000 translators (`bench/ledger.py`).
_POOL_SIZE = 15
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


class Database:
    """The engine of one store and the way its repositories use it: one transaction a call.

    `clock` returns UTC epoch seconds; tests pass a fake one to move leases past their expiry.
    A transient error is retried for `retry_s` seconds; creating the schema only when a SQLite
    file is locked by another process creating it, so a server that cannot be reached at all is
    reported at once.
    """

    def __init__(self, url: str, *, clock: Callable[[], float], retry_s: float) -> None:
        parsed = _parse_url(url)
        # the URL as the user wrote it, to name the store in messages
        self.url = parsed.render_as_string(hide_password=True)
        self.engine = _create_engine(parsed)
        self.clock = clock
        self.retry_s = retry_s
        self.retrying = threading.local()
        self._sqlite_writer = Turns(1)
        self._connection = Turns(_POOL_SIZE)
        if self.engine.dialect.name == "sqlite":
            # two commands starting at once on a new state dir: one waits for the other's schema
            retry(
                self._create_schema, on=TransientStoreError, budget_s=retry_s, on_retry=_log_retry
            )
        else:
            self._create_schema()

    def _create_schema(self) -> None:
        with self.transaction(write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
            ensure_schema(conn, self.url)

    @contextlib.contextmanager
    def transaction(
        self, *, write: bool = False, wait_for_disk: bool = True
    ) -> Iterator[sa.Connection]:
        """One transaction; on SQLite a writing one takes the write lock at BEGIN (IMMEDIATE)
        so two writers queue instead of failing when one upgrades its read lock.

        Without `wait_for_disk`, PostgreSQL commits it before its WAL reaches the disk
        (synchronous_commit off, for this transaction only): a crash of the server or machine may
        lose the last such commits of its last fraction of a second, in order, never the
        database's consistency, as SQLite's synchronous=NORMAL may on a power cut. The callers of
        one process (a coordinator's 64 threads) take turns for a connection, in order
        (`Turns`): SQLAlchemy's pool let a lease wait 11 s for one behind 64 callers
        (`bench/ledger.py`); on SQLite, writers take turns one at a time first, as its busy handler
        makes a waiting writer sleep ever longer while others take the lock (a lease waited 26 s)."""
        writer = (
            self._sqlite_writer.turn()
            if write and self.engine.dialect.name == "sqlite"
            else contextlib.nullcontext()
        )
        try:
            with writer, self._connection.turn(), self.engine.connect() as conn:
                conn.execution_options(mtfleet_write=write)
                with conn.begin():
                    if not wait_for_disk and conn.dialect.name == "postgresql":
                        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
                    yield conn
        except sa.exc.DBAPIError as exc:
            error = TransientStoreError if _transient(exc) else StoreError
            raise error(f"The job store at {self.url} cannot be used: {_reason(exc)}.") from exc

    def directory(self) -> Path | None:
        """The folder of a SQLite store's file (no job may write there); None for a server."""
        database = self.engine.url.database
        if self.engine.dialect.name != "sqlite" or not database:
            return None
        return Path(database).expanduser().resolve().parent

    def close(self) -> None:
        self.engine.dispose()


class Repository:
    """One kind of the store's rows, over the store's `Database`."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        return JobError(f"No job {job_id!r} in the job store at {self.db.url}.")


Method = TypeVar("Method", bound=Callable[..., Any])


def retried(method: Method) -> Method:
    """The repository method, run again (it is one transaction) while it fails on a transient
    error."""

    @functools.wraps(method)
    def retrying(self: Repository, *args: Any, **kwargs: Any) -> Any:
        if getattr(self.db.retrying, "active", False):
            # a method called by another: the outer call retries the whole of it
            return method(self, *args, **kwargs)
        self.db.retrying.active = True
        try:
            return retry(
                lambda: method(self, *args, **kwargs),
                on=TransientStoreError,
                budget_s=self.db.retry_s,
                on_retry=_log_retry,
            )
        finally:
            self.db.retrying.active = False

    return retrying  # type: ignore[return-value]


def _log_retry(error: BaseException, wait_s: float) -> None:
    log.warning("%s Retrying in %.2f s.", error, wait_s)


def upsert_base(conn: sa.Connection, table: sa.Table) -> Any:
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
            # no ping before each transaction (a round trip, three a lease): a connection the
            # server closed fails its transaction, which is retried, and SQLAlchemy drops every
            # connection of the pool opened before it
            pool_size=_POOL_SIZE,
            max_overflow=0,
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
            max_overflow=0,
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
