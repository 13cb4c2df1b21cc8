"""The translation memory: every segment a job translated, kept for the jobs that come after.

A segment's translation and its health flags are kept under the engine signature that made them
(`memory_signature`: the model's weights, the engine, its compute type and decoding settings, the
languages, the protection, glossary and checks; never where or how fast it ran) and the sha256
of the segment's text. A job translates only the segments the memory does not hold for its
signature; the others it takes from it. Entries are written by the coordinator's memory writer
(`cluster/memory_writer.py`: several completions a transaction, never one a segment, with the
driver's executemany on SQLite and COPY on PostgreSQL); the least recently used go first once
the memory passes its size (`evict`). A repository over the job store's schema (`mtfleet_memory`), on
SQLite and PostgreSQL alike; an entry is found there by one integer (`memory_key`).
"""

from __future__ import annotations

import functools
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
# A key's bits of its signature, then of its segment (a signed 64-bit integer in all).
_SIGNATURE_BITS = 16
_SEGMENT_BITS = 48
# Entries written in one SQLite transaction at most (`_upsert`).
_SQLITE_CHUNK = 5_000
# Entries copied in one statement when a version 3 store is upgraded.
_COPY_CHUNK = 10_000

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


def memory_key(signature: str, sha: str) -> int:
    """The table's key of `sha`'s entry under `signature`: 16 bits of the signature's sha256, then
    the segment's first 48 bits, so that a signature's entries are one range of keys
    (`_signature_range`). Keys can meet (among a million entries of one signature, two do with a
    chance of 0.2 %): a row holds its signature and sha256, and only the entry it holds is
    found."""
    return _signature_range(signature)[0] + _segment_bits(sha)


@functools.lru_cache(maxsize=256)
def _signature_bits(signature: str) -> int:
    return int.from_bytes(hashlib.sha256(signature.encode("utf-8")).digest()[:2], "big")


def _segment_bits(sha: str) -> int:
    if len(sha) == 64:  # a sha256 in hex, as `segment_sha256` writes it
        try:
            return int(sha[:12], 16)
        except ValueError:
            pass
    return int.from_bytes(hashlib.blake2b(sha.encode("utf-8"), digest_size=6).digest(), "big")


def _signature_range(signature: str) -> tuple[int, int]:
    """The first and last key of `signature`'s entries (and of the few that share its bits)."""
    first = (_signature_bits(signature) << _SEGMENT_BITS) - (1 << 63)
    return first, first + (1 << _SEGMENT_BITS) - 1


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
        first = _signature_range(signature)[0]
        wanted: dict[int, set[str]] = {}
        for sha in hashes:
            wanted.setdefault(first + _segment_bits(sha), set()).add(sha)
        keys = list(wanted)
        now = self.store.db.clock()
        stale: list[int] = []
        with self._read() as conn:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                for key, held_signature, sha, target, flags, used_at in _looked_up(
                    conn, keys[start : start + _LOOKUP_CHUNK]
                ):
                    if held_signature != signature or sha not in wanted[key]:
                        continue  # another entry's key met this one's
                    found[sha] = (target, json.loads(flags) if flags != "[]" else [])
                    if used_at < now - TOUCH_AFTER_S:
                        stale.append(key)
        if stale:
            # a write only for these: a recall that needs none never waits for the memory's
            # writer, which holds SQLite's one write lock for a batch of completions at a time
            with self._write() as conn:
                for start in range(0, len(stale), _LOOKUP_CHUNK):
                    conn.execute(
                        sa.update(memory)
                        .where(memory.c.key.in_(stale[start : start + _LOOKUP_CHUNK]))
                        .values(used_at=now)
                    )
        return found

    def holds(self, signatures: Iterable[str]) -> bool:
        """Whether the memory holds any entry under one of `signatures`."""
        with self._read() as conn:
            return any(
                conn.execute(
                    sa.select(memory.c.key)
                    .where(
                        memory.c.key.between(*_signature_range(signature)),
                        memory.c.signature == signature,
                    )
                    .limit(1)
                ).first()
                is not None
                for signature in dict.fromkeys(signatures)
            )

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
                    sa.select(memory.c.key, sa.func.length(memory.c.target).label("size"))
                    .order_by(memory.c.used_at)
                    .limit(_CHUNK)
                ).all()
                gone: list[int] = []
                for row in oldest:
                    gone.append(row.key)
                    over -= row.size + ENTRY_OVERHEAD_BYTES
                    if over <= 0:
                        break
                conn.execute(sa.delete(memory).where(memory.c.key.in_(gone)))
            removed += len(gone)
        return removed

    def clear(self, signature: str | None = None) -> int:
        """Forgets every entry (of `signature` only, when given); how many."""
        query = sa.delete(memory)
        if signature is not None:
            query = query.where(
                memory.c.key.between(*_signature_range(signature)),
                memory.c.signature == signature,
            )
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
        lowest = -(1 << 63)
        while lowest < 1 << 63:
            with self._read() as conn:
                rows = conn.execute(
                    sa.select(memory.c.key, *(memory.c[name] for name in EXPORT_COLUMNS))
                    .where(memory.c.key >= lowest)
                    .order_by(memory.c.key)
                    .limit(_CHUNK)
                ).all()
            if not rows:
                return
            yield [{name: row._mapping[name] for name in EXPORT_COLUMNS} for row in rows]
            lowest = rows[-1].key + 1

    def _upsert(self, rows: Sequence[tuple[str, str, str, str, float]]) -> None:
        """Inserts or replaces `rows` (EXPORT_COLUMNS, the flags as JSON text): on PostgreSQL by
        COPY in one transaction, on SQLite with the driver's own executemany of one statement
        (SQLAlchemy's processed each row's parameters in Python: over half a shard's write,
        `bench/scale.py`) in transactions of _SQLITE_CHUNK rows in key order."""
        if not rows:
            return
        keyed = _keyed(rows)
        # The store's writes take turns on SQLite's one write lock, a coordinator's leases and
        # completions too: they wait for one chunk of these, not for them all. Cut from rows in
        # key order, the chunks change pages of the index apart, so together they write about
        # the pages one transaction would.
        sqlite = self.store.db.engine.dialect.name == "sqlite"
        chunk = _SQLITE_CHUNK if sqlite else len(keyed)
        for start in range(0, len(keyed), chunk):
            with self._write() as conn:
                _write_keyed(conn, keyed[start : start + chunk])

    def _write(self) -> Any:
        # not retried here: the memory is advice, and the caller has its own way on (a translator
        # translates what it could not recall; a completion is asked again by its translator)
        return self.store.db.transaction(write=True)

    def _read(self) -> Any:
        return self.store.db.transaction(write=False)


