"""The jobs the API serves: submitted to the cluster, followed to their end, steered, and viewed.

The store is the truth about a job; the service maps HTTP to the cluster's one submission path
(`cluster/job.py`'s `submit`, `cluster/control.py`'s start, steer and stop) and back, and keeps,
per active job, the handle of its coordinator, its last progress report (for the translators) and
a few samples (for the rate): its follower (`following.py`) fills them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from mtfleet.api.following import Followed, Following
from mtfleet.api.paths import DataRoot, not_found_locally
from mtfleet.api.views import (
    Failure,
    JobNode,
    JobSummary,
    JobView,
    Node,
    RelativePaths,
    TargetProgress,
    Translator,
)
from mtfleet.cluster.assemble import LISTED_FAILURES
from mtfleet.cluster.control import (
    CALL_TIMEOUT_S,
    JobHandle,
    handle_for,
    steer,
    store_url_for,
)
from mtfleet.cluster.job import reassemble, resolve_spec, retry_failed, submit, with_keep_warm
from mtfleet.cluster.retention import delete_job, prune_jobs, work_bytes
from mtfleet.cluster.targets import target_progress
from mtfleet.data import dataset_files
from mtfleet.engines.hub import hub_offline, in_hub_cache
from mtfleet.errors import ApiError, JobError, ModelError, MtfleetError
from mtfleet.spec import (
    DEFAULT_KEEP_WARM_S,
    MAX_GPUS,
    STORED_ONLY,
    JobSpec,
    input_key,
    spec_from_store,
)
from mtfleet.store import ACTIVE, TERMINAL, EventRecord, JobRecord, JobState, JobStore

log = logging.getLogger(__name__)

# /healthz, /metrics and a submit's look at the nodes wait this long for Ray
NODES_TIMEOUT_S = 5.0
MAX_JOBS = 16
# an active job's work files are counted again at most this often
SIZE_TTL_S = 10.0


class ClusterNodes:
    """`ray.nodes()` in a thread of its own, waited for at most a timeout: a Ray that does not
    answer hangs no request. One look at a time; callers meanwhile wait on the same one."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: Future[list[dict[str, Any]]] | None = None

    def __call__(self, timeout_s: float = NODES_TIMEOUT_S) -> list[dict[str, Any]]:
        with self.lock:
            if self.pending is None or self.pending.done():
                self.pending = Future()
                threading.Thread(
                    target=_look, args=(self.pending,), name="mtfleet-nodes", daemon=True
                ).start()
            pending = self.pending
        try:
            return pending.result(timeout=timeout_s)
        except FutureTimeout:
            raise ApiError(f"The Ray cluster did not answer within {timeout_s:g} s.", 503) from None
        except Exception as error:
            raise ApiError(f"The Ray cluster cannot be reached: {error}", 503) from None


def _look(pending: Future[list[dict[str, Any]]]) -> None:
    try:
        pending.set_result(ray.nodes())
    except Exception as error:
        pending.set_exception(error)


