"""Where a job's translators go: its fair share of each node's devices (the warm pool, `pool.py`),
warm translators taken from the pool, new ones started, and room made for one that waits for a
device. An object of `JobCoordinator`'s: it owns the job's translators (`slots`) and their lock, and
names those over the job's share (`over_share`), which `Reaping` lets go of."""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import (
    GetTimeoutError,
    RayActorError,
)
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mtfleet.cluster.link import POOL_CALL_S, PoolLink
from mtfleet.cluster.pool import JOB_SILENCE_S, Resources
from mtfleet.cluster.translator import Translator, engine_key, translator_resources
from mtfleet.spec import JobSpec
from mtfleet.store import (
    JobState,
    JobStore,
)

log = logging.getLogger(__name__)

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


class Placement:
    """One job's translators and where they go. `spec` follows the job's (`FleetLoop.follow_spec`
    sets it)."""

    def __init__(
        self,
        job_id: str,
        store: JobStore,
        spec: JobSpec,
        work_dir: Path,
        pool: PoolLink,
    ) -> None:
        self.job_id = job_id
        self.store = store
        self.spec = spec
        self.work_dir = work_dir
        self.pool = pool
        self.slots: dict[str, TranslatorSlot] = {}
        self.lock = threading.RLock()
        self.placed = 0
        # in worker ids: a detached translator of an earlier incarnation never passes for one of ours
        self.incarnation = secrets.token_hex(2)
        # jobs that want translators now, this one included: a node's devices are shared by them
        self.sharing_jobs = 1
        # translators over this job's fair share: each goes at its next lease, between two shards
        self.over_share: set[str] = set()
        # what the pool last heard from this job, and when (`share`)
        self.told_pool: tuple[bool, int, dict[str, Resources]] | None = None
        self.told_pool_at = 0.0

    # --- sharing the cluster with other jobs: the warm pool

    @property
    def keep_warm_s(self) -> float:
        return self.spec.keep_warm_s or 0.0

    def share(self, state: JobState, shards_left: int | None) -> None:
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
        sharing = self.pool.share(self.job_id, wants, gpus, held)
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
        self.pool.make_room(
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

    def fleet_size(self, nodes: list[dict[str, Any]]) -> int:
        """How many translators this job expects: its share of the live nodes, with the GPU
        translators the autoscaler brings for --gpus where the nodes have fewer; at least one."""
        gpu = cpu = 0
        for node in nodes:
            if node.get("Alive"):
                devices, _ = self._fleet_of(node)
                gpu += sum(device.startswith("gpu") for device in devices)
                cpu += sum(device.startswith("cpu") for device in devices)
        return max(1, cpu + max(gpu, self.spec.gpus // self.spec.gpus_per_translator))

    def place(self, nodes: list[dict[str, Any]], state: JobState) -> None:
        """This job's fair share of each live node (`_fleet_of`); none while the job is paused.
        A translator over the share is named in `over_share`: it goes once its shard is done."""
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

    def translators(self) -> list[dict[str, Any]]:
        """Each translator placed: where, on which device, and what it said of itself."""
        with self.lock:
            return [
                {"worker_id": s.worker_id, "node_id": s.node_id, "device": s.device, **s.info}
                for s in self.slots.values()
            ]

    def _threads(self, free_cpus: int) -> int:
        per_node = max(1, min(self.spec.cpu_translators_per_node, free_cpus))
        # never more threads than the node has CPUs: a million of them took a node down
        return min(self.spec.threads or free_cpus // per_node, free_cpus) or 1

    def _start_translator(self, node: dict[str, Any], device: str, free_cpus: int) -> None:
        """A warm translator of this job's engine key on the node, or a new one (idle ones of other
        models there are evicted first where the node has no room for it)."""
        node_id = node["NodeID"]
        self.placed += 1
        self.store.counters.add(self.job_id, "translators_placed")
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
        while (handle := self.pool.take(key, node_id)) is not None:
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
                    self.pool.evict(node_id, slot.key)
                continue
            del self.slots[slot.worker_id]
            ray.kill(slot.handle, no_restart=True)
            self._start_loop(
                TranslatorSlot(worker_id, node_id, slot.device, handle, None, None, key=slot.key)
            )
            log.info("warm translator %s took the place of waiting %s", worker_id, slot.worker_id)


def self_handle() -> Any:
    return ray.get_runtime_context().current_actor


def _ready(ref: Any) -> bool:
    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)
