"""The speculative tail: once no shard is pending, an idle translator backs up the shard of a slower
one; the first completion wins, the loser stops, and the output is the same bytes.

The engines stop between batches once their lease is gone (`cancellable`); backups go to the
translator expected to finish first (`pick_backup`); and a job whose one translator is made slow
on purpose ends with a backup won and the bytes of a clean run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mtfleet.cluster import run_job
from mtfleet.cluster.ledger import Completion, ShardLedger
from mtfleet.cluster.protocol import Lease, ShardStats
from mtfleet.cluster.tail import UNMEASURED_SLACK, Holding, Rates, pick_backup
from mtfleet.engines import load_engine
from mtfleet.engines.base import Cancelled, cancellable
from mtfleet.spec import JobSpec
from mtfleet.store import JobStore, ShardState
from mtfleet.testing.cluster import local_cluster, repeated_jsonl, reverse_spec
from mtfleet.testing.faults import SlowTranslators
from mtfleet.testing.tiny_model import varied_segments

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"
FIELDS = ["instruction", "input", "output"]

# --- the engines stop between batches


@pytest.fixture(scope="module")
def ct2_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MTFLEET_CACHE", str(tmp_path_factory.mktemp("mtfleet-cache")))
        yield


@pytest.mark.parametrize("engine_name", ["hf", "ct2"])
def test_an_engine_whose_lease_is_gone_stops_with_cancelled_and_one_still_held_is_unchanged(
    engine_name: str, tiny_marian_dir: Path, ct2_cache: None
) -> None:
    engine = load_engine(
        engine_name, str(tiny_marian_dir), max_batch_tokens=64, max_length_offset=3, threads=1
    )
    segments = varied_segments(24)
    unguarded = engine.translate(segments)

    with cancellable(threading.Event()):
        assert engine.translate(segments) == unguarded
    gone = threading.Event()
    gone.set()
    with cancellable(gone), pytest.raises(Cancelled):
        engine.translate(segments)


def test_a_slowed_translator_waiting_out_its_batches_stops_at_once_when_cancelled() -> None:
    engine = load_engine("reverse", "unused")
    gone = threading.Event()
    gone.set()
    # a factor this large would wait for ever were the wait not cut short by the cancel
    with cancellable(gone, slow_factor=1e12), pytest.raises(Cancelled):
        engine.translate(["one segment"])


# --- who backs up whom


def holding(worker_id: str, since: float, est_tokens: int = 1000, index: int = 0) -> Holding:
    return Holding(index, f"lease-{worker_id}-{index}", worker_id, est_tokens, since)


def rates(**tokens_per_s: float) -> Rates:
    measured = Rates()
    for worker_id, rate in tokens_per_s.items():
        measured.record(worker_id, int(rate * 10), 10.0)
    return measured


def test_a_faster_translator_backs_up_a_slower_ones_shard_and_a_slower_one_does_not() -> None:
    measured = rates(fast=400.0, slow=100.0)
    slow_shard = holding("slow", since=0.0)  # due at 10 s; the fast one needs 2.5 s
    fast_shard = holding("fast", since=0.0)

    assert pick_backup([slow_shard], "fast", measured, now=2.0) is slow_shard
    assert pick_backup([fast_shard], "slow", measured, now=2.0) is None
    # near its due time, the slow one needs less than the fast one would
    assert pick_backup([slow_shard], "fast", measured, now=8.0) is None
    # long past it, it is taken to need as long again as it is late
    assert pick_backup([slow_shard], "fast", measured, now=13.0) is slow_shard


def test_the_oldest_of_the_shards_worth_backing_up_is_taken() -> None:
    measured = rates(fast=400.0, slow=100.0, slower=50.0)
    older, newer = holding("slow", since=1.0, index=1), holding("slower", since=2.0, index=2)

    assert pick_backup([newer, older], "fast", measured, now=3.0) is older


def test_a_translator_with_no_completed_shard_never_backs_up_another() -> None:
    assert pick_backup([holding("slow", since=0.0)], "new", rates(slow=1.0), now=100.0) is None


def test_an_owner_with_no_completed_shard_is_backed_up_only_once_late_for_twice_the_median_time() -> (
    None
):
    measured = rates(fast=100.0)  # the median shard rate: its 1000 tokens take 10 s
    unmeasured = holding("new", since=0.0)
    due = UNMEASURED_SLACK * 10.0

    assert pick_backup([unmeasured], "fast", measured, now=0.5) is None
    assert pick_backup([unmeasured], "fast", measured, now=due + 10.0 - 0.5) is None
    assert pick_backup([unmeasured], "fast", measured, now=due + 10.0 + 0.5) is unmeasured


# --- the setting


def test_the_tail_is_on_by_default_and_turning_it_off_keeps_the_job_id() -> None:
    from typer.testing import CliRunner

    from mtfleet.cli.main import app
    from mtfleet.spec import JobSpec

    spec = JobSpec(input="in.jsonl", output="out.jsonl", model="m", fields=["text"])
    off = spec.model_copy(update={"speculative_tail": False})
    help_text = CliRunner().invoke(app, ["translate", "--help"], env={"COLUMNS": "240"}).output

    assert spec.speculative_tail is True
    assert off.default_job_id("key") == spec.default_job_id("key")
    assert "--no-speculative-tail" in help_text


# --- a job with a slow translator


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The alpaca sample twice over, as JSONL: 204 rows."""
    return repeated_jsonl(ALPACA, 2, tmp_path_factory.mktemp("data") / "alpaca2.jsonl")


