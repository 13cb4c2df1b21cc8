"""The cluster: a coordinator per job, translators per device, and the driver that follows them."""

from mtfleet.cluster.job import (
    JobHandle,
    JobResult,
    follow,
    prepare_job,
    run_job,
    start_coordinator,
    submit_job,
)

__all__ = [
    "JobHandle",
    "JobResult",
    "follow",
    "prepare_job",
    "run_job",
    "start_coordinator",
    "submit_job",
]