def _flags_json(flags: Sequence[str] | None) -> str:
    """A segment's health flags as the memory's `flags` column holds them (JSON text)."""
    return json.dumps(list(flags)) if flags else "[]"


def _looked_up(conn: sa.Connection, keys: Sequence[int]) -> Any:
    """The rows of `keys` (_COLUMNS, the flags as JSON text), in the driver's own query: SQLAlchemy
    spent over half a recall's time naming each key's parameter and decoding each row's flags."""
    if conn.dialect.name == "postgresql":
        return conn.exec_driver_sql(_POSTGRES_LOOKUP, (list(keys),))
    return conn.exec_driver_sql(_SQLITE_LOOKUP.format(", ".join("?" * len(keys))), tuple(keys))


def _write_keyed(conn: sa.Connection, keyed: Sequence[tuple[Any, ...]]) -> None:
    """Upserts rows of _COLUMNS (`_keyed`): COPY on PostgreSQL, executemany on SQLite."""
    if conn.dialect.name == "postgresql":
        _copy_upsert(conn, keyed)
    else:
        conn.exec_driver_sql(_SQLITE_UPSERT, keyed)


def _keyed(rows: Sequence[tuple[str, str, str, str, float]]) -> list[tuple[Any, ...]]:
    """`rows` with their keys first, in key order: each index page is found and changed once for
    its rows (a sha256's order is random). A stable sort, so a key's last row still wins."""
    keyed = [(memory_key(row[0], row[1]), *row) for row in rows]
    keyed.sort(key=itemgetter(0))
    return keyed


def copy_entries(conn: sa.Connection, table: str) -> int:
    """Copies every entry of a version 3 memory table (EXPORT_COLUMNS, keyed by signature and
    sha256) into the memory, a chunk at a time in key order; how many."""
    copied = 0
    after = ("", "")
    while True:
        rows = conn.execute(
            sa.text(
                f"SELECT {', '.join(EXPORT_COLUMNS[:3])}, CAST(flags AS TEXT), used_at FROM {table} "
                "WHERE signature > :signature OR (signature = :signature AND source_sha256 > :sha) "
                f"ORDER BY signature, source_sha256 LIMIT {_COPY_CHUNK}"
            ),
            {"signature": after[0], "sha": after[1]},
        ).all()
        if not rows:
            return copied
        _write_keyed(conn, _keyed([tuple(row) for row in rows]))
        copied += len(rows)
        after = (rows[-1][0], rows[-1][1])


# A row's upsert: its key's row replaced by the last one written (of another entry when their
# keys meet).
_ON_CONFLICT = (
    "ON CONFLICT (key) DO UPDATE SET signature = excluded.signature, "
    "source_sha256 = excluded.source_sha256, target = excluded.target, "
    "flags = excluded.flags, used_at = excluded.used_at"
)
_COLUMNS = ("key", *EXPORT_COLUMNS)
# A lookup of rows by key (_COLUMNS, the flags as JSON text), on each driver.
_LOOKUP = (
    "SELECT key, signature, source_sha256, target, CAST(flags AS TEXT), used_at "
    f"FROM {memory.name} "
)
_SQLITE_LOOKUP = _LOOKUP + "WHERE key IN ({})"
_POSTGRES_LOOKUP = _LOOKUP + "WHERE key = ANY(CAST(%s AS BIGINT[]))"
# SQLite's upsert of one row of _COLUMNS (positional, the flags as JSON text).
_SQLITE_UPSERT = (
    f"INSERT INTO {memory.name} ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?) " + _ON_CONFLICT
)


def _copy_upsert(conn: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """PostgreSQL's upsert of `rows`: COPY into a table of the transaction, then one INSERT from
    it (the last of a key's rows wins, as executemany's would)."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    cursor.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_INCOMING} (n bigserial, key bigint, "
        "signature text, source_sha256 text, target text, flags text, used_at double precision) "
        "ON COMMIT DELETE ROWS"
    )
    with cursor.copy(f"COPY {_INCOMING} ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cursor.execute(
        f"INSERT INTO {memory.name} ({', '.join(_COLUMNS)}) "
        "SELECT DISTINCT ON (key) key, signature, source_sha256, target, "
        f"CAST(flags AS JSON), used_at FROM {_INCOMING} ORDER BY key, n DESC " + _ON_CONFLICT
    )
