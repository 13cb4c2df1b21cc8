"""The JobCoordinator actor: one per job, detached and named; the store is its memory.

Every transition goes to the job store first, so a coordinator that crashes is rebuilt from the store
by the next one started under the same name. Translators are owned by the coordinator: Ray kills
them with it, so a new coordinator starts from a fleet of none and every lease of the old one
goes back to the queue.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.autoscaler.sdk import request_resources
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mtfleet.cluster.assemble import assemble
from mtfleet.cluster.plan import UnitReader, plan_job
from mtfleet.cluster.translator import Translator
from mtfleet.errors import MtfleetError
from mtfleet.spec import spec_from_store
from mtfleet.store import TERMINAL, JobState, JobStore, ShardState

log = logging.getLogger(__name__)

NAMESPACE = "mtfleet"
FLEET_TICK_S = 0.25
# A paused or planning job's loop has little to do: it looks less often (the plan's end wakes it).
IDLE_TICK_S = 2.0


def coordinator_name(job_id: str) -> str:
    return f"mtfleet-job-{job_id}"


@dataclass
class TranslatorSlot:
    """One translator the coordinator placed: where, on which device, and its running loop."""

    worker_id: str
    node_id: str
    device: str
    handle: Any
    run_ref: Any
    info_ref: Any
    info: dict[str, Any] = field(default_factory=dict)


@ray.remote(max_restarts=0, max_concurrency=64, num_cpus=0)
class JobCoordinator:
    def __init__(self, job_id: str, store_url: str, work_dir: str) -> None:
        self.job_id = job_id
        self.store = JobStore(store_url)
        self.work_dir = Path(work_dir)
        job = self.store.get_job(job_id)
        self.spec, _, _ = spec_from_store(job.spec)
        self.slots: dict[str, TranslatorSlot] = {}
        self.failures_by_shard: Counter[int] = Counter()
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.fleet_thread: threading.Thread | None = None
        self.placed = 0
        self.gpus_requested = 0
        self.started_at = time.time()
        # set once the unit file and the shards exist: translators lease nothing before
        self.planned = threading.Event()
        # paused or planning: the fleet loop ticks every IDLE_TICK_S
        self.idle = False

    # --- lifecycle

    def start(self) -> str:
        """Resumes the job from the store and starts placing translators; idempotent."""
        with self.lock:
            if self.fleet_thread is not None:
                return self.store.get_job(self.job_id).state.value
            job = self.store.get_job(self.job_id)
            if job.state in TERMINAL:
                return job.state.value
            shards = self.store.shards(self.job_id)
            # No translator of an earlier coordinator survives it: its leases go back at once.
            for owner in {s.lease_owner for s in shards if s.state is ShardState.LEASED}:
                self.store.release_owner(self.job_id, owner)
            done = sum(s.state is ShardState.DONE for s in shards)
            if done > job.counters.get("shards_reused", 0):
                self.store.incr_counter(
                    self.job_id, "shards_reused", done - job.counters.get("shards_reused", 0)
                )
            if job.counters.get("coordinator_starts", 0) > 0:
                self.store.incr_counter(self.job_id, "coordinator_restarts")
            self.store.incr_counter(self.job_id, "coordinator_starts")
            if job.state is JobState.QUEUED:
                self.store.set_job_state(self.job_id, JobState.RUNNING)
            if job.state is JobState.PLANNING or not UnitReader.exists(self.work_dir):
                # Planning reads the whole input: here, never in the API's process, while the
                # fleet loop places translators that load their engines meanwhile.
                threading.Thread(target=self._plan, name="planner", daemon=True).start()
            else:
                self.planned.set()
            self.fleet_thread = threading.Thread(target=self._fleet_loop, name="fleet", daemon=True)
            self.fleet_thread.start()
            return self.store.get_job(self.job_id).state.value

    def _plan(self) -> None:
        """Writes the unit file, then the shards (a job planned before keeps its own)."""
        try:
            shards = plan_job(self.spec, self.work_dir)
            if not self.store.add_plan(self.job_id, shards):
                return
        except MtfleetError as error:
            self._finish_failed(str(error))
            return
        except Exception as error:
            log.exception("planning job %s failed", self.job_id)
            self._finish_failed(f"Planning failed: {type(error).__name__}: {error}")
            return
        log.info("job %s planned: %d shards", self.job_id, len(shards))
        self.planned.set()

    def pause(self) -> str:
        return self._move(JobState.PAUSED)

    def resume(self) -> str:
        return self._move(JobState.RUNNING)

    def cancel(self) -> str:
        return self._move(JobState.CANCELLED)

    def _move(self, state: JobState) -> str:
        with self.lock:
            # A repeated call (a client's retry, a race of two) finds the move done.
            if self.store.get_job(self.job_id).state is not state:
                self.store.set_job_state(self.job_id, state)
        return state.value

    # --- the translators' calls

    def lease(self, worker_id: str) -> dict[str, Any]:
        """A shard for `worker_id`, or `wait` (paused, or all shards leased), or `stop`."""
        job = self.store.get_job(self.job_id)
        if job.state in TERMINAL or worker_id not in self.slots:
            return {"action": "stop"}
        if job.state is not JobState.RUNNING or not self.planned.is_set():
            return {"action": "wait"}
        shard = self.store.lease_shard(self.job_id, worker_id, self.spec.lease_ttl_s)
        if shard is None:
            return {"action": "wait"}
        return {
            "action": "translate",
            "lease": {
                "index": shard.index,
                "lease_id": shard.lease_id,
                "row_start": shard.row_start,
                "row_end": shard.row_end,
            },
        }

    def heartbeat(self, worker_id: str, index: int, lease_id: str) -> bool:
        return self.store.renew_lease(self.job_id, index, lease_id, self.spec.lease_ttl_s)

    def complete(
        self, worker_id: str, index: int, lease_id: str, part_path: str, stats: dict[str, Any]
    ) -> bool:
        """Accepts a shard's part unless its lease is stale: a shard done twice counts once."""
        accepted = self.store.complete_shard(self.job_id, index, lease_id, part_path, stats)
        if not accepted:
            Path(part_path).unlink(missing_ok=True)
        return accepted

    def fail(self, worker_id: str, index: int, lease_id: str, error: str) -> None:
        """A shard raised: back to the queue, and bisected once it has failed max_attempts times."""
        with self.lock:
            if self.store.release_shard(self.job_id, index, lease_id, error):
                self._count_failure(index, error)

    def _count_failure(self, index: int, error: str) -> None:
        self.failures_by_shard[index] += 1
        if self.failures_by_shard[index] < self.spec.max_attempts:
            return
        shard = self.store.shard(self.job_id, index)
        if shard.state is not ShardState.PENDING:
            return
        if shard.row_end - shard.row_start > 1:
            self.store.split_shard(self.job_id, index)
        else:
            self.store.fail_shard(self.job_id, index, None, error)

    # --- what the driver, the API and the console read

    def progress(self) -> dict[str, Any]:
        job = self.store.get_job(self.job_id)
        return {
            "job_id": self.job_id,
            "state": job.state.value,
            "error": job.error,
            "counters": job.counters,
            "translators": self.translators(),
            **self.store.progress(self.job_id),
        }

    def translators(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"worker_id": s.worker_id, "node_id": s.node_id, "device": s.device, **s.info}
                for s in self.slots.values()
            ]

    # --- the fleet loop: placement, deaths, lease expiry, the end of the job

    def _fleet_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                if self._tick():
                    return
            except Exception as error:
                log.exception("fleet tick failed")
                if isinstance(error, MtfleetError):
                    self._finish_failed(str(error))
                    return
            self._rest()

    def _rest(self) -> None:
        """Waits for the next tick: longer while idle, cut short by the end of planning."""
        if not self.idle:
            time.sleep(FLEET_TICK_S)
        elif self.planned.is_set():
            time.sleep(IDLE_TICK_S)
        else:
            self.planned.wait(IDLE_TICK_S)

    def _tick(self) -> bool:
        """One round of the fleet loop; True when the job has ended."""
        job = self.store.get_job(self.job_id)
        if job.state in TERMINAL:
            self._stop_translators()
            return True
        nodes = ray.nodes()
        self._reap(nodes)
        self.idle = job.state is JobState.PAUSED or not self.planned.is_set()
        if job.state is JobState.PAUSED:
            # A paused job holds no CPU or GPU: translators go once their leased shards are done.
            self._release_idle_translators()
        if not self.planned.is_set():
            # Translators are placed while the job is planned, so they load their models meanwhile.
            self._place(nodes, job.state)
            return False
        expired = self.store.expire_leases(self.job_id)
        if expired:
            log.info("leases expired on shards %s", expired)
        shards = self.store.progress(self.job_id)["shards"]
        left = shards[ShardState.PENDING] + shards[ShardState.LEASED]
        if not left and job.state is JobState.PAUSED:
            # Its last shards landed after the pause: it ends once resumed, as a paused job may not.
            return False
        if not left:
            self._finish()
            return True
        self._ask_autoscaler(0 if job.state is JobState.PAUSED else left)
        self._place(nodes, job.state)
        return False

    def _ask_autoscaler(self, shards_left: int) -> None:
        """With --gpus N, asks for up to N one-GPU bundles while shards are left; pending nodes then join."""
        wanted = min(self.spec.gpus, shards_left)
        if wanted != self.gpus_requested:
            request_resources(bundles=[{"GPU": 1}] * wanted)
            self.gpus_requested = wanted

    def _place(self, nodes: list[dict[str, Any]], state: JobState) -> None:
        """One translator per GPU of each live node; `cpu_translators_per_node` on a CPU-only node;
        none while the job is paused."""
        if state is JobState.PAUSED:
            return
        with self.lock:
            for node in nodes:
                if not node.get("Alive"):
                    continue
                node_id = node["NodeID"]
                resources = node.get("Resources", {})
                gpus = int(resources.get("GPU", 0))
                cpus = int(resources.get("CPU", 0))
                if gpus:
                    wanted = [f"gpu{i}" for i in range(gpus)]
                elif cpus:
                    wanted = [f"cpu{i}" for i in range(self.spec.cpu_translators_per_node)]
                else:
                    wanted = []
                present = {s.device for s in self.slots.values() if s.node_id == node_id}
                for device in wanted:
                    if device not in present:
                        self._start_translator(node_id, device, cpus)

    def _start_translator(self, node_id: str, device: str, node_cpus: int) -> None:
        self.placed += 1
        worker_id = f"{node_id[:8]}-{device}-{self.placed}"
        on_gpu = device.startswith("gpu")
        per_node = max(1, self.spec.cpu_translators_per_node)
        # never more threads than the node has CPUs: a million of them took a node down
        threads = min(self.spec.threads or node_cpus // per_node, node_cpus) or 1
        handle = Translator.options(
            num_gpus=1 if on_gpu else 0,
            num_cpus=0 if on_gpu else min(1, node_cpus),
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(
            self_handle(), worker_id, self.spec.model_dump(), str(self.work_dir), on_gpu, threads
        )
        slot = TranslatorSlot(worker_id, node_id, device, handle, None, handle.info.remote())
        # The slot exists before the loop starts, so the translator's first lease finds it.
        self.slots[worker_id] = slot
        slot.run_ref = handle.run.remote()
        log.info("placed translator %s on node %s", worker_id, node_id)

    def _release_idle_translators(self) -> None:
        """Stops the translators that hold no lease; one that leased in a race gives it back."""
        if not self.slots:
            return
        busy = {
            s.lease_owner for s in self.store.shards(self.job_id) if s.state is ShardState.LEASED
        }
        with self.lock:
            for slot in list(self.slots.values()):
                if slot.worker_id in busy:
                    continue
                del self.slots[slot.worker_id]
                ray.kill(slot.handle, no_restart=True)
                self.store.release_owner(self.job_id, slot.worker_id)
                log.info("translator %s stopped: job %s is paused", slot.worker_id, self.job_id)

    def _reap(self, nodes: list[dict[str, Any]]) -> None:
        """Forgets translators that died or whose node left, and puts their shards back at once."""
        with self.lock:
            alive_nodes = {n["NodeID"] for n in nodes if n.get("Alive")}
            for slot in list(self.slots.values()):
                if slot.info_ref is not None and _ready(slot.info_ref):
                    with contextlib.suppress(RayActorError):
                        slot.info = ray.get(slot.info_ref)
                    slot.info_ref = None
                if slot.node_id not in alive_nodes:
                    self._forget(slot, node_left=True)
                    continue
                if not _ready(slot.run_ref):
                    continue
                try:
                    ray.get(slot.run_ref)
                except (RayActorError, ActorDiedError, ActorUnavailableError):
                    self._forget(slot, node_left=False)
                    continue
                except Exception as error:
                    cause = getattr(error, "cause", None) or error
                    self._finish_failed(f"Translator {slot.worker_id} failed: {cause}")
                    return
                del self.slots[slot.worker_id]

    def _forget(self, slot: TranslatorSlot, node_left: bool) -> None:
        del self.slots[slot.worker_id]
        ray.kill(slot.handle, no_restart=True)
        released = self.store.release_owner(self.job_id, slot.worker_id)
        self.store.incr_counter(self.job_id, "translator_deaths")
        log.info(
            "translator %s gone (node left: %s); shards back: %s",
            slot.worker_id,
            node_left,
            released,
        )
        if not node_left:
            # A translator that dies on a live node may have been killed by its shard (OOM, crash).
            for index in released:
                self._count_failure(index, f"translator {slot.worker_id} died")

    def _stop_translators(self) -> None:
        if self.gpus_requested:
            self._ask_autoscaler(0)
        with self.lock:
            for slot in list(self.slots.values()):
                ray.kill(slot.handle, no_restart=True)
            self.slots.clear()

    def _finish(self) -> None:
        failed = self.store.failed_shards(self.job_id)
        if failed and self.spec.on_error == "fail":
            rows = ", ".join(str(s.row_start) for s in failed[:10])
            self._finish_failed(f"Translation failed on row(s) {rows}: {failed[0].error}")
            return
        try:
            manifest = assemble(self.store, self.job_id, self.work_dir)
        except MtfleetError as error:
            self._finish_failed(str(error))
            return
        self.store.set_manifest(self.job_id, manifest)
        self.store.set_job_state(self.job_id, JobState.SUCCEEDED)
        self._stop_translators()

    def _finish_failed(self, message: str) -> None:
        job = self.store.get_job(self.job_id)
        if job.state not in TERMINAL:
            self.store.set_job_state(self.job_id, JobState.FAILED, error=message)
        self._stop_translators()


def self_handle() -> Any:
    return ray.get_runtime_context().current_actor


def _ready(ref: Any) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
