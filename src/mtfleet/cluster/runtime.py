"""Connecting to Ray: a private local cluster by default, or a running one by address."""

from __future__ import annotations

import logging
import os

import ray

from mtfleet.errors import JobError
from mtfleet.verbosity import ray_logging, verbose

NAMESPACE = "mtfleet"


RAY_AUTH_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"


def connect(address: str | None = None) -> bool:
    """Connects this process to Ray; returns True when it started a local cluster of its own.

    A local cluster takes random free ports (never Ray's default 6379, which Redis may hold).
    """
    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(
                address=address,
                namespace=NAMESPACE,
                **ray_logging(),
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise JobError(f"Cannot connect to the Ray cluster at {address}: {error}") from error
        return False
    # "local": always a new cluster of our own, never one another process started on this machine.
    # Ray turns token authentication on for it and warns that it did, on every command: that is
    # Ray's default, not news to a user of mtfleet; its errors still show (all of it: --verbose).
    if not verbose():
        logging.getLogger(RAY_AUTH_SETUP_LOGGER).setLevel(logging.ERROR)
    cpus = os.cpu_count() or 1
    ray.init(
        address="local",
        num_cpus=cpus,
        namespace=NAMESPACE,
        include_dashboard=False,
        # Ray keeps as many idle workers as the node has CPUs free, and translators take them
        # all: the planning task's worker was gone by the job's end, and its assembly waited for
        # a new process (0.6 s on 2 cores). As many as it has CPUs stay ready.
        _system_config={"num_workers_soft_limit": cpus},
        **ray_logging(),
    )
    return True


def head_node_id() -> str | None:
    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return node["NodeID"]
    return None
