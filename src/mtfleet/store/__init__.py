"""The job store: jobs, shards and leases, persisted in SQLite or PostgreSQL."""

from mtfleet.store.database import STORE_RETRY_S, TransientStoreError
from mtfleet.store.jobstore import JobStore
from mtfleet.store.records import EventRecord, JobRecord, ShardPlan, ShardRecord
from mtfleet.store.schema import SCHEMA_VERSION
from mtfleet.store.states import ACTIVE, TERMINAL, JobState, ShardState

__all__ = [
    "ACTIVE",
    "SCHEMA_VERSION",
    "STORE_RETRY_S",
    "TERMINAL",
    "EventRecord",
    "JobRecord",
    "JobState",
    "JobStore",
    "ShardPlan",
    "ShardRecord",
    "ShardState",
    "TransientStoreError",
]
