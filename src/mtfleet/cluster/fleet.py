"""A coordinator's fleet loop: it follows the job's state and settings, places and reaps its
translators, expires leases, and ends the job: assembly (a Ray task), or its failure. A part of
`JobCoordinator` (its store, ledger and spec are the coordinator's)."""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from mtfleet.cluster import tasks
from mtfleet.cluster.ledger import FAULT_BACKOFF_MAX_S
from mtfleet.cluster.logs import log_path
from mtfleet.cluster.retention import retire
from mtfleet.errors import MtfleetError, StoreError
from mtfleet.retry import backoff_s
from mtfleet.spec import RUN_SETTINGS, spec_from_store
from mtfleet.store import (
    TERMINAL,
    JobState,
    ShardState,
)

log = logging.getLogger(__name__)

FLEET_TICK_S = 0.25
# A paused or planning job's loop has little to do: it looks less often (the plan's end wakes it).
IDLE_TICK_S = 2.0


class FleetLoop:
    """The coordinator's fleet loop and the job's end."""

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
                    # a job that ended another way keeps what its accepted shards translated too
                    self.memory_writer.flush()
                    self.job_ended.set()
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
        job = self.store.jobs.get(self.job_id)
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
            # Translators are placed while the job is planned, so they load their models
            # meanwhile; unless the memory may fill it all: then once the plan shows work left.
            if self.place_while_planning:
                self.placement.share(job.state, None)
                self.placement.place(nodes, job.state)
            return False
        expired = self.store.leases.expire(self.job_id)
        if expired:
            log.info("leases expired on shards %s", expired)
            self.ledger_changed()
        shards = self.store.counters.progress(self.job_id)["shards"]
        left = shards[ShardState.PENDING] + shards[ShardState.LEASED]
        if not left and job.state is JobState.PAUSED:
            # Its last shards landed after the pause: it ends once resumed, as a paused job may not.
            return False
        if not left:
            self._finish()
            return True
        self.placement.share(job.state, left)
        self.placement.place(nodes, job.state)
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
        self.spec = self.ledger.spec = self.placement.spec = spec
        self.stored_spec = stored
        if changed:
            log.info("job %s runs with new settings from now: %s", self.job_id, ", ".join(changed))

    def _finish(self) -> None:
        # every shard is done: the translators go warm now, for the next job, while this assembles
        self._stop_translators(keep_warm=True)
        failed = self.store.shards.failed(self.job_id, limit=10)
        if failed and self.spec.on_error == "fail":
            rows = ", ".join(str(s.row_start) for s in failed[:10])
            self._finish_failed(f"Translation failed on row(s) {rows}: {failed[0].error}")
            return
        # the memory holds the job's every translation before anyone sees it succeeded
        self.memory_writer.flush()
        try:
            manifest = tasks.assemble(self.store_url, self.job_id, self.work_dir)
        except MtfleetError as error:
            self._finish_failed(str(error))
            return
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

    def _finish_failed(self, message: str) -> None:
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
            self._stop_translators(keep_warm=False)
        except Exception:
            log.exception("could not stop the translators of job %s", self.job_id)