class JobService(Following):
    def __init__(
        self,
        data_root: str | Path,
        state_dir: str | Path,
        store_url: str | None = None,
        *,
        max_jobs: int = MAX_JOBS,
        max_gpus: int = MAX_GPUS,
        keep_warm_s: float = DEFAULT_KEEP_WARM_S,
        allow_hardlinks: bool = False,
        retain_s: float | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.store_url = store_url_for(self.state_dir, store_url)
        self.store = JobStore(self.store_url)
        # No job reads or writes the server's own files, wherever the state dir lies.
        self.root = DataRoot(
            data_root,
            private=[self.state_dir, self.store.directory()],
            allow_hardlinks=allow_hardlinks,
        )
        self.max_jobs = max_jobs
        self.max_gpus = max_gpus
        self.keep_warm_s = keep_warm_s
        self.cluster_nodes = ClusterNodes()
        self.followed: dict[str, Followed] = {}
        # active jobs that cannot be read back: logged once, then skipped quietly
        self.unfollowable: set[str] = set()
        self.lock = threading.RLock()
        # one coordinator start or stop at a time: a request and the follower may both find a job
        # unfollowed, or ended
        self.starting = threading.Lock()
        # one submission at a time: counting the active jobs and adding one is a single step
        self.submitting = threading.Lock()
        self.stopping = threading.Event()
        self.follower: threading.Thread | None = None
        # finished jobs older than this are deleted by the pruner; None keeps them
        self.retain_s = retain_s
        self.pruner: threading.Thread | None = None
        # a job's work files are removed or deleted, or read to assemble it again, one at a time
        self.work_lock = threading.Lock()
        # the work files' size of each job when last counted: (its last update, when, bytes)
        self.sizes: dict[str, tuple[float, float, int]] = {}

    def start(self) -> None:
        """Starts following every active job in the store, those of an earlier server included."""
        self.follower = threading.Thread(
            target=self._follow_loop, name="mtfleet-follower", daemon=True
        )
        self.follower.start()
        if self.retain_s is not None:
            self.pruner = threading.Thread(
                target=self._prune_loop, name="mtfleet-pruner", daemon=True
            )
            self.pruner.start()

    def stop(self) -> None:
        """Stops following; the coordinators, detached, go on with their jobs. The follower waits
        on Ray at most CALL_TIMEOUT_S at a time, so this returns promptly."""
        self.stopping.set()
        for thread in (self.follower, self.pruner):
            if thread is not None:
                thread.join(timeout=2 * CALL_TIMEOUT_S)

    # --- one method per user action

    def submit(
        self, spec: JobSpec, job_id: str | None = None, actor: str | None = None
    ) -> tuple[JobView, bool]:
        """Creates the job (its coordinator plans it), or finds it to resume it (queued again if
        it failed or was cancelled), and starts its coordinator; True when this call created it.
        Its paths are taken relative to the data root, and refused outside it."""
        spec = with_keep_warm(self.root.contain(spec), self.keep_warm_s)
        self._check_fleet_settings(spec)
        with self.submitting:
            self._check_room(spec, job_id)
            with self.work_lock:
                with _hub_offline(spec):
                    submission = submit(
                        spec,
                        state_dir=self.state_dir,
                        store_url=self.store_url,
                        job_id=job_id,
                        data_root=self.root.root,
                        actor=actor or API_ACTOR,
                    )
                if submission.finished is not None:
                    return self.job(submission.handle.job_id), submission.created
                if submission.reassemble:
                    reassemble(submission.handle)
                    return self.job(submission.handle.job_id), submission.created
        self._start(submission.handle.job_id)
        return self.job(submission.handle.job_id), submission.created

    def jobs(self) -> list[JobSummary]:
        """Every job that can be read back; one that cannot is logged and left out, never a 500
        for everyone."""
        summaries = []
        for record in self.store.jobs.all():
            try:
                summaries.append(self._summary(record, self.store.counters.progress(record.id)))
            except Exception:
                log.exception("job %s cannot be read back; it is left out of the list", record.id)
        return summaries

    def job(self, job_id: str) -> JobView:
        record = self._record(job_id)
        progress = self.store.counters.progress(job_id)
        with self.lock:
            followed = self.followed.get(job_id)
            last = dict(followed.report) if followed else {}
            samples = list(followed.samples) if followed else []
        active = record.state in ACTIVE
        translators = [Translator(**t) for t in last.get("translators", [])] if active else []
        segments_per_s, rows_per_s = _rates(samples) if active else _average_rates(record, progress)
        rows_left = progress["rows_total"] - progress["rows_done"]
        planning = active and bool(last.get("planning"))
        return JobView(
            **self._summary(record, progress).model_dump(),
            spec=_readable(
                {key: value for key, value in record.spec.items() if key not in STORED_ONLY}
            ),
            units_total=progress["units_total"],
            units_done=progress["units_done"],
            shards=progress["shards"],
            segments_per_s=segments_per_s,
            rows_per_s=rows_per_s,
            eta_s=None if planning else _eta(rows_left, rows_per_s, record.state),
            planning=planning,
            failures=[
                Failure(row_start=s.row_start, row_end=s.row_end, error=s.error)
                for s in self.store.shards.failed(job_id, limit=LISTED_FAILURES)
            ],
            failures_total=progress["shards"]["failed"],
            counters=record.counters,
            translators=translators,
            nodes=_job_nodes(self.store.counters.work_by_translator(job_id), translators),
            health=(record.manifest or {}).get("health"),
            targets=_targets(record.spec, progress),
        )

    def pause(self, job_id: str, actor: str | None = None) -> JobView:
        """No new leases; shards already leased finish."""
        return self._steer(job_id, JobState.PAUSED, actor)

    def resume(self, job_id: str, actor: str | None = None) -> JobView:
        return self._steer(job_id, JobState.RUNNING, actor)

    def cancel(self, job_id: str, actor: str | None = None) -> JobView:
        """Stops the job; its finished parts stay, so submitting it again goes on from them."""
        return self._steer(job_id, JobState.CANCELLED, actor)

    def retry(self, job_id: str, actor: str | None = None) -> JobView:
        """Translates the failed rows of a succeeded job again and assembles its output anew
        (409 for a job that did not succeed, has no failed row or kept no parts); the job."""
        record = self._record(job_id)
        with self.submitting:
            active = {r.id for state in ACTIVE for r in self.store.jobs.all(state)}
            if len(active) >= self.max_jobs and record.state is JobState.SUCCEEDED:
                raise ApiError(
                    f"This server runs at most {self.max_jobs} active jobs (mtfleet serve "
                    f"--max-jobs) and has {len(active)}; retry once one has ended.",
                    429,
                )
            with self.work_lock:
                try:
                    retry_failed(self._handle(job_id), actor or API_ACTOR)
                except JobError as error:
                    raise ApiError(str(error), 409) from None
        self._start(job_id)
        return self.job(job_id)

    def delete(self, job_id: str) -> JobSummary:
        """Deletes a finished job: its work files and its record (409 for an active one); its
        output and manifest stay. The job as it was."""
        record = self._record(job_id)
        if record.state in ACTIVE:
            raise ApiError(
                f"Job {job_id} is {record.state}; only a finished job can be deleted, so cancel "
                "it first.",
                409,
            )
        summary = self._summary(record, self.store.counters.progress(job_id))
        with self.submitting, self.work_lock:
            self._stop_coordinator(job_id)
            try:
                delete_job(self.store, self.state_dir, job_id)
            except JobError as error:  # submitted again meanwhile
                raise ApiError(str(error), 409) from None
        self.sizes.pop(job_id, None)
        return summary

    def prune(self, older_than_s: float) -> list[str]:
        """Deletes the finished jobs that have not changed for `older_than_s`; their ids."""
        with self.submitting, self.work_lock:
            deleted = [r.id for r in prune_jobs(self.store, self.state_dir, older_than_s)]
        for job_id in deleted:
            self.sizes.pop(job_id, None)
            log.info("job %s pruned: finished more than %.0f s ago", job_id, older_than_s)
        return deleted

    def events(self, job_id: str, after: int = 0, limit: int = 200) -> list[EventRecord]:
        self._record(job_id)
        return self.store.events.page(job_id, after=after, limit=limit)

    def job_exists(self, job_id: str) -> None:
        """Nothing, or the 404 of a job the store does not have."""
        self._record(job_id)

    def work_dir(self, job_id: str) -> Path:
        return self._handle(job_id).work_dir

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
            for node in self.cluster_nodes()
        ]

    # --- checks before a job is stored

    def _check_fleet_settings(self, spec: JobSpec) -> None:
        """GPUs within the server's bound; threads within the CPUs of the largest live node."""
        if spec.gpus > self.max_gpus:
            raise ApiError(
                f"Field gpus: {spec.gpus} is more than this server's limit of {self.max_gpus} "
                "(mtfleet serve --max-gpus).",
                400,
            )
        if spec.threads is None:
            return
        cpus = max(
            (
                int(node.get("Resources", {}).get("CPU", 0))
                for node in self.cluster_nodes()
                if node.get("Alive")
            ),
            default=0,
        )
        if spec.threads > cpus:
            raise ApiError(
                f"Field threads: {spec.threads} is more than the {cpus} CPUs of the cluster's "
                "largest node.",
                400,
            )

    def _check_room(self, spec: JobSpec, job_id: str | None) -> None:
        """At most `max_jobs` active jobs; a job already active may always be submitted again."""
        active = {record.id for state in ACTIVE for record in self.store.jobs.all(state)}
        if len(active) < self.max_jobs or _job_id_of(spec, self.root.root, job_id) in active:
            return
        raise ApiError(
            f"This server runs at most {self.max_jobs} active jobs (mtfleet serve --max-jobs) and "
            f"has {len(active)}; try again once one has ended, or cancel one.",
            429,
        )

    # --- steering

    def _steer(self, job_id: str, to: JobState, actor: str | None) -> JobView:
        """Moves the job through its coordinator, or the store when none runs (`control.steer`):
        the answer is the state the job is in, whichever of two racing calls won; 409 for a move
        its state does not allow."""
        self._record(job_id)
        try:
            steer(self.store, job_id, to, actor or API_ACTOR)
        except JobError as error:
            raise ApiError(str(error), 409) from None
        return self.job(job_id)

    def _handle(self, job_id: str) -> JobHandle:
        return handle_for(job_id, self.state_dir, self.store_url)

    # --- reading

    def _record(self, job_id: str) -> JobRecord:
        try:
            return self.store.jobs.get(job_id)
        except JobError:
            raise ApiError(f"There is no job {job_id}.", 404) from None

    def _summary(self, record: JobRecord, progress: dict[str, Any]) -> JobSummary:
        paths = {
            name: _readable(str(record.spec.get(name, ""))) for name in ("input", "output", "model")
        }
        targets = record.spec.get("tgt_lang")
        return JobSummary(
            id=record.id,
            state=record.state.value,
            created_at=record.created_at,
            updated_at=record.updated_at,
            error=None if record.error is None else self.root.relative(_readable(record.error)),
            **paths,
            relative=RelativePaths(
                **{name: self.root.relative(path) for name, path in paths.items()}
            ),
            tgt_lang=[
                _readable(str(target))
                for target in (targets if isinstance(targets, list) else [targets])
                if target
            ],
            rows_total=progress["rows_total"],
            rows_done=progress["rows_done"],
            segments_done=progress["segments_done"],
            work_bytes=self._work_bytes(record),
        )

    def _work_bytes(self, record: JobRecord) -> int:
        """The size of the job's work files: counted once for a finished job, which keeps it,
        and at most every SIZE_TTL_S for an active one (a big job has thousands of parts)."""
        known = self.sizes.get(record.id)
        now = time.monotonic()
        if (
            known is not None
            and known[0] == record.updated_at
            and (record.state in TERMINAL or now - known[1] < SIZE_TTL_S)
        ):
            return known[2]
        size = work_bytes(self._handle(record.id).work_dir)
        self.sizes[record.id] = (record.updated_at, now, size)
        return size


