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
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import (
    GetTimeoutError,
    RayActorError,
)

from mtfleet.cluster import tasks
from mtfleet.cluster.fleet import FleetLoop
from mtfleet.cluster.ledger import FAULT_BACKOFF_MAX_S, ShardLedger
from mtfleet.cluster.link import POOL_CALL_S, PoolLink
from mtfleet.cluster.logs import log_to_work_dir
from mtfleet.cluster.memory_writer import MemoryWriter
from mtfleet.cluster.placement import Placement
from mtfleet.cluster.plan import PlanStep, UnitReader, units_memory_keys
from mtfleet.cluster.protocol import STOP, WAIT, KeptSegments, LeaseReply, ShardStats
from mtfleet.cluster.reaping import Reaping
from mtfleet.cluster.steering import move_job
from mtfleet.cluster.tail import Holding
from mtfleet.cluster.targets import target_progress
from mtfleet.errors import MtfleetError
from mtfleet.retry import backoff_s, retry
from mtfleet.spec import JobSpec, spec_from_store
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
# the longest a progress call waits for the job's end (a driver asks every half second)
MAX_PROGRESS_WAIT_S = 2.0
# A driver that saw its job end waits this long for the coordinator to stop the job's translators
# before it kills the coordinator.
END_WAIT_S = 15.0


def coordinator_name(job_id: str) -> str:
    return f"mtfleet-job-{job_id}"


def planning_may_fill(spec: JobSpec, memory: TranslationMemory) -> bool:
    """Whether planning may fill units from the translation memory (it holds some under the
    job's keys): then planning looks its units up there, no translator is placed before it finds
    a unit the memory does not hold (`work_found`), and a job filled wholly at planning is
    assembled without starting one. Otherwise no unit is looked up."""
    if not tasks.fills_from_memory(spec):
        return False
    keys = units_memory_keys(spec)
    return keys is not None and memory.holds(keys.values())


