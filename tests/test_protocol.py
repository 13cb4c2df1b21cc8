"""A completion's stats are typed (`ShardStats`) from the translator to the store, and stored as the
same JSON as before they were: a store written by an earlier mtfleet reads back, and a shard
completed now is stored byte for byte as it was then."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mtfleet.cluster.assemble import assemble
from mtfleet.cluster.parts import part_path, write_part
from mtfleet.cluster.placement import TranslatorSlot
from mtfleet.cluster.plan import UnitReader, plan_job
from mtfleet.cluster.protocol import SegmentCounts, ShardStats
from mtfleet.spec import JobSpec, stored_spec
from mtfleet.store import JobStore
from mtfleet.testing.cluster import coordinator_of_a_running_job

ENGINE = {"engine": "reverse", "model": "reverse", "versions": {"mtfleet": "0.1.0"}}
COUNTS = {
    "segments": 6,
    "segments_unique": 5,
    "segments_from_memory": 2,
    "units_skipped_target_language": 0,
    "source_tokens": 40,
}
# completions as the translator and the planner stored them before their stats were typed
ONE_TARGET = {
    "rows": 3,
    "units": 4,
    "units_from_memory": 1,
    **COUNTS,
    "node_id": "node-a",
    "worker_id": "node-a-cpu0-ab121",
    "elapsed_s": 0.125,
    "engine": ENGINE,
}
TWO_TARGETS = {
    **ONE_TARGET,
    "targets": {"de": COUNTS, "fr": {**COUNTS, "segments": 5, "segments_from_memory": 1}},
}
FILLED_AT_PLANNING = {"rows": 3, "units": 4, "units_from_memory": 4}


@pytest.mark.parametrize(
    "stored", [ONE_TARGET, TWO_TARGETS, FILLED_AT_PLANNING], ids=["one", "two", "filled"]
)
def test_stats_stored_before_they_were_typed_read_back_and_are_written_the_same_bytes(
    stored: dict[str, Any],
) -> None:
    stats = ShardStats.from_json(json.loads(json.dumps(stored)))

    assert json.dumps(stats.to_json()) == json.dumps(stored)


def test_a_shard_translated_into_several_languages_counts_each_and_recalls_from_all() -> None:
    stats = ShardStats.from_json(TWO_TARGETS)

    assert stats.counts_for("fr").segments == 5
    assert stats.counts_for("de") == SegmentCounts(**COUNTS)
    assert stats.recalled() == 3
    assert ShardStats.from_json(ONE_TARGET).recalled() == 2


def test_a_shard_no_engine_ran_on_counts_no_segments() -> None:
    stats = ShardStats.from_json(FILLED_AT_PLANNING)

    assert stats.counts is None and stats.engine is None
    assert stats.segments == 0 and stats.counts_for(None) == SegmentCounts()
    assert ShardStats.from_json({}) == ShardStats()


def test_a_job_resumed_from_a_store_of_untyped_stats_assembles_their_counts(
    tmp_path: Path,
) -> None:
    rows = [{"text": f"Row {row} of the old store."} for row in range(40)]
    dataset = tmp_path / "in.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = JobSpec(
        input=str(dataset),
        output=str(tmp_path / "out.jsonl"),
        model="reverse",
        engine="reverse",
        fields=["text"],
        shard_tokens=100,
    )
    work = tmp_path / "work"
    store = JobStore.for_state_dir(tmp_path / "state")
    store.jobs.create("job", stored_spec(spec, "key"), None)
    store.jobs.add_plan("job", plan_job(spec, work))
    units = UnitReader(work)
    shards = 0
    while (lease := store.leases.take("job", "old", 60.0)) is not None:
        lines = units.read(lease.row_start, lease.row_end)
        path = part_path(work, lease.row_start, lease.row_end, lease.lease_id)
        write_part(path, [replace(line, text=line.text[::-1]) for line in lines])
        # written as a store of an earlier mtfleet holds it: a plain JSON object
        store.leases.complete("job", lease.index, lease.lease_id, path, ONE_TARGET)
        shards += 1

    manifest = assemble(store, "job", work)

    assert shards > 1
    assert (manifest["segments"], manifest["source_tokens"]) == (6 * shards, 40 * shards)
    assert manifest["segments_per_node"] == {"node-a": 6 * shards}
    assert manifest["engine_signatures"] == [ENGINE]


def test_a_completion_through_the_coordinator_is_stored_as_the_json_it_always_was(
    tmp_path: Path,
) -> None:
    coordinator = coordinator_of_a_running_job(tmp_path)
    coordinator.planned.set()
    coordinator.placement.slots["a"] = TranslatorSlot("a", "node", "cpu0", None, None, None)
    reply = coordinator.lease("a")
    assert reply.lease is not None

    part = tmp_path / "part"
    part.touch()
    stats = ShardStats.from_json(TWO_TARGETS)
    assert coordinator.complete("a", reply.lease.index, reply.lease.lease_id, str(part), stats)

    stored = coordinator.store.shards.get("job", reply.lease.index).stats
    assert json.dumps(stored) == json.dumps(TWO_TARGETS)
    assert coordinator.store.jobs.get("job").counters["segments_done"] == 6
