"""A coordinator's fleet loop: it follows the job's state and settings, places and reaps its
translators, expires leases, and ends the job: assembly (a Ray task), or its failure. An object of
`JobCoordinator`'s, over its `Placement` (where translators go), its `Reaping` (how they leave)
and its `ShardLedger`; it holds the job's spec as it follows the store's."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from mtfleet.cluster import tasks
from mtfleet.cluster.ledger import FAULT_BACKOFF_MAX_S, ShardLedger
from mtfleet.cluster.logs import log_path
from mtfleet.cluster.memory_writer import MemoryWriter
from mtfleet.cluster.placement import Placement
from mtfleet.cluster.reaping import Reaping
from mtfleet.cluster.retention import retire
from mtfleet.errors import MtfleetError, StoreError
from mtfleet.retry import backoff_s
from mtfleet.spec import RUN_SETTINGS, JobSpec, spec_from_store
from mtfleet.store import (
    TERMINAL,
    JobState,
    JobStore,
    ShardState,
)
from mtfleet.store.memory import TranslationMemory

log = logging.getLogger(__name__)

FLEET_TICK_S = 0.25
# A paused or planning job's loop has little to do: it looks less often (the plan's end wakes it).
IDLE_TICK_S = 2.0


class FleetLoop:
    """Job `job_id`'s fleet loop, from `start` until the job ends, and the job's end. `spec` is
    the job's as the store holds it (`stored_spec`), followed from each tick (`follow_spec`);
    `planned` is set once shards may be leased, and the ledger's `rows_planned` is None once the
    plan is whole; `ledger_changed()` wakes the translators waiting for a lease."""

    def __init__(
        self,
        *,
        job_id: str,
        store: JobStore,
        store_url: str,
        work_dir: Path,
        spec: JobSpec,
        stored_spec: dict[str, Any],
        placement: Placement,
        reaping: Reaping,
        ledger: ShardLedger,
        memory: TranslationMemory,
        memory_writer: MemoryWriter,
        planned: threading.Event,
        ledger_changed: Callable[[], None],
    ) -> None:
        self.job_id = job_id
        self.store = store
        self.store_url = store_url
        self.work_dir = work_dir
        self.spec = spec
        self.stored_spec = stored_spec
        self.placement = placement
        self.reaping = reaping
        self.ledger = ledger
        self.memory = memory
        self.memory_writer = memory_writer
        self.planned = planned
        self.ledger_changed = ledger_changed
        self.thread: threading.Thread | None = None
        # translators are placed while the job is planned, unless planning may fill it all
        self.place_while_planning = True
        # paused or planning: the loop ticks every IDLE_TICK_S
        self.idle = False
        # a failure the store could not take when it happened; the loop records it
        self.unrecorded_failure: str | None = None
        # the job's state at the last tick: a change wakes the waiting translators
        self.seen_state: JobState | None = None
        # set by `wake`: the next tick comes now, not FLEET_TICK_S after the last
        self.woken = threading.Event()

    def start(self, place_while_planning: bool) -> None:
        """Starts the loop in a thread of its own; `place_while_planning`: translators are placed
        before the plan is written (planning may not fill the whole job from the memory)."""
        self.place_while_planning = place_while_planning
        self.thread = threading.Thread(target=self._run, name="fleet", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        """Ticks now: a completion left no lease held and the job may have no shard left, or the
        plan is written."""
        self.woken.set()

    def place_now(self) -> None:
        """Places translators from the next tick on, now, though the job is still planned: the
        memory does not fill it all."""
        self.place_while_planning = True
        self.woken.set()

    def ended(self, timeout_s: float) -> bool:
        """Waits up to `timeout_s` for the loop to end; whether it has (or never started)."""
        thread = self.thread
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    # --- the fleet loop: placement, deaths, lease expiry, the end of the job

    def _run(self) -> None:
        """Ticks until the job ends. The store not answering (after its own retries) is waited
        out: it holds the job. Any other error fails the job, its traceback in the log."""
        store_errors = 0
        while True:
            try:
                if self.unrecorded_failure is not None:
                    self.finish_failed(self.unrecorded_failure)
                elif self._tick():
                    # a job that ended another way keeps what its accepted shards translated too
                    self.memory_writer.flush()
                    return
                store_errors = 0
            except StoreError as error:
                store_errors += 1
                wait_s = backoff_s(store_errors, first_s=1.0, max_s=FAULT_BACKOFF_MAX_S)
                log.warning("the job store did not answer: %s Again in %.0f s.", error, wait_s)
                time.sleep(wait_s)
                continue
            except MtfleetError as error:
                log.exception("job %s failed", self.job_id)
                self.finish_failed(str(error))
            except Exception as error:
                log.exception("the fleet loop of job %s failed", self.job_id)
                self.finish_failed(
                    f"The coordinator of job {self.job_id} failed: {type(error).__name__}: "
                    f"{error} (its traceback is in {log_path(self.work_dir, 'coordinator')})."
                )
            if self.unrecorded_failure is not None:
                store_errors += 1
                time.sleep(backoff_s(store_errors, first_s=1.0, max_s=FAULT_BACKOFF_MAX_S))
                continue
            self._rest()

    def _rest(self) -> None:
        """Waits for the next tick: longer while idle (paused, or planning), cut short by `wake`
        (the last lease given back, the plan's end, planning finding work)."""
        if self.woken.wait(IDLE_TICK_S if self.idle else FLEET_TICK_S):
            self.woken.clear()

    def _tick(self) -> bool:
        """One round of the fleet loop; True when the job has ended."""
        job = self.store.jobs.get(self.job_id)
        self.follow_spec(job.spec)
        if job.state is not self.seen_state:
            # moved by the store alone (no coordinator answered a client, or a fault paused it)
            self.seen_state = job.state
            self.ledger_changed()
        if job.state is JobState.CANCELLED:
            self.reaping.stop_cancelled()
            return True
        if job.state in TERMINAL:
            self.reaping.stop_translators(keep_warm=job.state is not JobState.FAILED)
            return True
        nodes = ray.nodes()
        failure = self.reaping.reap(nodes)
        if failure is not None:
            self.finish_failed(failure)
            return False
        self.idle = job.state is JobState.PAUSED or not self.planned.is_set()
        if job.state is JobState.PAUSED:
            # A paused job holds no CPU or GPU: translators go once their leased shards are done.
            self.reaping.release_idle(None, "paused")
        if not self.planned.is_set():
            # Translators are placed while the job is planned, so they load their models
            # meanwhile; unless the memory may fill it all: then once planning finds work
            # (`place_now`).
            if self.place_while_planning:
                self._place(nodes, job.state, None)
            return False
        expired = self.store.leases.expire(self.job_id)
        if expired:
            log.info("leases expired on shards %s", expired)
            self.ledger_changed()
        shards = self.store.counters.progress(self.job_id)["shards"]
        left = shards[ShardState.PENDING] + shards[ShardState.LEASED]
        if self.ledger.rows_planned is not None:
            # still planned: its first shards are leased while the rest is cut (by translators
            # placed as above), and the shards left say nothing yet of the translators it wants
            if self.place_while_planning:
                self._place(nodes, job.state, None)
            return False
        if not left and job.state is JobState.PAUSED:
            # Its last shards landed after the pause: it ends once resumed, as a paused job may not.
            return False
        if not left:
            self._finish()
            return True
        self._place(nodes, job.state, left)
        return False

    def _place(self, nodes: list[dict[str, Any]], state: JobState, shards_left: int | None) -> None:
        """Tells the pool what the job wants, places its fair share of each node, and lets go
        of the translators over it that hold no lease (the others go at their next lease)."""
        self.placement.share(state, shards_left)
        self.placement.place(nodes, state)
        if self.placement.over_share:
            self.reaping.release_idle(self.placement.over_share, "over its fair share")

    def follow_spec(self, stored: dict[str, Any]) -> None:
        """A job resumed with other fleet settings (translators a node, GPUs, lease TTL, the
        speculative tail: `RUN_SETTINGS`) runs with them from this tick, its live coordinator
        and ledger too; what changes the output never changes under a job."""
        if stored == self.stored_spec:
            return
        spec, _, _ = spec_from_store(stored)
        changed = sorted(
            name for name in RUN_SETTINGS if getattr(spec, name) != getattr(self.spec, name)
        )
        self.spec = self.ledger.spec = self.placement.spec = spec
        self.stored_spec = stored
        if changed:
            log.info("job %s runs with new settings from now: %s", self.job_id, ", ".join(changed))

    def _finish(self) -> None:
        # every shard is done: the translators go warm now, for the next job, while this assembles
        self.reaping.stop_translators(keep_warm=True)
        failed = self.store.shards.failed(self.job_id, limit=10)
        if failed and self.spec.on_error == "fail":
            rows = ", ".join(str(s.row_start) for s in failed[:10])
            self.finish_failed(f"Translation failed on row(s) {rows}: {failed[0].error}")
            return
        # the memory holds the job's every translation before anyone sees it succeeded
        self.memory_writer.flush()
        log.info("job %s: every shard is done; assembling its output", self.job_id)
        try:
            manifest = tasks.assemble(self.store_url, self.job_id, self.work_dir)
        except MtfleetError as error:
            self.finish_failed(str(error))
            return
        log.info("job %s: assembled", self.job_id)
        self.store.jobs.set_manifest(self.job_id, manifest)
        # its history says so before its state does: a reader who sees it succeeded finds why
        self.store.events.add(self.job_id, "succeeded", f"Succeeded: {manifest['rows']} rows.")
        self.store.jobs.set_state(self.job_id, JobState.SUCCEEDED)
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

    def finish_failed(self, message: str) -> None:
        """Fails the job with `message` and stops its translators. Never raises: a failure the
        store cannot take now is kept, and the fleet loop records it when the store answers."""
        try:
            if self.store.jobs.get(self.job_id).state not in TERMINAL:
                self.store.events.add(self.job_id, "failed", f"Failed: {message}")
                self.store.jobs.set_state(self.job_id, JobState.FAILED, error=message)
                log.error("job %s failed: %s", self.job_id, message)
            self.unrecorded_failure = None
        except Exception:
            log.exception("could not record that job %s failed: %s", self.job_id, message)
            self.unrecorded_failure = message
        try:
            self.reaping.stop_translators(keep_warm=False)
        except Exception:
            log.exception("could not stop the translators of job %s", self.job_id)