@pytest.fixture(scope="module")
def slow_translators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowTranslators]:
    """A one-node cluster of two CPU translators, cpu1 of which a test may make slow."""
    switch = SlowTranslators(tmp_path_factory.mktemp("switch") / "slow")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in switch.environment.items():
            patch.setenv(name, value)
        # every call of the reverse engine takes a little, so a slowed one takes long
        patch.setenv("MTFLEET_REVERSE_DELAY_S", "0.02")
        with local_cluster(head_cpus=2):
            yield switch


def run(dataset: Path, work: Path, **settings: Any) -> tuple[bytes, dict[str, int], JobStore]:
    work.mkdir()
    spec = reverse_spec(dataset, work / "out.jsonl", FIELDS, cpu_translators_per_node=2, **settings)
    result = run_job(spec, state_dir=work / "state")
    assert result.state == "succeeded", result.error
    store = JobStore.for_state_dir(work / "state")
    return (work / "out.jsonl").read_bytes(), store.jobs.get(result.job_id).counters, store


@pytest.mark.cluster
def test_a_slow_translators_shard_is_backed_up_the_backup_wins_and_the_bytes_are_a_clean_runs(
    dataset: Path, slow_translators: SlowTranslators, tmp_path: Path
) -> None:
    clean, clean_counters, _ = run(dataset, tmp_path / "clean")
    with slow_translators.slow("cpu1", 200):
        output, counters, store = run(dataset, tmp_path / "slow", keep_work=True)

    assert output == clean
    assert counters["backup_leases"] >= 1 and counters["backups_won"] >= 1
    # the loser's completion, if it came at all, was not counted: one completion a shard
    assert counters["segments_done"] == clean_counters["segments_done"]
    (job,) = store.jobs.all()
    shards = store.shards.in_row_order(job.id)
    assert all(shard.state is ShardState.DONE for shard in shards)
    parts = tmp_path / "slow" / "state" / "jobs" / job.id / "parts"
    assert sorted(parts.iterdir()) == sorted(Path(shard.part_path) for shard in shards)


@pytest.mark.cluster
def test_with_the_tail_off_no_backup_is_taken(
    dataset: Path, slow_translators: SlowTranslators, tmp_path: Path
) -> None:
    with slow_translators.slow("cpu1", 20):
        _, counters, _ = run(dataset, tmp_path / "off", speculative_tail=False)

    assert "backup_leases" not in counters


# --- the coordinator's bookkeeping of a shard's two leases


