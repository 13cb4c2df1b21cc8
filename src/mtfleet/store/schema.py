"""Tables of the job store, and the version stamp that keeps an older mtfleet off a newer store."""

from __future__ import annotations

import sqlalchemy as sa

from mtfleet.errors import StoreError
from mtfleet.store.states import JobState, ShardState

# 2: jobs may be `planning` (planned by their coordinator, off the API's request path)
# 3: shards count their failures (bisection resumes where a restarted coordinator left it), jobs
#    have a history of events, and the store holds a translation memory
# 4: the memory's entries are found by one integer key (`memory.memory_key`), not by two strings
SCHEMA_VERSION = 4

metadata = sa.MetaData()

schema_version = sa.Table(
    "mtfleet_schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

jobs = sa.Table(
    "mtfleet_jobs",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("manifest", sa.JSON(none_as_null=True)),
    sa.CheckConstraint(
        sa.column("state").in_([state.value for state in JobState]), name="mtfleet_job_state"
    ),
)

job_counters = sa.Table(
    "mtfleet_job_counters",
    metadata,
    sa.Column(
        "job_id", sa.ForeignKey(jobs.c.id, ondelete="CASCADE"), primary_key=True, nullable=False
    ),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

shards = sa.Table(
    "mtfleet_shards",
    metadata,
    sa.Column(
        "job_id", sa.ForeignKey(jobs.c.id, ondelete="CASCADE"), primary_key=True, nullable=False
    ),
    sa.Column("shard_index", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("row_start", sa.Integer, nullable=False),
    sa.Column("row_end", sa.Integer, nullable=False),
    sa.Column("units", sa.Integer, nullable=False),
    sa.Column("est_tokens", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("lease_id", sa.String(64)),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires_at", sa.Double),
    sa.Column("attempts", sa.Integer, nullable=False),
    # the failures counted toward its bisection (a lease that expires or a fault is not one)
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("part_path", sa.Text),
    sa.Column("stats", sa.JSON, nullable=False),
    sa.Column("error", sa.Text),
    sa.CheckConstraint("row_start < row_end", name="mtfleet_shard_rows"),
    sa.CheckConstraint(
        sa.column("state").in_([state.value for state in ShardState]), name="mtfleet_shard_state"
    ),
    # leasing picks the lowest pending row_start of a job
    sa.Index("mtfleet_shards_by_state", "job_id", "state", "row_start"),
)


# A job's history: who did what to it and what happened to it, in order (`id` grows).
job_events = sa.Table(
    "mtfleet_job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.ForeignKey(jobs.c.id, ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    # who asked for it (a client, the CLI), or None for what the cluster did itself
    sa.Column("actor", sa.String(200)),
    sa.Column("message", sa.Text, nullable=False),
)


# The translation memory, shared by every job of the store: a segment's translation (and its
# health flags) under the engine signature that made it (`memory.py`), last used at `used_at`. An
# entry is found by `key` (`memory.memory_key`: 16 bits of its signature's hash, then 48 of its
# segment's sha256), whose index entries are a tenth of the two strings': a batch of random keys
# changes a third as many of the index's pages (SQLite appends the rows themselves in rowid
# order). Two entries whose keys meet share one row, the later one's; a lookup checks the row's
# signature and sha256, so the other is only not found.
memory = sa.Table(
    "mtfleet_memory",
    metadata,
    sa.Column("key", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("signature", sa.String(64), nullable=False),
    sa.Column("source_sha256", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("flags", sa.JSON, nullable=False),
    sa.Column("used_at", sa.Double, nullable=False, index=True),
)


def _upgrade_from_2(conn: sa.Connection) -> None:
    """Version 2 to 3: shards get their failure count (0: the old coordinator kept it in memory,
    so bisection starts again as it did after a restart); the events and memory tables are
    created with the others."""
    conn.execute(
        sa.text("ALTER TABLE mtfleet_shards ADD COLUMN failures INTEGER NOT NULL DEFAULT 0")
    )
    conn.execute(sa.update(schema_version).values(version=3))


def _upgrade_from_3(conn: sa.Connection) -> None:
    """Version 3 to 4: the memory's entries move to a table keyed by `memory_key`, every one
    kept (a store of version 2 has no memory yet: it is created with the others)."""
    from mtfleet.store.memory import copy_entries

    if sa.inspect(conn).has_table(memory.name):
        old = f"{memory.name}_v3"
        # the old table's index and primary key names are the new table's: they go or move first
        conn.execute(sa.text(f"DROP INDEX IF EXISTS ix_{memory.name}_used_at"))
        conn.execute(sa.text(f"ALTER TABLE {memory.name} RENAME TO {old}"))
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text(f"ALTER TABLE {old} RENAME CONSTRAINT {memory.name}_pkey TO {old}_pkey")
            )
        memory.create(conn)
        copy_entries(conn, old)
        conn.execute(sa.text(f"DROP TABLE {old}"))
    conn.execute(sa.update(schema_version).values(version=4))


def ensure_schema(conn: sa.Connection, where: str) -> None:
    """Create the tables on first use; upgrade a store of version 2 or 3; refuse a store stamped
    with another schema version."""
    found = None
    if sa.inspect(conn).has_table(schema_version.name):
        found = conn.execute(sa.select(schema_version.c.version)).scalar()
    if found == 2:
        _upgrade_from_2(conn)
        found = 3
    if found == 3:
        _upgrade_from_3(conn)
        found = SCHEMA_VERSION
    if found is not None and found != SCHEMA_VERSION:
        age = "a newer" if found > SCHEMA_VERSION else "an older"
        raise StoreError(
            f"The job store at {where} has schema version {found}, written by {age} "
            f"mtfleet than this one (schema version {SCHEMA_VERSION}); use a matching mtfleet "
            "or a new store."
        )
    metadata.create_all(conn)
    if found is None:
        conn.execute(sa.insert(schema_version).values(version=SCHEMA_VERSION))