# who did it, in a job's history, when the client did not say
API_ACTOR = "api"


def _job_id_of(spec: JobSpec, root: Path, job_id: str | None) -> str | None:
    """The id a submission names: its own, or the one derived from its spec and input."""
    if job_id:
        return job_id
    resolved = resolve_spec(spec, root)
    try:
        return resolved.default_job_id(input_key(dataset_files(resolved.input)[1]))
    except (OSError, MtfleetError):
        return None


@contextmanager
def _hub_offline(spec: JobSpec) -> Iterator[None]:
    """The model check without the network: a hub id that is not in this machine's cache is
    refused at once, where trying the hub blocked a request for 25 s. Submissions run one at a
    time, so no other request sees the switch."""
    try:
        with hub_offline():
            yield
    except ModelError:
        if Path(spec.model).is_absolute() or in_hub_cache(spec.model):
            raise
        raise not_found_locally(spec.model) from None


def _readable(value: Any) -> Any:
    """`value` with any lone surrogate escaped: a record stored before text was checked still
    renders as JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_readable(key): _readable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_readable(item) for item in value]
    return value


def _rates(samples: list[tuple[float, int, int]]) -> tuple[float | None, float | None]:
    """Segments and rows per second over the sampled window; None before two samples."""
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return None, None
    (start, rows_then, segments_then), (now, rows, segments) = samples[0], samples[-1]
    return (segments - segments_then) / (now - start), (rows - rows_then) / (now - start)


def _average_rates(
    record: JobRecord, progress: dict[str, Any]
) -> tuple[float | None, float | None]:
    """A succeeded job's rates over its life; a job stopped before its end translates nothing."""
    if record.state is not JobState.SUCCEEDED:
        return 0.0, 0.0
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


def _targets(stored: dict[str, Any], progress: dict[str, Any]) -> list[TargetProgress]:
    """Each target language's output and progress; none for a stored spec that no longer reads
    as one (the job is still shown)."""
    try:
        spec = spec_from_store(stored)[0]
    except ValueError:
        return []
    return [
        TargetProgress(**{**target, "output": _readable(target["output"])})
        for target in target_progress(spec, progress)
    ]
