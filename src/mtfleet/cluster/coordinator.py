"""The JobCoordinator actor: one per job, detached and named; the store is its memory.

Every transition goes to the job store first, so a coordinator that crashes is rebuilt from the store
by the next one started under the same name, or by Ray itself (`max_restarts=-1`): a restarted
coordinator starts the job again on its own, with no driver or API alive. A new coordinator starts
from a fleet of none and every lease of the old one goes back to the queue: translators are owned
by the coordinator (Ray kills them with it), or, with `keep_warm_s`, detached, and then they end
themselves once a coordinator that does not know them answers their next lease.

Jobs share the cluster through the warm pool (`pool.py`): each takes at most its fair share of a
node's devices, hands its translators to the pool when it ends, and takes warm ones from it.

Every decision about the shards (leases, heartbeats, completions, failures and faults, the
watchdog) is its `ShardLedger`'s (`ledger.py`, Ray-free); the coordinator places translators and
carries those decisions out: it tells a translator its lease lost its race, kills a hung one and
places another, pauses the job. Everything is logged to `WORK/logs/coordinator.log`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    ActorUnschedulableError,
    GetTimeoutError,
    RayActorError,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mtfleet.cluster import tasks
from mtfleet.cluster.ledger import FAULT_BACKOFF_MAX_S, ShardLedger
from mtfleet.cluster.logs import log_path, log_to_work_dir
from mtfleet.cluster.plan import UnitReader
from mtfleet.cluster.pool import JOB_SILENCE_S, Resources, warm_pool
from mtfleet.cluster.protocol import STOP, WAIT, LeaseReply
from mtfleet.cluster.retention import retire
from mtfleet.cluster.steering import move_job
from mtfleet.cluster.tail import Holding
from mtfleet.cluster.targets import target_progress
from mtfleet.cluster.translator import Translator, engine_key, translator_resources
from mtfleet.errors import MtfleetError, StoreError
from mtfleet.retry import backoff_s, retry
from mtfleet.spec import RUN_SETTINGS, spec_from_store
from mtfleet.store import (
    STORE_RETRY_S,
    TERMINAL,
    JobState,
    JobStore,
    ShardState,
    TransientStoreError,
)
from mtfleet.store.memory import TranslationMemory

log = logging.getLogger(__name__)

NAMESPACE = "mtfleet"
FLEET_TICK_S = 0.25
# A paused or planning job's loop has little to do: it looks less often (the plan's end wakes it).
IDLE_TICK_S = 2.0
# Calls to the warm pool and to a warm translator being attached or released wait this long at most.
POOL_CALL_S = 10.0
# A translator not started this long after it was placed may wait for a device: a warm one of its
# own key takes its place, or idle ones of other models on its node make room.
PENDING_S = 1.0
# A translator still not started this long after it was placed waits for a device that the pool
# counts as free (something the pool does not know of holds it): every idle translator of another
# model on its node is evicted. Far above any translator's start on a loaded machine.
STUCK_S = 15.0
# The pool hears what a job wants when it changes, and at least this often: a job silent for
# JOB_SILENCE_S no longer shares the fleet, and other jobs learn of a new one this soon.
SHARE_EVERY_S = JOB_SILENCE_S / 4
# A translator that asks for a shard while the job is planned waits this long for the plan before
# it is told to wait: its first shard comes the moment the plan is written.
PLAN_WAIT_S = 1.0
# A translator with no shard to lease waits this long in its `lease` call before it is told to wait
# (it asks again at once): long-polled, so an idle fleet costs the coordinator few calls.
LEASE_WAIT_S = 5.0
# A waiting lease looks again this often unwoken: a tail's backup lease comes with time alone.
LEASE_RECHECK_S = 1.0
# Most translators waiting in `lease` at once, half the actor's threads; more are told to wait.
MAX_CONCURRENCY = 64
MAX_LEASE_WAITERS = MAX_CONCURRENCY // 2
# A driver that saw its job end waits this long for the coordinator to stop the job's translators
# before it kills the coordinator.
END_WAIT_S = 15.0


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
    # the engine key a warm pool files it under
    key: str = ""
    placed_at: float = field(default_factory=time.monotonic)
    # when `_unblock` last looked whether it waits for a device
    checked_at: float = field(default_factory=time.monotonic)


class JobCoordinator:
    """One job's coordinator, as a plain class (its actor is `JobCoordinatorActor`, whose process
    Ray names after this class): tests build one on a store with no Ray."""

    def __init__(self, job_id: str, store_url: str, work_dir: str) -> None:
        self.job_id = job_id
        self.store_url = store_url
        self.work_dir = Path(work_dir)
        log_to_work_dir(self.work_dir, "coordinator")
        restarted = _restarted_by_ray()
        log.info("coordinator of job %s up (restarted by Ray: %s)", job_id, restarted)
        # a coordinator restarted while the store's server restarts too waits for it
        self.store = retry(
            lambda: JobStore(store_url), on=TransientStoreError, budget_s=STORE_RETRY_S
        )
        job = self.store.get_job(job_id)
        self.spec, _, _ = spec_from_store(job.spec)
        self.stored_spec = job.spec
        self.slots: dict[str, TranslatorSlot] = {}
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.fleet_thread: threading.Thread | None = None
        self.placed = 0
        # in worker ids: a detached translator of an earlier incarnation never passes for one of ours
        self.incarnation = secrets.token_hex(2)
        # jobs that want translators now, this one included: a node's devices are shared by them
        self.sharing_jobs = 1
        # translators over this job's fair share: each goes at its next lease, between two shards
        self.over_share: set[str] = set()
        self.pool: Any = None
        # what the pool last heard from this job, and when (`_share`)
        self.told_pool: tuple[bool, int, dict[str, Resources]] | None = None
        self.told_pool_at = 0.0
        self.started_at = time.time()
        # set once the unit file and the shards exist: translators lease nothing before
        self.planned = threading.Event()
        # paused or planning: the fleet loop ticks every IDLE_TICK_S
        self.idle = False
        # every decision about the shards: leases, heartbeats, completions, failures, faults,
        # the watchdog; its memory (the speculative tail's, the watchdog's) is gone with this
        # coordinator, as its leases are
        self.memory = TranslationMemory(self.store)
        self.ledger = ShardLedger(
            self.store, job_id, self.spec, is_live=lambda worker_id: worker_id in self.slots
        )
        # a failure the store could not take when it happened; the fleet loop records it
        self.unrecorded_failure: str | None = None
        # translators waiting in `lease` for a shard; notified by `ledger_changed`
        self.work_changed = threading.Condition()
        self.lease_waiters = 0
        # the job's state at the last tick: a change wakes the waiting translators
        self.seen_state: JobState | None = None
        if restarted:
            threading.Thread(target=self._start_again, name="restart", daemon=True).start()

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
                self.store.add_event(self.job_id, "restarted", f"Restarted; {done} done.")
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
            state = self.store.get_job(self.job_id).state.value
            log.info("job %s started: %s, %d shards done before", self.job_id, state, done)
            return state

    def ended(self, timeout_s: float) -> bool:
        """Waits up to `timeout_s` for the fleet loop to end (the job ended and its translators
        were stopped or handed to the warm pool); whether it has. A driver that saw the job end
        calls it before it kills this coordinator, so a cancel kills a stuck translator first."""
        thread = self.fleet_thread
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    def _start_again(self) -> None:
        """Ray restarted this coordinator after its process died: it starts the job itself, as
        no driver or API may be alive to call `start`."""
        attempt = 0
        while not self.stopping.is_set():
            try:
                self.start()
                return
            except Exception:
                attempt += 1
                wait_s = backoff_s(attempt, first_s=1.0, max_s=FAULT_BACKOFF_MAX_S)
                log.exception("restarting job %s failed; again in %.0f s", self.job_id, wait_s)
                self.stopping.wait(wait_s)

    def _plan(self) -> None:
        """Writes the unit file, then the shards (a job planned before keeps its own)."""
        try:
            shards = tasks.plan(self.spec, self.work_dir)
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
        self.store.add_event(self.job_id, "planned", f"Planned: {len(shards)} shards.")
        self.planned.set()
        self.ledger_changed()

    def move(self, to: str, error: str | None = None) -> tuple[bool, str]:
        """A client's pause, resume or cancel (`control.steer`): whether this call moved the job,
        and its state now. Translators waiting for a lease hear of it at once."""
        moved = move_job(self.store, self.job_id, JobState(to), error)
        self.ledger_changed()
        return moved

    # --- the translators' calls: the ledger decides, the coordinator carries it out

    def lease(self, worker_id: str) -> LeaseReply:
        """A shard for `worker_id`, or `wait` (paused, or all shards leased), or `stop`. A
        translator over the job's fair share is let go here, between two of its shards. With no
        shard for it now, the call waits up to LEASE_WAIT_S for one (a shard put back, a resume,
        the job's end wake it), so an idle translator waits for work instead of polling."""
        deadline = time.monotonic() + LEASE_WAIT_S
        reply = self._lease_now(worker_id)
        while reply is WAIT and self._wait_for_work(deadline):
            reply = self._lease_now(worker_id)
        return reply

    def _lease_now(self, worker_id: str) -> LeaseReply:
        if not self.planned.is_set():
            self.planned.wait(PLAN_WAIT_S)
        job = self.store.get_job(self.job_id)
        if worker_id in self.over_share:
            self._release_idle_translators({worker_id}, "over its fair share")
        if job.state in TERMINAL or worker_id not in self.slots:
            return STOP
        if job.state is not JobState.RUNNING or not self.planned.is_set():
            return WAIT
        lease = self.ledger.lease(worker_id)
        return WAIT if lease is None else LeaseReply.translate(lease)

    def _wait_for_work(self, deadline: float) -> bool:
        """Waits for a change that may free a shard, or LEASE_RECHECK_S (a tail's backup lease
        comes with time alone); False at the deadline, or when MAX_LEASE_WAITERS already wait:
        the actor's other calls (heartbeats, completions, a client's cancel) always find a thread."""
        with self.work_changed:
            left = deadline - time.monotonic()
            if left <= 0 or self.lease_waiters >= MAX_LEASE_WAITERS or self.stopping.is_set():
                return False
            self.lease_waiters += 1
            try:
                self.work_changed.wait(min(left, LEASE_RECHECK_S))
            finally:
                self.lease_waiters -= 1
        return True

    def ledger_changed(self) -> None:
        """Wakes the translators waiting for a lease: a shard may be theirs, or the job moved."""
        with self.work_changed:
            self.work_changed.notify_all()

    def heartbeat(self, worker_id: str, index: int, lease_id: str, progress: int = 0) -> bool:
        """Renews the lease (see `ShardLedger.heartbeat`); False: the translator stops its shard."""
        return self.ledger.heartbeat(worker_id, index, lease_id, progress)

    def complete(
        self, worker_id: str, index: int, lease_id: str, part_path: str, stats: dict[str, Any]
    ) -> bool:
        """Accepts a shard's part unless its lease is stale (then the part is deleted); the holder
        of the lease that lost the shard's race is told to stop. What the translator asks the
        translation memory to keep (`stats["memory"]`) is kept once the part is accepted."""
        kept = stats.pop("memory", None)
        completion = self.ledger.complete(worker_id, index, lease_id, part_path, stats)
        if completion.loser is not None:
            self._stop_lease(completion.loser)
        if not completion.accepted:
            Path(part_path).unlink(missing_ok=True)
        else:
            self._keep_in_memory(kept, int(stats.get("segments_from_memory", 0)))
        log.info(
            "shard %d completed by %s: %s",
            index,
            worker_id,
            "accepted" if completion.accepted else "stale lease, part deleted",
        )
        return completion.accepted

    def recall(self, key: str, hashes: list[str]) -> dict[str, tuple[str, list[str]]]:
        """What the translation memory holds of these segments (sha256) for engine signature
        `key`: a translator's question, once a shard."""
        return self.memory.recall(key, hashes)

    def _keep_in_memory(self, kept: dict[str, Any] | None, recalled: int) -> None:
        """The memory is advice: a store that cannot take it now costs a later job its time,
        never this job its shard."""
        try:
            if kept:
                self.memory.remember(kept["key"], kept["entries"])
            if recalled:
                self.store.incr_counter(self.job_id, "segments_from_memory", recalled)
        except Exception:
            log.exception("the translation memory could not keep a shard's segments")

    def fail(self, worker_id: str, index: int, lease_id: str, error: str) -> None:
        """A shard raised (see `ShardLedger.fail`): the job pauses when no row explains it."""
        stop = self.ledger.fail(worker_id, index, lease_id, error)
        if stop is not None:
            self.ledger.pause(stop)
        self.ledger_changed()

    def fault(self, worker_id: str, index: int | None, lease_id: str | None, cause: str) -> float:
        """An error of a translator's machine (see `ShardLedger.fault`); how long it waits."""
        reply = self.ledger.fault(worker_id, index, lease_id, cause)
        if reply.pause is not None:
            self.ledger.pause(reply.pause)
        self.ledger_changed()
        return reply.wait_s

    def _stop_lease(self, holding: Holding) -> None:
        """Tells the holder of a lease that lost its shard's race to stop translating it."""
        slot = self.slots.get(holding.worker_id)
        if slot is None:
            return
        log.info("shard %d: %s lost its race and is told to stop", holding.index, holding.worker_id)
        slot.handle.lose_lease.remote(holding.lease_id)

    # --- what the driver, the API and the console read

    def progress(self) -> dict[str, Any]:
        job = self.store.get_job(self.job_id)
        progress = self.store.progress(self.job_id)
        return {
            "job_id": self.job_id,
            "state": job.state.value,
            "error": job.error,
            "counters": job.counters,
            "translators": self.translators(),
            **progress,
            "targets": target_progress(self.spec, progress),
        }

    def translators(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"worker_id": s.worker_id, "node_id": s.node_id, "device": s.device, **s.info}
                for s in self.slots.values()
            ]

    # --- the fleet loop: placement, deaths, lease expiry, the end of the job

    def _fleet_loop(self) -> None:
        """Ticks until the job ends. The store not answering (after its own retries) is waited
        out: it holds the job. Any other error fails the job, its traceback in the log."""
        store_errors = 0
        while not self.stopping.is_set():
            try:
                if self.unrecorded_failure is not None:
                    self._finish_failed(self.unrecorded_failure)
                elif self._tick():
                    return
                store_errors = 0
            except StoreError as error:
                store_errors += 1
                wait_s = backoff_s(store_errors, first_s=1.0, max_s=FAULT_BACKOFF_MAX_S)
                log.warning("the job store did not answer: %s Again in %.0f s.", error, wait_s)
                self.stopping.wait(wait_s)
                continue
            except MtfleetError as error:
                log.exception("job %s failed", self.job_id)
                self._finish_failed(str(error))
            except Exception as error:
                log.exception("the fleet loop of job %s failed", self.job_id)
                self._finish_failed(
                    f"The coordinator of job {self.job_id} failed: {type(error).__name__}: "
                    f"{error} (its traceback is in {log_path(self.work_dir, 'coordinator')})."
                )
            if self.unrecorded_failure is not None:
                store_errors += 1
                self.stopping.wait(backoff_s(store_errors, first_s=1.0, max_s=FAULT_BACKOFF_MAX_S))
                continue
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
        self._follow_spec(job.spec)
        if job.state is not self.seen_state:
            # moved by the store alone (no coordinator answered a client, or a fault paused it)
            self.seen_state = job.state
            self.ledger_changed()
        if job.state is JobState.CANCELLED:
            self._stop_cancelled()
            return True
        if job.state in TERMINAL:
            self._stop_translators(keep_warm=job.state is not JobState.FAILED)
            return True
        nodes = ray.nodes()
        self._reap(nodes)
        self.idle = job.state is JobState.PAUSED or not self.planned.is_set()
        if job.state is JobState.PAUSED:
            # A paused job holds no CPU or GPU: translators go once their leased shards are done.
            self._release_idle_translators(None, "paused")
        if not self.planned.is_set():
            # Translators are placed while the job is planned, so they load their models meanwhile.
            self._share(job.state, None)
            self._place(nodes, job.state)
            return False
        expired = self.store.expire_leases(self.job_id)
        if expired:
            log.info("leases expired on shards %s", expired)
            self.ledger_changed()
        shards = self.store.progress(self.job_id)["shards"]
        left = shards[ShardState.PENDING] + shards[ShardState.LEASED]
        if not left and job.state is JobState.PAUSED:
            # Its last shards landed after the pause: it ends once resumed, as a paused job may not.
            return False
        if not left:
            self._finish()
            return True
        self._share(job.state, left)
        self._place(nodes, job.state)
        return False

    def _follow_spec(self, stored: dict[str, Any]) -> None:
        """A job resumed with other fleet settings (translators a node, GPUs, lease TTL, the
        speculative tail: `RUN_SETTINGS`) runs with them from this tick, its live coordinator
        and ledger too; what changes the output never changes under a job."""
        if stored == self.stored_spec:
            return
        spec, _, _ = spec_from_store(stored)
        changed = sorted(
            name for name in RUN_SETTINGS if getattr(spec, name) != getattr(self.spec, name)
        )
        self.spec = self.ledger.spec = spec
        self.stored_spec = stored
        if changed:
            log.info("job %s runs with new settings from now: %s", self.job_id, ", ".join(changed))

    # --- sharing the cluster with other jobs: the warm pool

    @property
    def keep_warm_s(self) -> float:
        return self.spec.keep_warm_s or 0.0

    def _pool(self) -> Any:
        if self.pool is None:
            self.pool = warm_pool()
        return self.pool

    def _ask_pool(self, method: str, *args: Any) -> Any:
        """A call to the warm pool; None when it does not answer (it is started again next time)."""
        try:
            return ray.get(getattr(self._pool(), method).remote(*args), timeout=POOL_CALL_S)
        except (RayActorError, GetTimeoutError) as error:
            log.warning("the warm pool did not answer %s: %s", method, error)
            self.pool = None
            return None

    def _share(self, state: JobState, shards_left: int | None) -> None:
        """Tells the pool what this job wants (translators unless paused; with --gpus N, up to N
        GPUs of the autoscaler while shards are left) and what its translators hold on each node,
        and learns how many jobs share the fleet: when any of it changed, else every
        SHARE_EVERY_S."""
        wants = state is not JobState.PAUSED
        gpus = min(self.spec.gpus, shards_left) if wants and shards_left is not None else 0
        with self.lock:
            held = {n: self._held_on(n) for n in {s.node_id for s in self.slots.values()}}
        said = (wants, gpus, held)
        now = time.monotonic()
        if said == self.told_pool and now - self.told_pool_at < SHARE_EVERY_S:
            return
        sharing = self._ask_pool("share", self.job_id, wants, gpus, held)
        if sharing is not None:
            self.told_pool, self.told_pool_at = said, now
            self.sharing_jobs = sharing

    def _held_on(self, node_id: str) -> Resources:
        """What this job's translators on node `node_id` hold, or wait for."""
        held: Counter[str] = Counter()
        for slot in self.slots.values():
            if slot.node_id == node_id:
                on_gpu = slot.device.startswith("gpu")
                held.update(translator_resources(on_gpu, self.spec.gpus_per_translator))
        return dict(held)

    def _make_room(self, node: dict[str, Any], key: str, placing: Resources) -> None:
        """Asks the pool to evict idle translators of other models from `node` as far as this
        job's translators there, with one it places now (`placing`), need their devices."""
        wanted = Counter(self._held_on(node["NodeID"]))
        wanted.update(placing)
        total = node.get("Resources", {})
        self._ask_pool(
            "make_room",
            node["NodeID"],
            key,
            self.job_id,
            dict(wanted),
            {name: total.get(name, 0) for name in wanted},
        )

    def _fleet_of(self, node: dict[str, Any]) -> tuple[list[str], int]:
        """The devices this job's translators take on `node` (its fair share of GPU translators,
        `gpus_per_translator` GPUs each, then of `cpu_translators_per_node` CPU translators on the
        cores the GPU translators leave) and the cores left to the CPU translators."""
        resources = node.get("Resources", {})
        gpu_slots = int(resources.get("GPU", 0)) // self.spec.gpus_per_translator
        free_cpus = max(0, int(resources.get("CPU", 0)) - gpu_slots)
        cpu_slots = min(self.spec.cpu_translators_per_node, free_cpus)
        share = self.sharing_jobs
        return [
            *(f"gpu{i}" for i in range(math.ceil(gpu_slots / share))),
            *(f"cpu{i}" for i in range(math.ceil(cpu_slots / share))),
        ], free_cpus

    def _place(self, nodes: list[dict[str, Any]], state: JobState) -> None:
        """This job's fair share of each live node (`_fleet_of`); none while the job is paused.
        A translator over the share is let go once its shard is done."""
        if state is JobState.PAUSED:
            return
        with self.lock:
            self.over_share = set()
            for node in nodes:
                if not node.get("Alive"):
                    continue
                node_id = node["NodeID"]
                wanted, free_cpus = self._fleet_of(node)
                present = {s.device: s for s in self.slots.values() if s.node_id == node_id}
                self.over_share.update(s.worker_id for d, s in present.items() if d not in wanted)
                for device in wanted:
                    if device not in present:
                        self._start_translator(node, device, free_cpus)
                self._unblock(node, [s for s in present.values() if s.device in wanted])
            if self.over_share:
                self._release_idle_translators(self.over_share, "over its fair share")

    def _threads(self, free_cpus: int) -> int:
        per_node = max(1, min(self.spec.cpu_translators_per_node, free_cpus))
        # never more threads than the node has CPUs: a million of them took a node down
        return min(self.spec.threads or free_cpus // per_node, free_cpus) or 1

    def _start_translator(self, node: dict[str, Any], device: str, free_cpus: int) -> None:
        """A warm translator of this job's engine key on the node, or a new one (idle ones of other
        models there are evicted first where the node has no room for it)."""
        node_id = node["NodeID"]
        self.placed += 1
        worker_id = f"{node_id[:8]}-{device}-{self.incarnation}{self.placed}"
        on_gpu = device.startswith("gpu")
        threads = self._threads(free_cpus)
        key = engine_key(self.spec, "gpu" if on_gpu else "cpu", threads)
        handle = self._attach_warm(key, node_id, worker_id)
        if handle is None:
            resources = translator_resources(on_gpu, self.spec.gpus_per_translator)
            self._make_room(node, key, resources)
            handle = Translator.options(
                num_gpus=resources.get("GPU", 0),
                num_cpus=resources.get("CPU", 0),
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                # detached, it may outlive this job in the warm pool; it ends itself otherwise
                lifetime="detached" if self.keep_warm_s else None,
            ).remote(
                self_handle(),
                worker_id,
                self.spec.model_dump(),
                str(self.work_dir),
                on_gpu,
                threads,
            )
            log.info("placed translator %s on node %s", worker_id, node_id)
        else:
            log.info("took warm translator %s on node %s", worker_id, node_id)
        self._start_loop(TranslatorSlot(worker_id, node_id, device, handle, None, None, key=key))

    def _start_loop(self, slot: TranslatorSlot) -> None:
        # The slot exists before the loop starts, so the translator's first lease finds it.
        self.slots[slot.worker_id] = slot
        slot.info_ref = slot.handle.info.remote()
        slot.run_ref = slot.handle.run.remote()

    def _attach_warm(self, key: str, node_id: str, worker_id: str) -> Any | None:
        """A warm translator from the pool, attached to this job, or None."""
        while (handle := self._ask_pool("take", key, node_id)) is not None:
            try:
                ray.get(
                    handle.attach.remote(
                        self_handle(), worker_id, self.spec.model_dump(), str(self.work_dir)
                    ),
                    timeout=POOL_CALL_S,
                )
                return handle
            except (RayActorError, GetTimeoutError) as error:
                # it ended its keep-warm time as it was taken: another, or a new one
                log.info("a warm translator could not be attached: %s", error)
                ray.kill(handle, no_restart=True)
        return None

    def _unblock(self, node: dict[str, Any], slots: list[TranslatorSlot]) -> None:
        """A translator not started PENDING_S after it was placed may wait for its device: a warm
        one of its own key (a job that just ended) takes its place, or idle translators of other
        models on its node make room, all of them once it has waited STUCK_S."""
        node_id = node["NodeID"]
        now = time.monotonic()
        for slot in slots:
            if slot.info_ref is None or now - slot.checked_at < PENDING_S or _ready(slot.info_ref):
                continue
            slot.checked_at = now
            self.placed += 1
            worker_id = f"{node_id[:8]}-{slot.device}-{self.incarnation}{self.placed}"
            handle = self._attach_warm(slot.key, node_id, worker_id)
            if handle is None:
                if now - slot.placed_at < STUCK_S:
                    self._make_room(node, slot.key, {})
                else:
                    self._ask_pool("evict", node_id, slot.key)
                continue
            del self.slots[slot.worker_id]
            ray.kill(slot.handle, no_restart=True)
            self._start_loop(
                TranslatorSlot(worker_id, node_id, slot.device, handle, None, None, key=slot.key)
            )
            log.info("warm translator %s took the place of waiting %s", worker_id, slot.worker_id)

    def _release_idle_translators(self, worker_ids: set[str] | None, why: str) -> None:
        """Lets go of the translators `worker_ids` (None: all) that hold no lease: to the warm
        pool, or stopped. One that leased in a race finishes its shard (warm) or gives it back."""
        if not self.slots:
            return
        busy = {
            s.lease_owner for s in self.store.shards(self.job_id) if s.state is ShardState.LEASED
        }
        with self.lock:
            for slot in list(self.slots.values()):
                if slot.worker_id in busy or (
                    worker_ids is not None and slot.worker_id not in worker_ids
                ):
                    continue
                del self.slots[slot.worker_id]
                if not self._let_go(slot, keep_warm=True):
                    self.store.release_owner(self.job_id, slot.worker_id)
                log.info("translator %s let go: job %s is %s", slot.worker_id, self.job_id, why)
        self.ledger_changed()

    def _let_go(self, slot: TranslatorSlot, keep_warm: bool) -> bool:
        """Hands a translator no longer in `slots` to the warm pool (True), or stops it."""
        if keep_warm and self.keep_warm_s:
            try:
                ray.get(slot.handle.release.remote(self.keep_warm_s), timeout=POOL_CALL_S)
            except (RayActorError, GetTimeoutError):
                ray.kill(slot.handle, no_restart=True)
                return False
            resources = translator_resources(
                slot.device.startswith("gpu"), self.spec.gpus_per_translator
            )
            self._pool().keep.remote(
                slot.handle, slot.key, slot.node_id, resources, self.keep_warm_s
            )
            return True
        ray.kill(slot.handle, no_restart=True)
        return False

    def _reap(self, nodes: list[dict[str, Any]]) -> None:
        """Forgets translators that died, hung or whose node left, and puts their shards back at
        once."""
        with self.lock:
            self._restart_hung()
            alive_nodes = {n["NodeID"] for n in nodes if n.get("Alive")}
            for slot in list(self.slots.values()):
                if slot.info_ref is not None and _ready(slot.info_ref):
                    # a translator whose node left before it started is unschedulable
                    with contextlib.suppress(RayActorError, ActorUnschedulableError):
                        slot.info = ray.get(slot.info_ref)
                    slot.info_ref = None
                if slot.node_id not in alive_nodes:
                    self._forget(slot, node_left=True)
                    continue
                if not _ready(slot.run_ref):
                    continue
                try:
                    ray.get(slot.run_ref)
                except (
                    RayActorError,
                    ActorDiedError,
                    ActorUnavailableError,
                    ActorUnschedulableError,
                ):
                    self._forget(slot, node_left=False)
                    continue
                except Exception as error:
                    cause = getattr(error, "cause", None) or error
                    log.error("translator %s failed: %s", slot.worker_id, error)
                    self._finish_failed(f"Translator {slot.worker_id} failed: {cause}")
                    return
                # its lease loop ended (told to stop): it would end itself; killed, Ray knows
                # its end was meant and says nothing of a worker that died
                del self.slots[slot.worker_id]
                ray.kill(slot.handle, no_restart=True)

    def _restart_hung(self) -> None:
        """The watchdog (`ShardLedger.hung`): a hung translator is killed, not asked, and counted
        as a failed attempt at its shard, as a death is; `_place` starts another."""
        for hung in self.ledger.hung():
            slot = self.slots.get(hung.worker_id)
            if slot is None:
                continue
            self.store.incr_counter(self.job_id, "watchdog_restarts")
            self._forget(slot, node_left=False, cause=hung.cause)

    def _forget(self, slot: TranslatorSlot, node_left: bool, cause: str | None = None) -> None:
        del self.slots[slot.worker_id]
        ray.kill(slot.handle, no_restart=True)
        # a translator that dies (or hangs) on a live node may have been killed by its shard
        cause = cause or ("its node left" if node_left else "died")
        self.ledger.translator_gone(slot.worker_id, cause, counts=not node_left)
        self.store.add_event(self.job_id, "translator_lost", f"{slot.worker_id}: {cause}.")
        self.ledger_changed()

    def _stop_translators(self, keep_warm: bool) -> None:
        """The job ended: its translators go to the warm pool (`keep_warm`, a job that did not
        fail) or stop, and the job leaves the pool's registry (its GPUs are no longer asked for)."""
        with self.lock:
            slots = list(self.slots.values())
            self.slots.clear()
            for slot in slots:
                self._let_go(slot, keep_warm)
        self._ask_pool("leave", self.job_id)

    def _stop_cancelled(self) -> None:
        """The job was cancelled: a translator in the middle of a shard is killed, not asked (it
        may be deaf to a request: a long batch, a stuck call), the idle ones go to the warm pool
        or stop, and every lease is released, so nothing of the job runs or looks leased."""
        with self.lock:
            busy = [self.slots.pop(w) for w in self.ledger.busy() if w in self.slots]
            for slot in busy:
                ray.kill(slot.handle, no_restart=True)
        self._stop_translators(keep_warm=True)
        released = self.ledger.stop_all()
        self.store.add_event(
            self.job_id,
            "stopped",
            f"Stopped: {len(busy)} translators killed in the middle of a shard; "
            f"{len(released)} leases released.",
        )
        log.info(
            "job %s cancelled: %d translators killed in the middle of a shard, leases released "
            "on shards %s",
            self.job_id,
            len(busy),
            released,
        )

    def _finish(self) -> None:
        # every shard is done: the translators go warm now, for the next job, while this assembles
        self._stop_translators(keep_warm=True)
        failed = self.store.failed_shards(self.job_id, limit=10)
        if failed and self.spec.on_error == "fail":
            rows = ", ".join(str(s.row_start) for s in failed[:10])
            self._finish_failed(f"Translation failed on row(s) {rows}: {failed[0].error}")
            return
        try:
            manifest = tasks.assemble(self.store_url, self.job_id, self.work_dir)
        except MtfleetError as error:
            self._finish_failed(str(error))
            return
        self.store.set_manifest(self.job_id, manifest)
        # its history says so before its state does: a reader who sees it succeeded finds why
        self.store.add_event(self.job_id, "succeeded", f"Succeeded: {manifest['rows']} rows.")
        self.store.set_job_state(self.job_id, JobState.SUCCEEDED)
        if self.spec.memory:
            try:
                forgotten = self.memory.evict(int(self.spec.memory_max_gb * 1e9))
                if forgotten:
                    log.info("the translation memory forgot %d segments (LRU)", forgotten)
            except Exception:
                log.exception("the translation memory could not be kept to its size")
        # a job that no driver or server follows (detached) leaves no units or parts either
        try:
            retire(self.store, self.job_id, self.work_dir)
        except Exception:
            log.exception("the work files of job %s cannot be removed", self.job_id)

    def _finish_failed(self, message: str) -> None:
        """Fails the job with `message` and stops its translators. Never raises: a failure the
        store cannot take now is kept, and the fleet loop records it when the store answers."""
        try:
            if self.store.get_job(self.job_id).state not in TERMINAL:
                self.store.add_event(self.job_id, "failed", f"Failed: {message}")
                self.store.set_job_state(self.job_id, JobState.FAILED, error=message)
                log.error("job %s failed: %s", self.job_id, message)
            self.unrecorded_failure = None
        except Exception:
            log.exception("could not record that job %s failed: %s", self.job_id, message)
            self.unrecorded_failure = message
        try:
            self._stop_translators(keep_warm=False)
        except Exception:
            log.exception("could not stop the translators of job %s", self.job_id)


# max_task_retries: calls made while Ray restarts the coordinator wait for the new one.
JobCoordinatorActor = ray.remote(
    max_restarts=-1, max_task_retries=-1, max_concurrency=MAX_CONCURRENCY, num_cpus=0
)(JobCoordinator)


def _restarted_by_ray() -> bool:
    """Whether Ray restarted this coordinator's actor; False outside an actor (a test's)."""
    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    with warnings.catch_warnings():
        # Ray's own property reads its deprecated `actor_id` and warns into the user's terminal
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def wait_ended(coordinator: Any) -> None:
    """Gives the coordinator of a job that ended END_WAIT_S to stop its translators (a cancelled
    job's stuck ones are killed), before the caller kills it; a dead one has nothing to stop."""
    with contextlib.suppress(RayActorError, GetTimeoutError):
        ray.get(coordinator.ended.remote(END_WAIT_S), timeout=END_WAIT_S + POOL_CALL_S)


def self_handle() -> Any:
    return ray.get_runtime_context().current_actor


def _ready(ref: Any) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
