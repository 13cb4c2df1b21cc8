"""The translation memory: every segment a job translated, kept for the jobs that come after.

A segment's translation and its health flags are kept under the engine signature that made them
(`memory_signature`: the model's weights, the engine, its compute type and decoding settings, the
languages, the protection, glossary and checks; never where or how fast it ran) and the sha256
of the segment's text. A job translates only the segments the memory does not hold for its
signature; the others it takes from it. Entries are written by the coordinator's memory writer
(`cluster/memory_writer.py`: several completions a transaction, never one a segment, with the
driver's executemany on SQLite and COPY on PostgreSQL); the least recently used go first once
the memory passes its size (`evict`). A repository over the job store's schema (`mtfleet_memory`), on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mtfleet.store.schema import memory

if TYPE_CHECKING:
    from mtfleet.store.jobstore import JobStore

# Entries read or evicted in one query.
_CHUNK = 500
# Hashes looked up in one query, a shard's in one or two: under SQLite's 32,766 bound parameters.
_LOOKUP_CHUNK = 8000
# An entry recalled is marked used at most once in this many seconds: LRU to within it, and no
# write for what the same job wrote or recalled a moment ago.
TOUCH_AFTER_S = 600.0
# What an entry costs beside its text: its keys, flags and row (bytes, for the size bound).
ENTRY_OVERHEAD_BYTES = 200
# The describe() settings that say how fast or where a translation ran, not what it is.
_RUN_ONLY = ("max_batch_tokens", "threads", "device", "model_dir")
# The session table a PostgreSQL upsert copies its rows into first.
_INCOMING = "mtfleet_memory_incoming"
# Parquet columns of an export, in order.
EXPORT_COLUMNS = ("signature", "source_sha256", "target", "flags", "used_at")

# A segment's translation and its health flags.
Remembered = tuple[str, list[str]]


def segment_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def memory_signature(described: Mapping[str, Any], job_settings: Mapping[str, Any]) -> str:
    """The key of everything that changes a segment's translation: the engine's own description
    (its weights' sha256, class, tokenizer, decoding settings, compute type) without where and how
    fast it ran, and the job's settings that change a segment's output (`job_settings`)."""
    engine = {key: value for key, value in described.items() if key not in _RUN_ONLY}
    settings = engine.get("settings")
    if isinstance(settings, Mapping):
        kept = {k: v for k, v in settings.items() if k not in _RUN_ONLY}
        # the device's kind changes floating point (cpu, cuda), its index does not
        if "device" in settings:
            kept["device_kind"] = str(settings["device"]).split(":")[0]
        engine["settings"] = kept
    engine.pop("versions", None)
    key = json.dumps({"engine": engine, "job": dict(job_settings)}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MemoryStats:
    entries: int
    signatures: int
    bytes: int


class TranslationMemory:
    """The memory of the job store `store`."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def recall(self, signature: str, hashes: Sequence[str]) -> dict[str, Remembered]:
        """The remembered translation of each segment sha256 of `hashes` that the memory holds
        for `signature`; those found count as used now."""
        found: dict[str, Remembered] = {}
        wanted = list(dict.fromkeys(hashes))
        now = self.store.db.clock()
        with self._write() as conn:
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start : start + _LOOKUP_CHUNK]
                stale = []
                for sha, target, flags, used_at in conn.execute(
                    sa.select(
                        memory.c.source_sha256, memory.c.target, memory.c.flags, memory.c.used_at
                    ).where(memory.c.signature == signature, memory.c.source_sha256.in_(chunk))
                ):
                    found[sha] = (target, flags)
                    if used_at < now - TOUCH_AFTER_S:
                        stale.append(sha)
                if stale:
                    conn.execute(
                        sa.update(memory)
                        .where(memory.c.signature == signature, memory.c.source_sha256.in_(stale))
                        .values(used_at=now)
                    )
        return found

    def holds(self, signatures: Iterable[str]) -> bool:
        """Whether the memory holds any entry under one of `signatures`."""
        with self._read() as conn:
            found = conn.execute(
                sa.select(memory.c.signature)
                .where(memory.c.signature.in_(list(signatures)))
                .limit(1)
            ).first()
        return found is not None

    def remember(self, signature: str, entries: Mapping[str, Remembered]) -> int:
        """Keeps each segment sha256's translation and flags under `signature` (a translation
        made again replaces the one kept); how many."""
        return self.remember_all({signature: entries})

    def remember_all(self, entries: Mapping[str, Mapping[str, Remembered]]) -> int:
        """`remember` for each signature of `entries`, in one transaction; how many."""
        now = self.store.db.clock()
        rows = [
            (signature, sha, target, _flags_json(flags), now)
            for signature, kept in entries.items()
            for sha, (target, flags) in kept.items()
        ]
        self._upsert(rows)
        return len(rows)

    def stats(self) -> MemoryStats:
        with self._read() as conn:
            entries, signatures, size = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count(sa.distinct(memory.c.signature)),
                    sa.func.coalesce(sa.func.sum(sa.func.length(memory.c.target)), 0),
                )
            ).one()
        return MemoryStats(entries, signatures, int(size) + entries * ENTRY_OVERHEAD_BYTES)

    def evict(self, max_bytes: int) -> int:
        """Removes the least recently used entries until the memory holds at most `max_bytes`;
        how many went."""
        removed = 0
        while (over := self.stats().bytes - max_bytes) > 0:
            with self._write() as conn:
                oldest = conn.execute(
                    sa.select(
                        memory.c.signature,
                        memory.c.source_sha256,
                        sa.func.length(memory.c.target).label("size"),
                    )
                    .order_by(memory.c.used_at)
                    .limit(_CHUNK)
                ).all()
                gone: list[tuple[str, str]] = []
                for row in oldest:
                    gone.append((row.signature, row.source_sha256))
                    over -= row.size + ENTRY_OVERHEAD_BYTES
                    if over <= 0:
                        break
                for key in gone:
                    conn.execute(
                        sa.delete(memory).where(
                            memory.c.signature == key[0], memory.c.source_sha256 == key[1]
                        )
                    )
            removed += len(gone)
        return removed

    def clear(self, signature: str | None = None) -> int:
        """Forgets every entry (of `signature` only, when given); how many."""
        query = sa.delete(memory)
        if signature is not None:
            query = query.where(memory.c.signature == signature)
        with self._write() as conn:
            return conn.execute(query).rowcount

    def export(self, path: Path) -> int:
        """Writes every entry to the Parquet file `path` (EXPORT_COLUMNS); how many."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema(
            [
                ("signature", pa.string()),
                ("source_sha256", pa.string()),
                ("target", pa.string()),
                ("flags", pa.list_(pa.string())),
                ("used_at", pa.float64()),
            ]
        )
        written = 0
        with pq.ParquetWriter(path, schema) as writer:
            for batch in self._batches():
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written += len(batch)
        return written

    def import_(self, path: Path) -> int:
        """Adds the entries of a Parquet file written by `export` (one of another store too); an
        entry this memory holds already is replaced. How many were read."""
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        missing = [c for c in EXPORT_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise ValueError(
                f"{path} is no translation memory export: it has no column {missing[0]!r}."
            )
        read = 0
        for batch in parquet.iter_batches(batch_size=_CHUNK, columns=list(EXPORT_COLUMNS)):
            rows = [
                (
                    row["signature"],
                    row["source_sha256"],
                    row["target"],
                    _flags_json(row["flags"]),
                    row["used_at"],
                )
                for row in batch.to_pylist()
            ]
            self._upsert(rows)
            read += len(rows)
        return read

    def _batches(self) -> Iterator[list[dict[str, Any]]]:
        after = ("", "")
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    sa.select(*(memory.c[name] for name in EXPORT_COLUMNS))
                    .where(sa.tuple_(memory.c.signature, memory.c.source_sha256) > after)
                    .order_by(memory.c.signature, memory.c.source_sha256)
                    .limit(_CHUNK)
                ).all()
            if not rows:
                return
            yield [dict(row._mapping) for row in rows]
            after = (rows[-1].signature, rows[-1].source_sha256)

    def _upsert(self, rows: Sequence[tuple[str, str, str, str, float]]) -> None:
        """Inserts or replaces `rows` (EXPORT_COLUMNS, the flags as JSON text): on PostgreSQL by
        COPY, on SQLite with the driver's own executemany of one statement (SQLAlchemy's processed
        each row's parameters in Python: over half a shard's write, `bench/scale.py`)."""
        if not rows:
            return
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                _copy_upsert(conn, rows)
            else:
                # in key order, each index page is found and changed once for its rows: a
                # sha256's order is random, and a large memory's inserts took 20% longer (1M
                # entries); a stable sort, so a key's last row still wins
                in_order = sorted(rows, key=itemgetter(0, 1))
                conn.exec_driver_sql(_SQLITE_UPSERT, in_order)

    def _write(self) -> Any:
        # not retried here: the memory is advice, and the caller has its own way on (a translator
        # translates what it could not recall; a completion is asked again by its translator)
        return self.store.db.transaction(write=True)

    def _read(self) -> Any:
        return self.store.db.transaction(write=False)


def _flags_json(flags: Sequence[str] | None) -> str:
    """A segment's health flags as the memory's `flags` column holds them (JSON text)."""
    return json.dumps(list(flags)) if flags else "[]"


# A row's upsert: its key's row replaced by the last one written.
_ON_CONFLICT = (
    "ON CONFLICT (signature, source_sha256) DO UPDATE SET target = excluded.target, "
    "flags = excluded.flags, used_at = excluded.used_at"
)
# SQLite's upsert of one row of EXPORT_COLUMNS (positional, the flags as JSON text).
_SQLITE_UPSERT = (
    f"INSERT INTO {memory.name} ({', '.join(EXPORT_COLUMNS)}) VALUES (?, ?, ?, ?, ?) "
    + _ON_CONFLICT
)


def _copy_upsert(conn: sa.Connection, rows: Sequence[tuple[str, str, str, str, float]]) -> None:
    """PostgreSQL's upsert of `rows`: COPY into a table of the transaction, then one INSERT from
    it (the last of a key's rows wins, as executemany's would)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING} (n bigserial, signature text, "
        "source_sha256 text, target text, flags text, used_at double precision) "
        "ON COMMIT DELETE ROWS"
    )
    with cursor.copy(f"COPY {_INCOMING} ({', '.join(EXPORT_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cursor.execute(
        f"INSERT INTO {memory.name} ({', '.join(EXPORT_COLUMNS)}) "
        "SELECT DISTINCT ON (signature, source_sha256) signature, source_sha256, target, "
        f"CAST(flags AS JSON), used_at FROM {_INCOMING} ORDER BY signature, source_sha256, n DESC "
        + _ON_CONFLICT
    )
