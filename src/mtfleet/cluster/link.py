"""The calls between a job's actors, typed: one method per call, in the words of `protocol`.

A translator reaches its coordinator through a `CoordinatorLink`, which makes each call again
while the job store does not answer it (the coordinator raises `StoreError`), and keeps a lease
alive from a thread of its own (`start_heartbeat`). A coordinator reaches the cluster's warm pool
through a `PoolLink`, whose calls answer None when the pool does not (it is started again on the
next call).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from mtfleet.cluster.pool import Resources, warm_pool
from mtfleet.cluster.protocol import KeptSegments, Lease, LeaseReply, ShardStats
from mtfleet.errors import StoreError
from mtfleet.retry import backoff_s

log = logging.getLogger(__name__)

# Calls to the warm pool, and to a warm translator being attached or released, wait this long
# at most.
POOL_CALL_S = 10.0


class CoordinatorLink:
    """A translator's calls to its coordinator, as translator `worker_id`."""

    def __init__(self, coordinator: Any, worker_id: str) -> None:
        self.coordinator = coordinator
        self.worker_id = worker_id

    def lease(self) -> LeaseReply:
        """A shard to translate, or word to wait or stop."""
        return self._call("lease", self.coordinator.lease, self.worker_id)

    def complete(
        self, lease: Lease, part: Path, stats: ShardStats, kept: Sequence[KeptSegments] = ()
    ) -> bool:
        """The lease's part is written: True when it completed the shard, False when the lease
        was stale (the coordinator deletes the part). What the translation memory is to keep of
        the shard (`kept`) is kept once the completion is accepted."""
        return self._call(
            "complete",
            self.coordinator.complete,
            self.worker_id,
            lease.index,
            lease.lease_id,
            str(part),
            stats,
            list(kept),
        )

    def fail(self, lease: Lease, error: str) -> None:
        """The engine raised on the lease's rows: it counts toward the shard's bisection."""
        self._call(
            "fail", self.coordinator.fail, self.worker_id, lease.index, lease.lease_id, error
        )

    def fault(self, lease: Lease | None, cause: str) -> float:
        """A fault of this translator's machine (with the lease it held, if any): the seconds to
        wait before the next lease."""
        index, lease_id = (lease.index, lease.lease_id) if lease else (None, None)
        return self._call("fault", self.coordinator.fault, self.worker_id, index, lease_id, cause)

    def recall(self, key: str, hashes: list[str]) -> dict[str, tuple[str, list[str]]]:
        """What the translation memory holds of these segments (sha256) for signature `key`."""
        return self._call("recall", self.coordinator.recall, key, hashes)

    def start_heartbeat(
        self,
        lease: Lease,
        interval_s: float,
        progress: Callable[[], int],
        stop: threading.Event,
        cancel: threading.Event,
    ) -> None:
        """Keeps the lease alive from a thread of its own until `stop`: renewed at once and every
        `interval_s`, with the shard's progress; a reply that the lease is gone sets `cancel`. A
        heartbeat is never waited for: its answer is looked at before the next one."""

        def keep_alive() -> None:
            while True:
                renewed = self.coordinator.heartbeat.remote(
                    self.worker_id, lease.index, lease.lease_id, progress()
                )
                if stop.wait(interval_s):
                    return
                ready, _ = ray.wait([renewed], timeout=0)
                # a heartbeat that raised (the store did not answer) says nothing of the lease
                with contextlib.suppress(RayError):
                    if ready and ray.get(ready[0]) is False:
                        cancel.set()

        threading.Thread(target=keep_alive, name="heartbeat", daemon=True).start()

    def _call(self, name: str, method: Any, *args: Any) -> Any:
        """`method` of the coordinator, called again while the job store does not answer it."""
        attempt = 0
        while True:
            try:
                return ray.get(method.remote(*args))
            except StoreError as error:
                attempt += 1
                wait_s = backoff_s(attempt, first_s=0.5, max_s=30.0)
                log.warning("the coordinator's %s failed: %s; again in %.1f s", name, error, wait_s)
                time.sleep(wait_s)


class PoolLink:
    """A coordinator's calls to the cluster's warm pool of translators (`pool.WarmPool`), found
    or started on its first call. A call the pool does not answer within POOL_CALL_S answers
    None, and the pool is looked for again on the next."""

    def __init__(self) -> None:
        self._pool: Any = None

    def share(self, job_id: str, wants: bool, gpus: int, held: dict[str, Resources]) -> int | None:
        """Tells what job `job_id` wants and holds; how many jobs share the fleet."""
        return self._call("share", lambda pool: pool.share.remote(job_id, wants, gpus, held))

    def leave(self, job_id: str) -> None:
        self._call("leave", lambda pool: pool.leave.remote(job_id))

    def take(self, key: str, node_id: str) -> Any | None:
        """A warm translator of engine key `key` on node `node_id`, or None."""
        return self._call("take", lambda pool: pool.take.remote(key, node_id))

    def make_room(
        self, node_id: str, key: str, job_id: str, wanted: Resources, total: Resources
    ) -> int | None:
        """Evicts idle translators of other keys from node `node_id` as far as `wanted` needs."""
        return self._call(
            "make_room", lambda pool: pool.make_room.remote(node_id, key, job_id, wanted, total)
        )

    def evict(self, node_id: str, key: str) -> int | None:
        """Evicts every idle translator of other keys from node `node_id`."""
        return self._call("evict", lambda pool: pool.evict.remote(node_id, key))

    def keep(
        self, handle: Any, key: str, node_id: str, resources: Resources, keep_warm_s: float
    ) -> None:
        """Hands a released translator to the pool, not waiting for its answer."""
        self._handle().keep.remote(handle, key, node_id, resources, keep_warm_s)

    def _handle(self) -> Any:
        if self._pool is None:
            self._pool = warm_pool()
        return self._pool

    def _call(self, name: str, call: Callable[[Any], Any]) -> Any:
        """`call` made on the pool's handle, and its answer."""
        try:
            return ray.get(call(self._handle()), timeout=POOL_CALL_S)
        except (RayActorError, GetTimeoutError) as error:
            log.warning("the warm pool did not answer %s: %s", name, error)
            self._pool = None
            return None
