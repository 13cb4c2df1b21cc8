"""Ray clusters on one machine for tests and demos: started, handed over, always stopped."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

import ray
from ray.cluster_utils import Cluster

from mtfleet.cluster.runtime import NAMESPACE


@contextlib.contextmanager
def local_cluster(head_cpus: int = 1, head_gpus: int = 0) -> Iterator[Cluster]:
    """A multi-node Ray cluster in this machine's processes; this process is its driver."""
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": head_cpus, "num_gpus": head_gpus, "include_dashboard": False},
    )
    try:
        ray.init(
            address=cluster.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, poll_s: float = 0.1) -> None:
    """Waits until `condition()` holds; fails loudly when it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"condition not met in {timeout_s} s")
