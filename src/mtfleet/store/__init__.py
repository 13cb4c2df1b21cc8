"""The job store: jobs, shards and leases, persisted in SQLite or PostgreSQL."""

from mtfleet.store.jobstore import JobRecord, JobStore, ShardPlan, ShardRecord
from mtfleet.store.schema import SCHEMA_VERSION
from mtfleet.store.states import ACTIVE, TERMINAL, JobState, ShardState

__all__ = [
    "ACTIVE",
    "SCHEMA_VERSION",
    "TERMINAL",
    "JobRecord",
    "JobState",
    "JobStore",
    "ShardPlan",
    "ShardRecord",
    "ShardState",
]