TAIL_SPEC = JobSpec(input="in.jsonl", output="out.jsonl", model="m", fields=["text"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tail_store(tmp_path: Path) -> Iterator[tuple[JobStore, str]]:
    from mtfleet.store import JobState, ShardPlan

    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        plans = [ShardPlan(0, 10, 10, 1000), ShardPlan(10, 20, 10, 1000)]
        store.jobs.create("job", TAIL_SPEC.model_dump(), plans)
        store.jobs.set_state("job", JobState.RUNNING)
        yield store, "job"


def backed_up(store: JobStore, job_id: str) -> tuple[ShardLedger, Lease, Lease]:
    """fast completes shard 0 (its rate measured) while slow holds shard 1; then fast, with no
    shard pending, gets a backup lease on shard 1."""
    clock = FakeClock()
    ledger = ShardLedger(store, job_id, TAIL_SPEC, clock=clock)
    first = ledger.lease("fast")
    primary = ledger.lease("slow")
    assert first is not None and primary is not None
    assert ledger.complete(
        "fast", 0, first.lease_id, "fast.part", ShardStats(elapsed_s=1.0)
    ).accepted
    # slow's shard is due in 1 s at fast's rate x UNMEASURED_SLACK; make it late
    clock.now += 60
    backup = ledger.lease("fast")
    assert backup is not None and backup.backup
    assert (backup.index, backup.row_start) == (primary.index, primary.row_start)
    assert backup.lease_id != primary.lease_id
    assert ledger.lease("fast") is None  # at most one backup a shard
    return ledger, primary, backup


def test_no_backup_is_leased_while_the_job_is_still_planned(
    tail_store: tuple[JobStore, str],
) -> None:
    # the shards not cut yet would each be a better use of the translator than a backup
    store, job_id = tail_store
    clock = FakeClock()
    ledger = ShardLedger(store, job_id, TAIL_SPEC, clock=clock)
    ledger.rows_planned = 20
    first = ledger.lease("fast")
    assert ledger.lease("slow") is not None and first is not None
    assert ledger.complete("fast", 0, first.lease_id, "fast.part", ShardStats(elapsed_s=1.0))
    clock.now += 60

    assert ledger.lease("fast") is None
    ledger.rows_planned = None
    backup = ledger.lease("fast")
    assert backup is not None and backup.backup


def test_a_backup_that_completes_first_wins_and_the_primary_is_told_to_stop_and_refused(
    tail_store: tuple[JobStore, str], tmp_path: Path
) -> None:
    store, job_id = tail_store
    ledger, primary, backup = backed_up(store, job_id)

    assert ledger.heartbeat("fast", 1, backup.lease_id)
    won = ledger.complete("fast", 1, backup.lease_id, "backup.part", ShardStats(elapsed_s=1.0))
    assert won.accepted
    assert won.loser is not None and (won.loser.worker_id, won.loser.lease_id) == (
        "slow",
        primary.lease_id,
    )
    assert not ledger.heartbeat("slow", 1, primary.lease_id)
    assert ledger.complete("slow", 1, primary.lease_id, "slow.part", ShardStats()) == Completion(
        False
    )
    assert store.shards.get(job_id, 1).part_path == "backup.part"
    assert store.jobs.get(job_id).counters == {
        "backup_leases": 1,
        "backups_won": 1,
        "segments_done": 0,
    }


def test_a_primary_that_completes_first_tells_the_backup_to_stop(
    tail_store: tuple[JobStore, str],
) -> None:
    store, job_id = tail_store
    ledger, primary, backup = backed_up(store, job_id)

    won = ledger.complete("slow", 1, primary.lease_id, "primary.part", ShardStats())
    assert won.accepted
    assert won.loser is not None and won.loser.lease_id == backup.lease_id
    assert not ledger.heartbeat("fast", 1, backup.lease_id)
    assert not ledger.complete("fast", 1, backup.lease_id, "backup.part", ShardStats()).accepted
    assert "backups_won" not in store.jobs.get(job_id).counters


def test_a_failing_backup_leaves_the_primary_alone_and_a_failing_primary_hands_over_uncounted(
    tail_store: tuple[JobStore, str],
) -> None:
    store, job_id = tail_store
    ledger, primary, backup = backed_up(store, job_id)

    assert ledger.fail("fast", 1, backup.lease_id, "ValueError: the backup's") is None
    assert store.shards.get(job_id, 1).lease_id == primary.lease_id

    again = ledger.lease("fast")
    assert again is not None and again.backup
    ledger.fault("slow", 1, primary.lease_id, "No space left on the primary's disk.")
    shard = store.shards.get(job_id, 1)
    assert (shard.state, shard.lease_id, shard.lease_owner) == (
        ShardState.LEASED,
        again.lease_id,
        "fast",
    )
    assert store.shards.get(job_id, 1).failures == 0
    assert ledger.complete("fast", 1, again.lease_id, "backup.part", ShardStats()).accepted


def test_a_completion_says_when_it_leaves_no_lease_held_so_the_fleet_loop_looks_at_once(
    tail_store: tuple[JobStore, str],
) -> None:
    store, job_id = tail_store
    ledger = ShardLedger(store, job_id, TAIL_SPEC, clock=FakeClock())
    first, second = ledger.lease("a"), ledger.lease("b")
    assert first is not None and second is not None

    one = ledger.complete("a", 0, first.lease_id, "a.part", ShardStats(elapsed_s=1.0))
    last = ledger.complete("b", 1, second.lease_id, "b.part", ShardStats(elapsed_s=1.0))

    assert (one.accepted, one.none_held) == (True, False)
    assert (last.accepted, last.none_held) == (True, True)
