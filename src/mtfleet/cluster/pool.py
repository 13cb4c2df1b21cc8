"""The WarmPool actor: one per cluster, detached and named; what the jobs of a cluster share.

It keeps two things no single job's coordinator can:

- **Warm translators**: a job's coordinator hands its translators here when the job ends (or when
  it gives devices up to another job), with their engines loaded; the next job of the same engine
  key on the same node takes one instead of loading its model again. A translator kept past its
  `keep_warm_s` is killed, and one a job of another model needs the device of is evicted: only
  when the node has no room for that job's translators besides it. The pool kills them (a
  thread of its own looks every REAP_EVERY_S): a translator stuck where no thread of its own
  runs ends all the same. Each one also ends itself a while after its keep-warm time, so a
  pool that dies holds no device forever.
- **The registry of active jobs**: each coordinator says whether it wants translators, how many
  GPUs it wants and what its translators hold on each node, when that changes and at least every
  few seconds; it gets back how many jobs share the fleet (its fair share of a node is that
  node's devices over that count), and the autoscaler is asked for the sum of the GPUs every job
  wants, in one `request_resources` call (a call per job would replace the last). What the jobs'
  translators and the warm ones hold is how the pool knows a node's room: its own count, as Ray's
  maintainers advise schedulers built on Ray (Ray has no public per-node view of free resources).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mtfleet.cluster.runtime import NAMESPACE, head_node_id

log = logging.getLogger(__name__)

# The name carries the version of the pool's calls: a cluster upgraded in place starts a pool of
# the new calls beside the old one (whose translators end with their keep-warm time), instead of
# new coordinators calling an old pool that does not take their arguments.
POOL_NAME = "mtfleet-warm-pool-2"
# A job whose coordinator has not said it is alive for this long no longer shares the fleet.
JOB_SILENCE_S = 10.0
# How often the pool kills the warm translators whose keep-warm time is over.
REAP_EVERY_S = 1.0

# Ray resources by name ("CPU", "GPU"): what a translator holds, what a node has.
Resources = dict[str, float]


@dataclass
class WarmTranslator:
    """An idle translator with its engine loaded, kept for the next job of the same key."""

    handle: Any
    key: str
    node_id: str
    resources: Resources
    expires_at: float


@dataclass
class ActiveJob:
    wants_translators: bool
    gpus: int
    seen_at: float
    # what its translators hold (or wait for) on each node, by node id
    held: dict[str, Resources] = field(default_factory=dict)


class JobRegistry:
    """The jobs sharing the fleet now, and the GPUs they want of the autoscaler together."""

    def __init__(
        self,
        ask_autoscaler: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ask_autoscaler = ask_autoscaler
        self.clock = clock
        self.jobs: dict[str, ActiveJob] = {}
        self.gpus_asked = 0

    def share(
        self,
        job_id: str,
        wants_translators: bool,
        gpus: int,
        held: dict[str, Resources] | None = None,
    ) -> int:
        """Records what job `job_id` wants and what its translators hold on each node; the number
        of jobs that want translators now (at least 1), which its share of each node's devices is
        divided by."""
        self.jobs[job_id] = ActiveJob(wants_translators, gpus, self.clock(), held or {})
        self._forget_silent()
        self._ask()
        return max(1, sum(job.wants_translators for job in self.jobs.values()))

    def held_on(self, node_id: str, but: str) -> Counter[str]:
        """What the translators of every job but `but` hold on node `node_id`."""
        held: Counter[str] = Counter()
        for job_id, job in self.jobs.items():
            if job_id != but:
                held.update(job.held.get(node_id, {}))
        return held

    def leave(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self._ask()

    def gpus_wanted(self) -> int:
        """The GPUs every active job wants, summed: what the autoscaler is asked for."""
        return sum(job.gpus for job in self.jobs.values())

    def _forget_silent(self) -> None:
        now = self.clock()
        for job_id in [j for j, job in self.jobs.items() if now - job.seen_at > JOB_SILENCE_S]:
            log.info("job %s stopped saying it is active; it no longer shares the fleet", job_id)
            del self.jobs[job_id]

    def _ask(self) -> None:
        wanted = self.gpus_wanted()
        if wanted != self.gpus_asked:
            self.ask_autoscaler(wanted)
            self.gpus_asked = wanted


def evictions(idle: list[WarmTranslator], short: Resources) -> list[WarmTranslator]:
    """The idle translators to evict from a node `short` of resources (by name, what it lacks for
    a job's translators; zero or less where it has room): the soonest to expire first, and only
    those that hold a resource it is short of, until it is short of none."""
    short = {name: amount for name, amount in short.items() if amount > 0}
    evicted = []
    for kept in sorted(idle, key=lambda k: k.expires_at):
        if not short:
            break
        if not any(kept.resources.get(name, 0) > 0 for name in short):
            continue
        evicted.append(kept)
        for name in list(short):
            short[name] -= kept.resources.get(name, 0)
            if short[name] <= 0:
                del short[name]
    return evicted


def ask_autoscaler(gpus: int) -> None:
    """Asks Ray's autoscaler for `gpus` one-GPU bundles; pending nodes then join (KubeRay)."""
    # Imported here, in the pool's process: the autoscaler's SDK (prometheus, jsonschema, click)
    # would be loaded by every coordinator, which imports this module, as its process starts.
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}] * gpus)


@ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
class WarmPool:
    def __init__(self) -> None:
        self.registry = JobRegistry(ask_autoscaler)
        self.warm: list[WarmTranslator] = []
        # every call and the reaper's thread take turns on `warm` and `registry`
        self.lock = threading.RLock()
        threading.Thread(target=self._reap, name="reaper", daemon=True).start()

    def _reap(self) -> None:
        while True:
            time.sleep(REAP_EVERY_S)
            self._expire()

    # --- warm translators

    def keep(
        self, handle: Any, key: str, node_id: str, resources: Resources, keep_warm_s: float
    ) -> None:
        """Keeps an idle translator (its coordinator already released it), which holds
        `resources` on its node, for `keep_warm_s`."""
        self._expire()
        with self.lock:
            expires_at = time.monotonic() + keep_warm_s
            self.warm.append(WarmTranslator(handle, key, node_id, resources, expires_at))

    def take(self, key: str, node_id: str) -> Any | None:
        """An idle translator of engine key `key` on node `node_id`, no longer kept, or None."""
        self._expire()
        with self.lock:
            for kept in self.warm:
                if kept.key == key and kept.node_id == node_id:
                    self.warm.remove(kept)
                    return kept.handle
            return None

    def make_room(
        self, node_id: str, key: str, job_id: str, wanted: Resources, total: Resources
    ) -> int:
        """Evicts idle translators of other keys on node `node_id` (see `evictions`) as far as
        job `job_id` needs their devices: `wanted` is what its translators there hold with the one
        it places, `total` what the node has; the other jobs' translators and the warm ones hold
        the rest. A node with room loses no warm translator. Returns how many were evicted."""
        self._expire()
        with self.lock:
            held = self.registry.held_on(node_id, but=job_id)
            on_node = [k for k in self.warm if k.node_id == node_id]
            for kept in on_node:
                held.update(kept.resources)
            short = {
                name: held[name] + amount - total.get(name, 0) for name, amount in wanted.items()
            }
            return self._evict(node_id, evictions([k for k in on_node if k.key != key], short))

    def evict(self, node_id: str, key: str) -> int:
        """Kills every idle translator of another key on node `node_id`: a translator of a job
        waits there for a device that the pool's count says is free (Ray's view is the truth).
        Returns how many."""
        self._expire()
        with self.lock:
            return self._evict(
                node_id, [k for k in self.warm if k.node_id == node_id and k.key != key]
            )

    def _evict(self, node_id: str, evicted: list[WarmTranslator]) -> int:
        for kept in evicted:
            self.warm.remove(kept)
            ray.kill(kept.handle, no_restart=True)
        if evicted:
            log.info(
                "evicted %d idle translators of other models on node %s", len(evicted), node_id
            )
        return len(evicted)

    def idle(self) -> list[dict[str, Any]]:
        """The translators kept now: key, node, the resources they hold and seconds left."""
        self._expire()
        with self.lock:
            now = time.monotonic()
            return [
                {
                    "key": k.key,
                    "node_id": k.node_id,
                    "resources": k.resources,
                    "left_s": k.expires_at - now,
                }
                for k in self.warm
            ]

    def _expire(self) -> None:
        now = time.monotonic()
        with self.lock:
            expired = [k for k in self.warm if k.expires_at <= now]
            for kept in expired:
                self.warm.remove(kept)
        for kept in expired:
            ray.kill(kept.handle, no_restart=True)
        if expired:
            log.info("%d warm translators ended: their keep-warm time is over", len(expired))

    # --- the jobs sharing the fleet

    def share(
        self, job_id: str, wants_translators: bool, gpus: int, held: dict[str, Resources]
    ) -> int:
        self._expire()
        with self.lock:
            return self.registry.share(job_id, wants_translators, gpus, held)

    def leave(self, job_id: str) -> None:
        with self.lock:
            self.registry.leave(job_id)


def warm_pool() -> Any:
    """The cluster's pool: found by name, or started on the head node."""
    head = head_node_id()
    return WarmPool.options(
        name=POOL_NAME,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=True) if head else None,
    ).remote()
