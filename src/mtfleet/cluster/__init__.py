"""The cluster: a coordinator per job, translators per device, and the driver that follows them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mtfleet.cluster.job import (
        JobHandle,
        JobResult,
        follow,
        prepare_job,
        retry_job,
        run_job,
        start_coordinator,
        submit_job,
    )

__all__ = [
    "JobHandle",
    "JobResult",
    "follow",
    "prepare_job",
    "retry_job",
    "run_job",
    "start_coordinator",
    "submit_job",
]


def __getattr__(name: str) -> Any:
    # The driver's side loads on first use: a coordinator's or translator's process, which imports
    # its own modules of this package, never loads the driver's checks (the engines, the manifest).
    if name in __all__:
        from mtfleet.cluster import job

        return getattr(job, name)
    raise AttributeError(f"module 'mtfleet.cluster' has no attribute {name!r}")
