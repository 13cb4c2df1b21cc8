"""How a job's translators leave it: let go when idle (to the warm pool, or stopped), reaped when
they die, hang or lose their node (their shards go back at once), stopped when the job ends. An
object of `JobCoordinator`'s, over its `Placement` (the translators, under its lock) and its
`ShardLedger` (whose leases of a translator that goes are given back)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    ActorUnschedulableError,
    GetTimeoutError,
    RayActorError,
)

from mtfleet.cluster.ledger import ShardLedger
from mtfleet.cluster.link import POOL_CALL_S, PoolLink
from mtfleet.cluster.placement import Placement, TranslatorSlot, _ready
from mtfleet.cluster.translator import translator_resources
from mtfleet.store import JobStore, ShardState

log = logging.getLogger(__name__)


class Reaping:
    """How job `job_id`'s translators (`placement`'s) leave it. `ledger_changed()` wakes the
    translators waiting for a lease: a shard went back, or the fleet changed."""

    def __init__(
        self,
        job_id: str,
        store: JobStore,
        placement: Placement,
        ledger: ShardLedger,
        pool: PoolLink,
        ledger_changed: Callable[[], None],
    ) -> None:
        self.job_id = job_id
        self.store = store
        self.placement = placement
        self.ledger = ledger
        self.pool = pool
        self.ledger_changed = ledger_changed

    def release_idle(self, worker_ids: set[str] | None, why: str) -> None:
        """Lets go of the translators `worker_ids` (None: all) that hold no lease: to the warm
        pool, or stopped. One that leased in a race finishes its shard (warm) or gives it back."""
        slots = self.placement.slots
        if not slots:
            return
        busy = {
            s.lease_owner
            for s in self.store.shards.in_row_order(self.job_id)
            if s.state is ShardState.LEASED
        }
        with self.placement.lock:
            for slot in list(slots.values()):
                if slot.worker_id in busy or (
                    worker_ids is not None and slot.worker_id not in worker_ids
                ):
                    continue
                del slots[slot.worker_id]
                if not self._let_go(slot, keep_warm=True):
                    self.store.leases.release_owner(self.job_id, slot.worker_id)
                log.info("translator %s let go: job %s is %s", slot.worker_id, self.job_id, why)
        self.ledger_changed()

    def _let_go(self, slot: TranslatorSlot, keep_warm: bool) -> bool:
        """Hands a translator no longer in `slots` to the warm pool (True), or stops it."""
        keep_warm_s = self.placement.keep_warm_s
        if keep_warm and keep_warm_s:
            try:
                ray.get(slot.handle.release.remote(keep_warm_s), timeout=POOL_CALL_S)
            except (RayActorError, GetTimeoutError):
                ray.kill(slot.handle, no_restart=True)
                return False
            resources = translator_resources(
                slot.device.startswith("gpu"), self.placement.spec.gpus_per_translator
            )
            self.pool.keep(slot.handle, slot.key, slot.node_id, resources, keep_warm_s)
            return True
        ray.kill(slot.handle, no_restart=True)
        return False

    def reap(self, nodes: list[dict[str, Any]]) -> str | None:
        """Forgets translators that died, hung or whose node left, and puts their shards back at
        once; the failure of a translator whose lease loop raised (it fails the job), or None."""
        with self.placement.lock:
            self._restart_hung()
            alive_nodes = {n["NodeID"] for n in nodes if n.get("Alive")}
            for slot in list(self.placement.slots.values()):
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
                    return f"Translator {slot.worker_id} failed: {cause}"
                # its lease loop ended (told to stop): it would end itself; killed, Ray knows
                # its end was meant and says nothing of a worker that died
                del self.placement.slots[slot.worker_id]
                ray.kill(slot.handle, no_restart=True)
        return None

    def _restart_hung(self) -> None:
        """The watchdog (`ShardLedger.hung`): a hung translator is killed, not asked, and counted
        as a failed attempt at its shard, as a death is; `Placement.place` starts another."""
        for hung in self.ledger.hung():
            slot = self.placement.slots.get(hung.worker_id)
            if slot is None:
                continue
            self.store.counters.add(self.job_id, "watchdog_restarts")
            self._forget(slot, node_left=False, cause=hung.cause)

    def _forget(self, slot: TranslatorSlot, node_left: bool, cause: str | None = None) -> None:
        del self.placement.slots[slot.worker_id]
        ray.kill(slot.handle, no_restart=True)
        # a translator that dies (or hangs) on a live node may have been killed by its shard
        cause = cause or ("its node left" if node_left else "died")
        self.ledger.translator_gone(slot.worker_id, cause, counts=not node_left)
        self.store.events.add(self.job_id, "translator_lost", f"{slot.worker_id}: {cause}.")
        self.ledger_changed()

    def stop_translators(self, keep_warm: bool) -> None:
        """The job ended: its translators go to the warm pool (`keep_warm`, a job that did not
        fail) or stop, and the job leaves the pool's registry (its GPUs are no longer asked for)."""
        with self.placement.lock:
            # each is released while still ours: a lease it asks for meanwhile is `wait`, never
            # a `stop` that would end it before it hears it may go warm
            for slot in list(self.placement.slots.values()):
                self._let_go(slot, keep_warm)
            self.placement.slots.clear()
        # released first: a translator told to stop now goes warm, and no lease call is left
        # waiting when the driver kills this coordinator
        self.ledger_changed()
        self.pool.leave(self.job_id)

    def stop_cancelled(self) -> None:
        """The job was cancelled: a translator in the middle of a shard is killed, not asked (it
        may be deaf to a request: a long batch, a stuck call), the idle ones go to the warm pool
        or stop, and every lease is released, so nothing of the job runs or looks leased."""
        slots = self.placement.slots
        with self.placement.lock:
            busy = [slots.pop(w) for w in self.ledger.busy() if w in slots]
            for slot in busy:
                ray.kill(slot.handle, no_restart=True)
        self.stop_translators(keep_warm=True)
        released = self.ledger.stop_all()
        self.store.events.add(
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
