"""The API's follower: a thread that plays the part `mtfleet translate` plays for one job, for
every active job in the store. It starts a coordinator again when one dies, keeps each one's last
progress report and a few samples (for the rate), and stops a coordinator once its job has ended;
a pruner deletes finished jobs past `--retain`. A part of `JobService` (its store, locks and
followed jobs are the service's)."""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ray.exceptions import GetTimeoutError, RayActorError

from mtfleet.cluster.control import (
    CALL_TIMEOUT_S,
    report,
    start_coordinator,
    start_job,
    stop_coordinator,
)
from mtfleet.cluster.retention import retire
from mtfleet.errors import ApiError, MtfleetError
from mtfleet.store import ACTIVE, JobRecord, JobState

log = logging.getLogger(__name__)

FOLLOW_TICK_S = 1.0
RATE_WINDOW_S = 30.0
# `mtfleet serve --retain`: finished jobs older than that are pruned this often, or as often as
# the retention where it is shorter (but not more than once a second)
PRUNE_EVERY_S = 300.0
PRUNE_AT_MOST_EVERY_S = 1.0


@dataclass
class Followed:
    """An active job as the service follows it."""

    coordinator: Any
    report: dict[str, Any] = field(default_factory=dict)
    # (monotonic time, rows done, segments done), the last RATE_WINDOW_S seconds of them
    samples: deque[tuple[float, int, int]] = field(default_factory=deque)


class Following:
    """The service's following of its active jobs."""

    # --- following

    def _follow_loop(self) -> None:
        # jobs that succeeded while no server followed them leave their work files now
        for record in self._list_quietly(JobState.SUCCEEDED):
            self._retire(record.id)
        while not self.stopping.is_set():
            try:
                self._follow_tick()
            except Exception:
                log.exception("following the jobs failed")
            self.stopping.wait(FOLLOW_TICK_S)

    def _list_quietly(self, state: JobState) -> list[JobRecord]:
        try:
            return self.store.jobs.all(state)
        except MtfleetError:
            log.exception("the job store cannot list the %s jobs", state)
            return []

    def _retire(self, job_id: str) -> None:
        """A succeeded job's units and parts go (unless it keeps them); never raises."""
        try:
            with self.work_lock:
                if self.store.jobs.find(job_id) is None:
                    return  # deleted (DELETE, --retain) since it ended: no work file is left
                retire(self.store, job_id, self._handle(job_id).work_dir)
            self.sizes.pop(job_id, None)
        except Exception:
            log.exception("the work files of job %s cannot be removed", job_id)

    def _prune_loop(self) -> None:
        assert self.retain_s is not None
        while not self.stopping.is_set():
            try:
                self.prune(self.retain_s)
            except Exception:
                log.exception("pruning the finished jobs failed")
            self.stopping.wait(min(PRUNE_EVERY_S, max(self.retain_s, PRUNE_AT_MOST_EVERY_S)))

    def _follow_tick(self) -> None:
        active = {record.id for state in ACTIVE for record in self.store.jobs.all(state)}
        for job_id in sorted(active):
            try:
                self._observe(job_id)
            except Exception:  # one job that cannot be read back stops no other job's following
                if job_id not in self.unfollowable:
                    log.exception("job %s cannot be followed; it is skipped", job_id)
                self.unfollowable.add(job_id)
        with self.lock:
            ended = set(self.followed) - active
        for job_id in ended:
            self._stop_coordinator(job_id)
            self._retire(job_id)

    def _observe(self, job_id: str) -> None:
        try:
            coordinator = self._coordinator(job_id)
        except ApiError as error:
            log.warning("%s", error)
            return
        progress = report(coordinator)
        if progress is None:
            log.warning("the coordinator of job %s is gone; starting it again", job_id)
            with self.lock:
                self.followed.pop(job_id, None)
            return
        now = time.monotonic()
        with self.lock:
            followed = self.followed.get(job_id)
            if followed is None:
                return
            followed.report = progress
            followed.samples.append((now, progress["rows_done"], progress["segments_done"]))
            while followed.samples and now - followed.samples[0][0] > RATE_WINDOW_S:
                followed.samples.popleft()

    def _coordinator(self, job_id: str) -> Any:
        """The job's coordinator: the one followed, or found by name, or started from the store."""
        with self.starting:
            with self.lock:
                followed = self.followed.get(job_id)
            if followed is not None:
                return followed.coordinator
            try:
                coordinator = start_coordinator(self._handle(job_id), timeout_s=CALL_TIMEOUT_S)
            except (RayActorError, GetTimeoutError):
                raise _not_started(job_id) from None
            with self.lock:
                self.followed[job_id] = Followed(coordinator)
            return coordinator

    def _start(self, job_id: str) -> None:
        """Starts the coordinator of a job just submitted or retried (a stale one goes first)."""
        with self.starting:
            with self.lock:
                self.followed.pop(job_id, None)
            try:
                coordinator = start_job(self.store, self._handle(job_id), CALL_TIMEOUT_S)
            except (RayActorError, GetTimeoutError):
                raise _not_started(job_id) from None
            with self.lock:
                self.followed[job_id] = Followed(coordinator)

    def _stop_coordinator(self, job_id: str) -> None:
        """Stops the job's coordinator, followed or not; its translators die with it. One stop at
        a time: the follower and a delete never kill one while the other waits on it."""
        with self.starting:
            with self.lock:
                self.followed.pop(job_id, None)
            stop_coordinator(self.store, job_id)


def _not_started(job_id: str) -> ApiError:
    return ApiError(
        f"The cluster did not start the coordinator of job {job_id} within {CALL_TIMEOUT_S:g} s; "
        "the job is stored and starts once the cluster can.",
        503,
    )
