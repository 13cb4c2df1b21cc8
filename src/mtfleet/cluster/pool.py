"""The WarmPool actor: one per cluster, detached and named; what the jobs of a cluster share.

It keeps two things no single job's coordinator can:

- **Warm translators**: a job's coordinator hands its translators here when the job ends (or when
  it gives devices up to another job), with their engines loaded; the next job of the same engine
  key on the same node takes one instead of loading its model again. A translator kept past its
  `keep_warm_s` is killed, and one a job of another model needs the device of is evicted. The
  pool only finds translators: each one also ends itself when its keep-warm time is over, so a
  pool that dies holds no device forever.
- **The registry of active jobs**: each coordinator says every tick whether it wants translators
  and how many GPUs it wants; it gets back how many jobs share the fleet (its fair share of a
  node is that node's devices over that count), and the autoscaler is asked for the sum of the
  GPUs every job wants, in one `request_resources` call (a call per job would replace the last).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mtfleet.cluster.runtime import NAMESPACE, head_node_id

log = logging.getLogger(__name__)

POOL_NAME = "mtfleet-warm-pool"
# A job whose coordinator has not said it is alive for this long no longer shares the fleet.
JOB_SILENCE_S = 10.0


@dataclass
class WarmTranslator:
    """An idle translator with its engine loaded, kept for the next job of the same key."""

    handle: Any
    key: str
    node_id: str
    gpus: int
    expires_at: float


@dataclass
class ActiveJob:
    wants_translators: bool
    gpus: int
    seen_at: float


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

    def share(self, job_id: str, wants_translators: bool, gpus: int) -> int:
        """Records what job `job_id` wants; the number of jobs that want translators now (at
        least 1), which its share of each node's devices is divided by."""
        self.jobs[job_id] = ActiveJob(wants_translators, gpus, self.clock())
        self._forget_silent()
        self._ask()
        return max(1, sum(job.wants_translators for job in self.jobs.values()))

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

    # --- warm translators

    def keep(self, handle: Any, key: str, node_id: str, gpus: int, keep_warm_s: float) -> None:
        """Keeps an idle translator (its coordinator already released it) for `keep_warm_s`."""
        self._expire()
        self.warm.append(WarmTranslator(handle, key, node_id, gpus, time.monotonic() + keep_warm_s))

    def take(self, key: str, node_id: str) -> Any | None:
        """An idle translator of engine key `key` on node `node_id`, no longer kept, or None."""
        self._expire()
        for kept in self.warm:
            if kept.key == key and kept.node_id == node_id:
                self.warm.remove(kept)
                return kept.handle
        return None

    def evict(self, node_id: str, key: str) -> int:
        """Kills the idle translators of other keys on node `node_id`: a job that needs the
        node's devices is starting translators there. Returns how many."""
        self._expire()
        evicted = [k for k in self.warm if k.node_id == node_id and k.key != key]
        for kept in evicted:
            self.warm.remove(kept)
            ray.kill(kept.handle, no_restart=True)
        if evicted:
            log.info(
                "evicted %d idle translators of other models on node %s", len(evicted), node_id
            )
        return len(evicted)

    def idle(self) -> list[dict[str, Any]]:
        """The translators kept now: key, node, GPUs and seconds left."""
        self._expire()
        now = time.monotonic()
        return [
            {"key": k.key, "node_id": k.node_id, "gpus": k.gpus, "left_s": k.expires_at - now}
            for k in self.warm
        ]

    def _expire(self) -> None:
        now = time.monotonic()
        for kept in [k for k in self.warm if k.expires_at <= now]:
            self.warm.remove(kept)
            ray.kill(kept.handle, no_restart=True)

    # --- the jobs sharing the fleet

    def share(self, job_id: str, wants_translators: bool, gpus: int) -> int:
        self._expire()
        return self.registry.share(job_id, wants_translators, gpus)

    def leave(self, job_id: str) -> None:
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
