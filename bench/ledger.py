"""The shard ledger at fleet scale, in one process: lease decisions at 1,000 translators.

A `ShardLedger` over a real job store (SQLite, then PostgreSQL) of a job of 100,000 shards drives
a simulated fleet of translators, 10 a node, each lease -> heartbeat -> complete, then a
simulated translation time, from 64 threads (the coordinator actor's `max_concurrency`). A fleet
tick (4 Hz, as the coordinator's) expires leases and asks the watchdog. Every 2,000 completions
a node dies (its 10 translators are gone, their leases go back) and a new one joins. Each run
checks that no shard was completed twice (the `segments_done` counter, one segment a
completion, equals the done shards and the accepted completions) or lost (every shard is in a
state).

Five runs a store (see RUNS): the ledger as fast as it goes (no translation time: its capacity),
then a steady 100 and 33 shards/s, each from 10 translators (the baseline, in the same process
and on the same store) and from 1,000. Printed as a table (leases/s, decisions/s, p50 and p99 lease latency,
CPU-s per 1,000 leases) with the p99's ratio to the baseline's, written to
bench/results/ledger.json with a chart (ledger.png).

    .venv/bin/python bench/ledger.py            # 10,000 shards a run (make bench-ledger)
    .venv/bin/python bench/ledger.py --quick    # 3,000
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtfleet.cluster.ledger import ShardLedger
from mtfleet.cluster.protocol import SegmentCounts, ShardStats
from mtfleet.spec import JobSpec
from mtfleet.store import JobState, JobStore, ShardPlan

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "bench" / "results" / "ledger.json"
CHART = ROOT / "bench" / "results" / "ledger.png"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# the coordinator actor's max_concurrency: as many translators' calls at once
CALLERS = 64
NODE_DIES_EVERY = 2_000
SHARDS = 100_000
TICK_S = 0.25
# what each simulated completion says of its shard
ONE_SEGMENT = ShardStats(counts=SegmentCounts(segments=1))
SPEC = JobSpec(
    input="in.jsonl",
    output="out.jsonl",
    model="m",
    fields=["text"],
    lease_ttl_s=60.0,
    # the tail's backups would duplicate leases at the end; the bench measures plain leasing
    speculative_tail=False,
)


@dataclass
class Fleet:
    """Translators by node; a node dies and another joins."""

    nodes: dict[str, list[str]]
    gone: set[str]

    @classmethod
    def of(cls, nodes: int, per_node: int) -> Fleet:
        return cls({f"n{n}": [f"n{n}-t{t}" for t in range(per_node)] for n in range(nodes)}, set())

    def translators(self) -> list[str]:
        return [t for ts in self.nodes.values() for t in ts]


@contextmanager
def store_at(kind: str) -> Iterator[JobStore]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            store = JobStore(f"sqlite:///{folder}/jobs.db")
            yield store
            store.close()
        return
    import psycopg

    schema = f"mtfleet_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            store = JobStore(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
            yield store
            store.close()
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


class Schedule:
    """Translators by the time they next call: one that completed a shard calls again once its
    simulated translation time has passed (none: it calls again at once)."""

    def __init__(self, translators: list[str], spread_s: float) -> None:
        self.heap: list[tuple[float, int, str]] = []
        self.count = 0
        self.cond = threading.Condition()
        for translator in translators:
            # a fleet in its steady state: each translator somewhere in its shard
            self.put(translator, random.uniform(0, spread_s))

    def put(self, translator: str, after_s: float) -> None:
        with self.cond:
            self.count += 1
            heapq.heappush(self.heap, (time.monotonic() + after_s, self.count, translator))
            self.cond.notify()

    def get(self, stop: threading.Event) -> str | None:
        with self.cond:
            while not stop.is_set():
                if self.heap and self.heap[0][0] <= time.monotonic():
                    return heapq.heappop(self.heap)[2]
                wait = self.heap[0][0] - time.monotonic() if self.heap else 0.1
                self.cond.wait(min(max(wait, 0.0), 0.1))
        return None


def run(
    kind: str, shards: int, leases: int, nodes: int, per_node: int, shard_s: float
) -> dict[str, Any]:
    """One simulated fleet over a new job of `shards` shards, until `leases` shards are done;
    each translator takes `shard_s` on average (0: none) to translate a shard."""
    with store_at(kind) as store:
        job_id = f"bench-{nodes * per_node}"
        store.jobs.create(
            job_id,
            SPEC.model_dump(),
            [ShardPlan(i * 10, i * 10 + 10, 10, 1000) for i in range(shards)],
        )
        store.jobs.set_state(job_id, JobState.RUNNING)
        fleet = Fleet.of(nodes, per_node)
        schedule = Schedule(fleet.translators(), shard_s)
        ledger = ShardLedger(store, job_id, SPEC, is_live=lambda w: w not in fleet.gone)
        lease_ms: list[float] = []
        counts = {"leases": 0, "completions": 0, "refused": 0, "decisions": 0}
        lock = threading.Lock()
        done = threading.Event()

        def kill_a_node() -> None:
            with lock:
                name = random.choice(sorted(fleet.nodes))
                dead = fleet.nodes.pop(name)
                fleet.gone.update(dead)
                joined = f"{name}-again{len(fleet.gone)}"
                fleet.nodes[joined] = [f"{joined}-t{t}" for t in range(per_node)]
            for translator in dead:
                ledger.translator_gone(translator, "its node left", counts=False)
            for translator in fleet.nodes[joined]:
                schedule.put(translator, 0.0)

        def caller() -> None:
            while (worker := schedule.get(done)) is not None:
                if worker in fleet.gone:
                    continue
                started = time.perf_counter()
                lease = ledger.lease(worker)
                took = (time.perf_counter() - started) * 1000
                if lease is None:
                    schedule.put(worker, max(shard_s, 0.01))
                    continue
                ledger.heartbeat(worker, lease.index, lease.lease_id, 1)
                completion = ledger.complete(worker, lease.index, lease.lease_id, "p", ONE_SEGMENT)
                with lock:
                    lease_ms.append(took)
                    counts["leases"] += 1
                    counts["decisions"] += 3
                    counts["completions" if completion.accepted else "refused"] += 1
                    dies = completion.accepted and counts["completions"] % NODE_DIES_EVERY == 0
                    if counts["completions"] >= leases:
                        done.set()
                if dies:
                    kill_a_node()
                schedule.put(worker, random.expovariate(1 / shard_s) if shard_s else 0.0)

        def ticker() -> None:
            while not done.wait(TICK_S):
                store.leases.expire(job_id)
                ledger.hung()

        cpu, wall = time.process_time(), time.perf_counter()
        threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
        threads.append(threading.Thread(target=ticker))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        progress = store.counters.progress(job_id)
        lease_ms.sort()
        return {
            "store": kind,
            "translators": nodes * per_node,
            "shard_s": shard_s,
            "shards": shards,
            "seconds": round(wall, 2),
            "leases_per_s": round(counts["leases"] / wall, 1),
            "lease_decisions_per_s": round(counts["decisions"] / wall, 1),
            "leases": counts["leases"],
            "completions_refused": counts["refused"],
            "p50_lease_ms": round(statistics.median(lease_ms), 2),
            "p99_lease_ms": round(lease_ms[int(len(lease_ms) * 0.99)], 2),
            "cpu_s_per_1000_leases": round(1000 * cpu / max(counts["leases"], 1), 3),
            "nodes_died": len(fleet.gone) // per_node,
            # one segment a completion: a shard completed twice would count twice; a shard
            # lost would be in no state
            "no_shard_lost_or_done_twice": progress["shards"]["done"]
            == progress["segments_done"]
            == counts["completions"]
            and sum(progress["shards"].values()) == shards,
        }


def chart(results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 3.8))
    labels = [f"{r['store']}\n{r['run']}\n{r['translators']} translators" for r in results]
    axis.bar(labels, [r["p99_lease_ms"] for r in results], color="#4a7ab5")
    axis.axhline(50, color="#b5504a", linestyle="--", label="target: p99 < 50 ms")
    axis.set_yscale("log")
    axis.set_ylabel("p99 lease latency (ms)")
    axis.set_title("The shard ledger: lease latency, simulated fleet")
    axis.tick_params(axis="x", labelsize=7)
    axis.legend()
    figure.tight_layout()
    figure.savefig(CHART, dpi=110)


# (name, translators on 10 a node, mean seconds a shard): the ledger as fast as it goes, then a
# steady load from 10 translators (the baseline) and from 1,000: 100 shards/s (a thousand
# translators at 10 s a 32,000-token shard, a small model on a GPU) and 33 shards/s (30 s a shard)
RUNS = (
    ("as fast as it goes", 1000, 0.0),
    ("100 shards/s, baseline", 10, 0.1),
    ("100 shards/s", 1000, 10.0),
    ("33 shards/s, baseline", 10, 0.3),
    ("33 shards/s", 1000, 30.0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 shards a run, not 10,000")
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    # a node's death logs each of its translators: the bench prints only its table
    logging.getLogger("mtfleet").setLevel(logging.ERROR)
    leases = 3_000 if args.quick else 10_000
    random.seed(7)
    results = []
    for kind in args.stores.split(","):
        for name, translators, shard_s in RUNS:
            result = run(
                kind, SHARDS, leases, translators // 10 or 1, min(translators, 10), shard_s
            )
            if name.endswith("shards/s"):
                baseline = results[-1]
                result["p99_vs_10_translators"] = round(
                    result["p99_lease_ms"] / baseline["p99_lease_ms"], 2
                )
            results.append({"run": name, **result})
    OUTPUT.write_text(json.dumps({"shards": SHARDS, "runs": results}, indent=1) + "\n")
    chart(results)
    print(
        f"\nthe shard ledger over {SHARDS:,} shards, {CALLERS} callers, a node lost every "
        f"{NODE_DIES_EVERY:,} shards, {leases:,} shards a run"
    )
    print(
        f"  {'store':10s} {'run':24s} {'translators':>11s} {'leases/s':>9s} {'decisions/s':>11s} "
        f"{'p50 ms':>7s} {'p99 ms':>8s} {'CPU-s/1k':>8s}  none lost or twice"
    )
    for r in results:
        print(
            f"  {r['store']:10s} {r['run']:24s} {r['translators']:11d} {r['leases_per_s']:9.1f} "
            f"{r['lease_decisions_per_s']:11.0f} {r['p50_lease_ms']:7.2f} {r['p99_lease_ms']:8.2f} "
            f"{r['cpu_s_per_1000_leases']:8.3f}  {r['no_shard_lost_or_done_twice']}"
        )
    for r in results:
        if "p99_vs_10_translators" in r:
            print(
                f"  {r['store']}, {r['run']}: p99 at 1,000 translators / at 10: "
                f"{r['p99_vs_10_translators']}"
            )


if __name__ == "__main__":
    main()
