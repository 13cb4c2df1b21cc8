"""The jobs the API serves: submitted to the cluster, followed to their end, steered, and viewed.

The store is the truth about a job; the service only keeps, per active job, the handle of its
coordinator, its last progress report (for the translators) and a few samples (for the rate).
A follower thread plays the part `mtfleet translate` plays for one job: it starts a coordinator
again when one dies, and stops a coordinator once its job has ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from mtfleet.api.views import Failure, JobNode, JobSummary, JobView, Node, Translator
from mtfleet.cluster import JobHandle, start_coordinator, submit_job
from mtfleet.cluster.coordinator import NAMESPACE, coordinator_name
from mtfleet.cluster.job import finished_result, handle_for, reassemble, store_url_for
from mtfleet.errors import ApiError, JobError, MtfleetError
from mtfleet.spec import JobSpec
from mtfleet.store import ACTIVE, TERMINAL, JobRecord, JobState, JobStore

log = logging.getLogger(__name__)

FOLLOW_TICK_S = 1.0
CALL_TIMEOUT_S = 10.0
RATE_WINDOW_S = 30.0


@dataclass
class Followed:
    """An active job as the service follows it."""

    coordinator: Any
    report: dict[str, Any] = field(default_factory=dict)
    # (monotonic time, rows done, segments done), the last RATE_WINDOW_S seconds of them
    samples: deque[tuple[float, int, int]] = field(default_factory=deque)


class JobService:
    def __init__(self, state_dir: str | Path, store_url: str | None = None) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.store_url = store_url_for(self.state_dir, store_url)
        self.store = JobStore(self.store_url)
        self.followed: dict[str, Followed] = {}
        self.lock = threading.RLock()
        # one coordinator start at a time: a request and the follower may both find a job unfollowed
        self.starting = threading.Lock()
        self.stopping = threading.Event()
        self.follower: threading.Thread | None = None

    def start(self) -> None:
        """Starts following every active job in the store, those of an earlier server included."""
        self.follower = threading.Thread(
            target=self._follow_loop, name="mtfleet-follower", daemon=True
        )
        self.follower.start()

    def stop(self) -> None:
        """Stops following; the coordinators, detached, go on with their jobs."""
        self.stopping.set()
        if self.follower is not None:
            self.follower.join()

    # --- one method per user action

    def submit(self, spec: JobSpec, job_id: str | None = None) -> tuple[JobView, bool]:
        """Creates the job (its coordinator plans it), or finds it to resume it (queued again if
        it failed or was cancelled), and starts its coordinator; True when this call created it."""
        handle, created = submit_job(
            spec, state_dir=self.state_dir, store_url=self.store_url, job_id=job_id
        )
        # A succeeded job is not run again; its output is assembled again if it went missing.
        if finished_result(handle) is None:
            if self._record(handle.job_id).state is JobState.SUCCEEDED:
                reassemble(handle)
            else:
                with self.starting:
                    self._drop_stale_coordinator(handle.job_id)
                self._coordinator(handle.job_id)
        return self.job(handle.job_id), created

    def jobs(self) -> list[JobSummary]:
        return [
            self._summary(record, self.store.progress(record.id))
            for record in self.store.list_jobs()
        ]

    def job(self, job_id: str) -> JobView:
        record = self._record(job_id)
        progress = self.store.progress(job_id)
        with self.lock:
            followed = self.followed.get(job_id)
            report = dict(followed.report) if followed else {}
            samples = list(followed.samples) if followed else []
        active = record.state in ACTIVE
        translators = [Translator(**t) for t in report.get("translators", [])] if active else []
        segments_per_s, rows_per_s = _rates(samples) if active else _average_rates(record, progress)
        rows_left = progress["rows_total"] - progress["rows_done"]
        return JobView(
            **self._summary(record, progress).model_dump(),
            spec={key: value for key, value in record.spec.items() if key != "input_sha256"},
            units_total=progress["units_total"],
            units_done=progress["units_done"],
            shards=progress["shards"],
            segments_per_s=segments_per_s,
            rows_per_s=rows_per_s,
            eta_s=_eta(rows_left, rows_per_s, record.state),
            failures=[
                Failure(row_start=s.row_start, row_end=s.row_end, error=s.error)
                for s in self.store.failed_shards(job_id)
            ],
            counters=record.counters,
            translators=translators,
            nodes=_job_nodes(self.store.work_by_translator(job_id), translators),
            health=(record.manifest or {}).get("health"),
        )

    def pause(self, job_id: str) -> JobView:
        """No new leases; shards already leased finish."""
        return self._steer(job_id, JobState.PAUSED, "pause")

    def resume(self, job_id: str) -> JobView:
        return self._steer(job_id, JobState.RUNNING, "resume")

    def cancel(self, job_id: str) -> JobView:
        """Stops the job; its finished parts stay, so submitting it again goes on from them."""
        return self._steer(job_id, JobState.CANCELLED, "cancel")

    def manifest(self, job_id: str) -> dict[str, Any]:
        record = self._record(job_id)
        if record.manifest is None:
            raise ApiError(f"Job {job_id} is {record.state} and has no manifest yet.", 404)
        return record.manifest

    def nodes(self) -> list[Node]:
        with self.lock:
            translators = [
                Translator(**t, job_id=job_id)
                for job_id, followed in self.followed.items()
                for t in followed.report.get("translators", [])
            ]
        on_node: defaultdict[str, list[Translator]] = defaultdict(list)
        for translator in translators:
            on_node[translator.node_id].append(translator)
        return [
            Node(
                node_id=node["NodeID"],
                address=node.get("NodeManagerAddress", ""),
                state="alive" if node.get("Alive") else "dead",
                head="node:__internal_head__" in node.get("Resources", {}),
                cpus=node.get("Resources", {}).get("CPU", 0),
                gpus=node.get("Resources", {}).get("GPU", 0),
                memory_bytes=int(node.get("Resources", {}).get("memory", 0)),
                translators=on_node[node["NodeID"]] if node.get("Alive") else [],
            )
            for node in ray.nodes()
        ]

    # --- steering

    def _steer(self, job_id: str, to: JobState, verb: str) -> JobView:
        record = self._record(job_id)
        if record.state is to:
            return self.job(job_id)
        if record.state in TERMINAL:
            raise ApiError(
                f"Job {job_id} is {record.state}; only a queued, running or paused job can {verb}.",
                409,
            )
        coordinator = self._coordinator(job_id)
        self._call(job_id, getattr(coordinator, verb))
        return self.job(job_id)

    def _drop_stale_coordinator(self, job_id: str) -> None:
        """A queued job has no live coordinator: one left from its failed or cancelled run would
        not start it again, so it goes."""
        if self._record(job_id).state in (JobState.QUEUED, JobState.PLANNING):
            self._stop_coordinator(job_id)

    # --- following

    def _follow_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self._follow_tick()
            except Exception:
                log.exception("following the jobs failed")
            self.stopping.wait(FOLLOW_TICK_S)

    def _follow_tick(self) -> None:
        active = {record.id for state in ACTIVE for record in self.store.list_jobs(state)}
        for job_id in sorted(active):
            self._observe(job_id)
        with self.lock:
            ended = set(self.followed) - active
        for job_id in ended:
            self._stop_coordinator(job_id)

    def _observe(self, job_id: str) -> None:
        coordinator = self._coordinator(job_id)
        try:
            report = ray.get(coordinator.progress.remote(), timeout=CALL_TIMEOUT_S)
        except (RayActorError, GetTimeoutError):
            log.warning("the coordinator of job %s is gone; starting it again", job_id)
            with self.lock:
                self.followed.pop(job_id, None)
            return
        now = time.monotonic()
        with self.lock:
            followed = self.followed.get(job_id)
            if followed is None:
                return
            followed.report = report
            followed.samples.append((now, report["rows_done"], report["segments_done"]))
            while followed.samples and now - followed.samples[0][0] > RATE_WINDOW_S:
                followed.samples.popleft()

    def _coordinator(self, job_id: str) -> Any:
        """The job's coordinator: the one followed, or found by name, or started from the store."""
        with self.starting:
            with self.lock:
                followed = self.followed.get(job_id)
            if followed is not None:
                return followed.coordinator
            coordinator = start_coordinator(self._handle(job_id))
            with self.lock:
                self.followed[job_id] = Followed(coordinator)
            return coordinator

    def _stop_coordinator(self, job_id: str) -> None:
        """Stops the job's coordinator, followed or not; its translators die with it."""
        with self.lock:
            self.followed.pop(job_id, None)
        try:
            coordinator = ray.get_actor(coordinator_name(job_id), namespace=NAMESPACE)
        except ValueError:
            return
        ray.kill(coordinator, no_restart=True)
        # Its name is free once Ray has seen it die; a coordinator started later needs the name.
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                ray.get_actor(coordinator_name(job_id), namespace=NAMESPACE)
            except ValueError:
                return
            time.sleep(0.05)

    def _handle(self, job_id: str) -> JobHandle:
        return handle_for(job_id, self.state_dir, self.store_url)

    def _call(self, job_id: str, method: Any) -> Any:
        try:
            return ray.get(method.remote(), timeout=CALL_TIMEOUT_S)
        except RayTaskError as error:
            if isinstance(error.cause, MtfleetError):
                raise error.cause from None
            raise
        except (RayActorError, GetTimeoutError):
            with self.lock:
                self.followed.pop(job_id, None)
            raise ApiError(
                f"The coordinator of job {job_id} did not answer; try again.", 503
            ) from None

    # --- reading

    def _record(self, job_id: str) -> JobRecord:
        try:
            return self.store.get_job(job_id)
        except JobError:
            raise ApiError(f"There is no job {job_id}.", 404) from None

    def _summary(self, record: JobRecord, progress: dict[str, Any]) -> JobSummary:
        return JobSummary(
            id=record.id,
            state=record.state.value,
            error=record.error,
            created_at=record.created_at,
            updated_at=record.updated_at,
            input=record.spec["input"],
            output=record.spec["output"],
            model=record.spec["model"],
            rows_total=progress["rows_total"],
            rows_done=progress["rows_done"],
            segments_done=progress["segments_done"],
        )