class JobCoordinator:
    """One job's coordinator, as a plain class (its actor is `JobCoordinatorActor`, whose process
    Ray names after this class): tests build one on a store with no Ray. Its parts are objects:
    `placement` (where translators go), `reaping` (how they leave), `ledger` (every decision
    about the shards), `fleet` (the fleet loop and the job's end)."""

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
        job = self.store.jobs.get(job_id)
        spec, _, _ = spec_from_store(job.spec)
        # translators waiting in `lease` for a shard; notified by `ledger_changed`
        self.work_changed = threading.Condition()
        self.lease_waiters = 0
        pool = PoolLink()
        # the job's translators (`slots`, under `lock`) and where they go
        self.placement = Placement(job_id, self.store, spec, self.work_dir, pool)
        # set once shards are stored whose units are on disk (the plan's first steps, or all of
        # it): translators lease nothing before; the ledger's `rows_planned` says how far
        self.planned = threading.Event()
        self.memory = TranslationMemory(self.store)
        # what completions ask the memory to keep, written off the translators' path
        self.memory_writer = MemoryWriter(self.memory, self.work_dir)
        # every decision about the shards: leases, heartbeats, completions, failures, faults,
        # the watchdog; its memory (the speculative tail's, the watchdog's) is gone with this
        # coordinator, as its leases are
        self.ledger = ShardLedger(
            self.store, job_id, spec, is_live=lambda worker_id: worker_id in self.placement.slots
        )
        self.reaping = Reaping(
            job_id, self.store, self.placement, self.ledger, pool, self.ledger_changed
        )
        self.fleet = FleetLoop(
            job_id=job_id,
            store=self.store,
            store_url=store_url,
            work_dir=self.work_dir,
            spec=spec,
            stored_spec=job.spec,
            placement=self.placement,
            reaping=self.reaping,
            ledger=self.ledger,
            memory=self.memory,
            memory_writer=self.memory_writer,
            planned=self.planned,
            ledger_changed=self.ledger_changed,
        )
        if restarted:
            threading.Thread(target=self._start_again, name="restart", daemon=True).start()

    @property
    def spec(self) -> JobSpec:
        """The job's spec as its store holds it now (the fleet loop follows it)."""
        return self.fleet.spec

    # --- lifecycle

    def start(self) -> str:
        """Resumes the job from the store and starts placing translators; idempotent."""
        with self.placement.lock:
            if self.fleet.thread is not None:
                return self.store.jobs.get(self.job_id).state.value
            job = self.store.jobs.get(self.job_id)
            if job.state in TERMINAL:
                return job.state.value
            # what an earlier coordinator's completions asked the memory to keep, and it had not
            self.memory_writer.replay()
            shards = self.store.shards.in_row_order(self.job_id)
            # No translator of an earlier coordinator survives it: its leases go back at once.
            for owner in {s.lease_owner for s in shards if s.state is ShardState.LEASED}:
                self.store.leases.release_owner(self.job_id, owner)
            done = sum(s.state is ShardState.DONE for s in shards)
            if done > job.counters.get("shards_reused", 0):
                self.store.counters.add(
                    self.job_id, "shards_reused", done - job.counters.get("shards_reused", 0)
                )
            if job.counters.get("coordinator_starts", 0) > 0:
                self.store.counters.add(self.job_id, "coordinator_restarts")
                self.store.events.add(self.job_id, "restarted", f"Restarted; {done} done.")
            self.store.counters.add(self.job_id, "coordinator_starts")
            if job.state is JobState.QUEUED:
                self.store.jobs.set_state(self.job_id, JobState.RUNNING)
            if job.state is JobState.PLANNING or not UnitReader.exists(self.work_dir):
                # Planning reads the whole input: here, never in the API's process, while the
                # fleet loop places translators that load their engines meanwhile, and they
                # lease its first shards while it reads on. A plan an earlier coordinator stored
                # part of goes on where it ended.
                fill = planning_may_fill(self.spec, self.memory)
                place_while_planning = not fill
                resume = (shards[-1].row_end if shards else 0, len(shards))
                self.ledger.rows_planned = 0
                threading.Thread(
                    target=self._plan, args=(fill, resume), name="planner", daemon=True
                ).start()
            else:
                place_while_planning = True
                self.planned.set()
            self.fleet.start(place_while_planning)
            state = self.store.jobs.get(self.job_id).state.value
            log.info("job %s started: %s, %d shards done before", self.job_id, state, done)
            return state

    def ended(self, timeout_s: float) -> bool:
        """Waits up to `timeout_s` for the fleet loop to end (the job ended and its translators
        were stopped or handed to the warm pool); whether it has. A driver that saw the job end
        calls it before it kills this coordinator, so a cancel kills a stuck translator first."""
        deadline = time.monotonic() + timeout_s
        ended = self.fleet.ended(timeout_s)
        # the translators' waiting lease calls have their answer (stop) before the kill
        with self.work_changed:
            self.work_changed.wait_for(
                lambda: self.lease_waiters == 0, max(0.0, deadline - time.monotonic())
            )
        return ended

    def _start_again(self) -> None:
        """Ray restarted this coordinator after its process died: it starts the job itself, as
        no driver or API may be alive to call `start`."""
        attempt = 0
        while True:
            try:
                self.start()
                return
            except Exception:
                attempt += 1
                wait_s = backoff_s(attempt, first_s=1.0, max_s=FAULT_BACKOFF_MAX_S)
                log.exception("restarting job %s failed; again in %.0f s", self.job_id, wait_s)
                time.sleep(wait_s)

    def _plan(self, fill: bool, resume: tuple[int, int]) -> None:
        """Writes the unit file and stores the shards as planning cuts them (`take_steps`); with
        `fill` (`planning_may_fill`), the units the memory holds are filled from it. `resume`:
        the (rows, shards) an earlier coordinator stored of the plan."""
        try:
            translators = self.placement.fleet_size(ray.nodes())
            steps = tasks.plan(
                self.spec,
                self.work_dir,
                self.store_url,
                translators,
                fill,
                _current_actor(),
                resume,
            )
            self.take_steps(steps, translators)
        except MtfleetError as error:
            self.fleet.finish_failed(str(error))
        except Exception as error:
            log.exception("planning job %s failed", self.job_id)
            self.fleet.finish_failed(f"Planning failed: {type(error).__name__}: {error}")

    def take_steps(self, steps: Iterable[PlanStep], translators: int) -> None:
        """Stores each step's shards as planning hands them over (a shard stored before keeps its
        own), and leases those whose rows' units are on disk; the job may end once the last step
        says the plan is whole."""
        for step in steps:
            if (step.shards or step.done) and not self.store.jobs.add_plan(
                self.job_id, step.shards, step.first_index
            ):
                return  # the job ended
            shards = step.first_index + len(step.shards)
            if step.done:  # said before the job may end
                log.info(
                    "job %s planned: %d shards for %d translators", self.job_id, shards, translators
                )
                message = f"Planned: {shards} shards for {translators} translators."
                self.store.events.add(self.job_id, "planned", message)
            self.ledger.rows_planned = None if step.done else step.rows
            if shards or step.done:
                self.planned.set()
            self.fleet.wake()
            self.ledger_changed()

    def work_found(self) -> None:
        """Planning's word that the memory does not hold every unit: translators are placed now,
        to load their engines while the rest is planned."""
        self.fleet.place_now()

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
        job = self.store.jobs.get(self.job_id)
        if worker_id in self.placement.over_share:
            self.reaping.release_idle({worker_id}, "over its fair share")
        if job.state in TERMINAL or worker_id not in self.placement.slots:
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
            if left <= 0 or self.lease_waiters >= MAX_LEASE_WAITERS:
                return False
            self.lease_waiters += 1
            try:
                self.work_changed.wait(min(left, LEASE_RECHECK_S))
            finally:
                self.lease_waiters -= 1
                if not self.lease_waiters:
                    self.work_changed.notify_all()  # `ended` waits for none to be left
        return True

    def ledger_changed(self) -> None:
        """Wakes the translators waiting for a lease: a shard may be theirs, or the job moved."""
        with self.work_changed:
            self.work_changed.notify_all()

    def heartbeat(self, worker_id: str, index: int, lease_id: str, progress: int = 0) -> bool:
        """Renews the lease (see `ShardLedger.heartbeat`); False: the translator stops its shard."""
        return self.ledger.heartbeat(worker_id, index, lease_id, progress)

    def complete(
        self,
        worker_id: str,
        index: int,
        lease_id: str,
        part_path: str,
        stats: ShardStats,
        kept: Sequence[KeptSegments] = (),
    ) -> bool:
        """Accepts a shard's part unless its lease is stale (then the part is deleted); the holder
        of the lease that lost the shard's race is told to stop. What the translator asks the
        translation memory to keep (`kept`) is kept once the part is accepted."""
        completion = self.ledger.complete(worker_id, index, lease_id, part_path, stats)
        if completion.loser is not None:
            self._stop_lease(completion.loser)
        if not completion.accepted:
            Path(part_path).unlink(missing_ok=True)
        else:
            self._keep_in_memory(kept)
        if completion.none_held:
            # perhaps the job's last shard: its end (assembly) need not wait for the next tick
            self.fleet.wake()
        log.info(
            "shard %d completed by %s: %s",
            index,
            worker_id,
            "accepted" if completion.accepted else "stale lease, part deleted",
        )
        return completion.accepted

    def recall(self, key: str, hashes: list[str]) -> dict[str, tuple[str, list[str]]]:
        """What the translation memory holds of these segments (sha256) for engine signature
        `key`, with what completions kept that its writer has not yet written: a translator's
        question, once a shard."""
        # what waits first: what is written meanwhile is in the store by the time it is asked
        waiting = self.memory_writer.waiting_for(key, hashes)
        held = self.memory.recall(key, hashes)
        held.update(waiting)
        return held

    def _keep_in_memory(self, kept: Sequence[KeptSegments]) -> None:
        """Each target language's new segments under its translator's key, its whole units under
        planning's (`units_memory_keys`), handed to the memory's writer (journaled, written by its
        thread). The memory is advice: a store that cannot take it now costs a later job its
        time, never this job its shard."""
        try:
            units_keys = units_memory_keys(self.spec) if kept else None
            entries: dict[str, Any] = {}
            for target in kept:
                entries[target.key] = target.entries
                if target.units and units_keys is not None:
                    entries[units_keys[target.tgt_lang]] = target.units
            self.memory_writer.keep(entries)
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
        slot = self.placement.slots.get(holding.worker_id)
        if slot is None:
            return
        log.info("shard %d: %s lost its race and is told to stop", holding.index, holding.worker_id)
        slot.handle.lose_lease.remote(holding.lease_id)

    # --- what the driver, the API and the console read

    def progress(self, wait_s: float = 0.0) -> dict[str, Any]:
        """The job's progress; with `wait_s`, after waiting up to that long for the job to end,
        so that a driver polling every `wait_s` hears of the end when it comes."""
        if wait_s > 0:
            self.fleet.ended(min(wait_s, MAX_PROGRESS_WAIT_S))
        job = self.store.jobs.get(self.job_id)
        progress = self.store.counters.progress(self.job_id)
        return {
            "job_id": self.job_id,
            "state": job.state.value,
            "error": job.error,
            "counters": job.counters,
            "translators": self.placement.translators(),
            # its shards, rows and rows_total are those planned so far
            "planning": self.ledger.rows_planned is not None,
            **progress,
            "targets": target_progress(self.spec, progress),
        }

    def translators(self) -> list[dict[str, Any]]:
        return self.placement.translators()


# max_task_retries: calls made while Ray restarts the coordinator wait for the new one.
JobCoordinatorActor = ray.remote(
    max_restarts=-1, max_task_retries=-1, max_concurrency=MAX_CONCURRENCY, num_cpus=0
)(JobCoordinator)


def _in_actor() -> bool:
    """Whether this coordinator runs in its Ray actor, and not in a test's process."""
    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


def _current_actor() -> Any:
    """This coordinator's actor handle; None outside an actor (a test's)."""
    return ray.get_runtime_context().current_actor if _in_actor() else None


def _restarted_by_ray() -> bool:
    """Whether Ray restarted this coordinator's actor; False outside an actor (a test's)."""
    if not _in_actor():
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
