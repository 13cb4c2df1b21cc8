"""A row that breaks the engine is found by bisection; the rest of the job is unharmed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtfleet.cluster import retry_job, run_job
from mtfleet.cluster.breaker import FailureBreaker
from mtfleet.spec import JobSpec
from mtfleet.store import JobStore

POISON_ROW = 17


@pytest.fixture
def poisoned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """40 rows; row 17 holds a word the reverse engine refuses, as a model may choke on one input."""
    monkeypatch.setenv("MTFLEET_REVERSE_FAIL_ON", "POISON")
    rows = [{"id": i, "text": f"Sentence number {i} is fine."} for i in range(40)]
    rows[POISON_ROW]["text"] = "This one carries POISON."
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def spec(dataset: Path, on_error: str, **settings: object) -> JobSpec:
    return JobSpec(
        input=str(dataset),
        output=str(dataset.with_name("out.jsonl")),
        model="reverse",
        engine="reverse",
        fields=["text"],
        shard_tokens=60,
        max_attempts=2,
        on_error=on_error,
        **settings,
    )


def test_a_poison_row_is_bisected_reported_and_kept_as_source(poisoned: Path) -> None:
    result = run_job(spec(poisoned, "keep-source"), state_dir=poisoned.parent / "state")
    assert result.state == "succeeded", result.error
    manifest = result.manifest
    assert [failure["row"] for failure in manifest["failures"]] == [POISON_ROW]
    assert "POISON" in manifest["failures"][0]["error"]
    assert manifest["units_failed"] == 1
    assert manifest["units_translated"] == 39
    rows = [json.loads(line) for line in poisoned.with_name("out.jsonl").read_text().splitlines()]
    assert rows[POISON_ROW]["text"] == "This one carries POISON."
    assert rows[3]["text"] == ".enif si 3 rebmun ecnetneS"
    assert manifest["shards"] > 4  # the poisoned shard was split on the way down to one row


def test_a_failed_row_is_retried_alone_once_the_engine_takes_it_into_the_same_output(
    poisoned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = poisoned.parent / "state"
    first = run_job(spec(poisoned, "keep-source", keep_work=True), state_dir=state_dir)
    assert first.manifest is not None and first.manifest["rows_failed"] == 1
    done_before = {
        s.index: s.part_path
        for s in JobStore.for_state_dir(state_dir).shards.in_row_order(first.job_id)
    }
    monkeypatch.delenv("MTFLEET_REVERSE_FAIL_ON")  # the engine was fixed

    result = retry_job(first.job_id, state_dir=state_dir)

    assert result.state == "succeeded", result.error
    assert result.manifest is not None and result.manifest["rows_failed"] == 0
    rows = [json.loads(line) for line in poisoned.with_name("out.jsonl").read_text().splitlines()]
    assert rows[POISON_ROW]["text"] == ".NOSIOP seirrac eno sihT"
    assert rows[3]["text"] == ".enif si 3 rebmun ecnetneS"
    shards = JobStore.for_state_dir(state_dir).shards.in_row_order(first.job_id)
    # the done shards kept their parts; only the failed row was translated again
    assert all(done_before[s.index] == s.part_path for s in shards if s.row_start != POISON_ROW)
    assert [s.row_start for s in shards if done_before[s.index] is None] == [POISON_ROW]


def test_with_on_error_fail_a_poison_row_fails_the_job_and_names_the_row(poisoned: Path) -> None:
    result = run_job(spec(poisoned, "fail"), state_dir=poisoned.parent / "state")
    assert result.state == "failed"
    assert f"row(s) {POISON_ROW}" in result.error
    assert not poisoned.with_name("out.jsonl").exists()


def test_an_engine_that_fails_every_row_pauses_the_job_instead_of_bisecting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every row holds the word the reverse engine refuses: an error of the engine, not of a row
    monkeypatch.setenv("MTFLEET_REVERSE_FAIL_ON", "Sentence")
    rows = [{"id": i, "text": f"Sentence number {i} is fine."} for i in range(120)]
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    store = tmp_path / "state"

    result = run_job(spec(dataset, "keep-source"), state_dir=store)

    assert result.state == "paused"
    assert "failed in a row with the same error" in result.error
    assert "nothing was bisected" in result.error and "POISON" not in result.error
    assert not dataset.with_name("out.jsonl").exists()
    with JobStore(f"sqlite:///{store / 'jobs.db'}") as jobs:
        shards = jobs.shards.in_row_order(result.job_id)
    # each shard failed once at most, so none was split, and the job stopped within 50 leases
    assert len(shards) >= 16
    assert max(shard.attempts for shard in shards) == 1
    assert sum(shard.attempts for shard in shards) <= 50


def test_the_breaker_tells_nested_failures_of_one_row_from_failures_everywhere() -> None:
    poison = FailureBreaker(disjoint_to_stop=3)
    # one poison row at 17: its shard and every half bisection makes of it fail
    for start, end in [(0, 40), (0, 40), (0, 20), (10, 20), (15, 20), (17, 18)] * 3:
        assert poison.failed(start, end, "ValueError: refused POISON") is None

    broken = FailureBreaker(disjoint_to_stop=3)
    assert broken.failed(0, 10, "ValueError: 2 translations for 3 segments") is None
    assert broken.failed(10, 20, "ValueError: 2 translations for 5 segments") is None
    broken.done()
    assert broken.failed(20, 30, "ValueError: 4 translations for 5 segments") is None
    assert broken.failed(30, 40, "RuntimeError: device-side assert") is None
    assert broken.failed(40, 50, "ValueError: 1 translation for 2 segments") is None
    stop = broken.failed(50, 60, "ValueError: 0 translations for 2 segments")
    assert stop is not None and stop.startswith("3 shards of different rows failed in a row")


def test_a_new_coordinator_goes_on_with_a_bisection_where_the_last_one_left_it(
    tmp_path: Path,
) -> None:
    """The failures counted toward a shard's bisection are the store's: a coordinator that
    restarts between a shard's failures (a new ledger) does not give the shard its attempts
    again."""
    from mtfleet.cluster.ledger import ShardLedger
    from mtfleet.store import JobState, ShardPlan, ShardState

    job_spec = spec(tmp_path / "rows.jsonl", "keep-source").model_copy(update={"max_attempts": 3})
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        store.jobs.create("job", job_spec.model_dump(), [ShardPlan(0, 10, 10, 1000)])
        store.jobs.set_state("job", JobState.RUNNING)
        first = ShardLedger(store, "job", job_spec)
        for _ in range(2):
            lease = first.lease("t1")
            assert lease is not None
            first.fail("t1", lease.index, lease.lease_id, "ValueError: row 3")
        assert [s.state for s in store.shards.in_row_order("job")] == [ShardState.PENDING]

        restarted = ShardLedger(store, "job", job_spec)
        lease = restarted.lease("t2")
        assert lease is not None
        restarted.fail("t2", lease.index, lease.lease_id, "ValueError: row 3")

        halves = store.shards.in_row_order("job")
        assert [(s.row_start, s.row_end, s.failures) for s in halves] == [(0, 5, 0), (5, 10, 0)]
