"""Idle translators asking for leases: polled (the coordinator answers `wait` at once and the
translator asks again after IDLE_POLL_S) against long-polled (the call waits up to LEASE_WAIT_S).

One process, no Ray: a `JobCoordinator` over SQLite holds a running job whose one shard is leased,
and N idle translators (threads) ask it for work as their lease loop does. Both runs are in this
process, one after the other: the table is of ratios. Writes bench/results/idle_lease.json and
idle_lease.png.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mtfleet.cluster import coordinator as coordinator_module
from mtfleet.cluster.placement import TranslatorSlot
from mtfleet.cluster.protocol import Action
from mtfleet.cluster.translator import IDLE_POLL_S
from mtfleet.testing.cluster import coordinator_of_a_running_job

RESULTS = Path(__file__).parent / "results"


def idle_fleet(wait_s: float, translators: int, seconds: float) -> dict[str, float]:
    """Lease calls and job-row reads a second per idle translator, and the process's CPU-s."""
    coordinator_module.LEASE_WAIT_S = wait_s
    folder = Path(tempfile.mkdtemp())
    coordinator = coordinator_of_a_running_job(folder)
    coordinator.planned.set()
    workers = [f"idle{i}" for i in range(translators)]
    for worker in ["busy", *workers]:
        coordinator.placement.slots[worker] = TranslatorSlot(
            worker, "node", "cpu0", None, None, None
        )
    assert coordinator.lease("busy").action is Action.TRANSLATE
    reads = [0]
    get_job = coordinator.store.jobs.get

    def counted(*args: Any) -> Any:
        reads[0] += 1
        return get_job(*args)

    coordinator.store.jobs.get = counted  # type: ignore[method-assign]
    calls = [0]
    until = time.monotonic() + seconds

    def lease_loop(worker: str) -> None:
        while time.monotonic() < until:
            calls[0] += 1
            if coordinator.lease(worker).action is Action.WAIT:
                time.sleep(IDLE_POLL_S)

    threads = [threading.Thread(target=lease_loop, args=(w,)) for w in workers]
    cpu = time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "lease_calls_per_s": calls[0] / translators / seconds,
        "job_reads_per_s": reads[0] / translators / seconds,
        "cpu_s": time.process_time() - cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translators", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    long_wait_s = coordinator_module.LEASE_WAIT_S
    polled = idle_fleet(0.0, args.translators, args.seconds)
    waited = idle_fleet(long_wait_s, args.translators, args.seconds)
    names = {
        "lease_calls_per_s": "lease calls/s, per idle translator",
        "job_reads_per_s": "job-row reads/s, per idle translator",
        "cpu_s": f"CPU-s, {args.translators} idle for {args.seconds:g} s",
    }
    print(f"{'':40}{'polled':>10}{'long-poll':>11}{'ratio':>8}")
    for key, name in names.items():
        print(f"{name:40}{polled[key]:10.2f}{waited[key]:11.2f}{waited[key] / polled[key]:8.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "idle_lease.json").write_text(
        json.dumps({"settings": vars(args), "polled": polled, "long_polled": waited}, indent=2)
    )
    chart(polled, waited, names)


def chart(polled: dict[str, float], waited: dict[str, float], names: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5))
    keys = list(names)
    axis.bar([names[k] for k in keys], [waited[k] / polled[k] for k in keys], color="#4a7ab5")
    axis.axhline(1.0, color="#b5504a", linestyle="--", label="polled (baseline)")
    axis.set_ylabel("long-polled / polled")
    axis.set_title("Idle translators: long-polled leases against polling")
    axis.tick_params(axis="x", labelsize=7)
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "idle_lease.png", dpi=110)


if __name__ == "__main__":
    main()
