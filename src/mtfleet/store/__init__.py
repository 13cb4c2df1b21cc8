"""The job store: jobs, shards and leases, persisted in SQLite or PostgreSQL."""

from mtfleet.store.jobstore import JobRecord, JobStore, ShardPlan, ShardRecord
from mtfleet.store.schema import SCHEMA_VERSION
from mtfleet.store.states import JobState, ShardState

__all__ = [
    "SCHEMA_VERSION",
    "JobRecord",
    "JobState",
    "JobStore",
    "ShardPlan",
    "ShardRecord",
    "ShardState",
]