def _rates(samples: list[tuple[float, int, int]]) -> tuple[float | None, float | None]:
    """Segments and rows per second over the sampled window; None before two samples."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None, None
    (start, rows_then, segments_then), (now, rows, segments) = samples[0], samples[-1]
    return (segments - segments_then) / (now - start), (rows - rows_then) / (now - start)


def _average_rates(
    record: JobRecord, progress: dict[str, Any]
) -> tuple[float | None, float | None]:
    elapsed = record.updated_at - record.created_at
    if elapsed <= 0:
        return None, None
    return progress["segments_done"] / elapsed, progress["rows_done"] / elapsed


def _eta(rows_left: int, rows_per_s: float | None, state: JobState) -> float | None:
    if state is JobState.SUCCEEDED or rows_left == 0:
        return 0.0
    if state not in ACTIVE or not rows_per_s:
        return None
    return rows_left / rows_per_s


def _job_nodes(work: list[dict[str, Any]], translators: list[Translator]) -> list[JobNode]:
    """Per node: its translators now, and the shards, segments and throughput of its done shards."""
    present: defaultdict[str, list[str]] = defaultdict(list)
    for translator in translators:
        present[translator.node_id].append(translator.worker_id)
    by_node: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for done in work:
        by_node[done["node_id"]].append(done)
    return [
        JobNode(
            node_id=node_id,
            translators=present[node_id],
            shards_done=sum(done["shards_done"] for done in by_node[node_id]),
            segments_done=sum(done["segments"] for done in by_node[node_id]),
            segments_per_s=sum(
                done["segments"] / done["busy_s"] for done in by_node[node_id] if done["busy_s"] > 0
            )
            or None,
        )
        for node_id in sorted(present.keys() | by_node.keys())
    ]
