"""Specifications of the job store, each run on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from mtfleet.errors import JobError, StoreError
from mtfleet.store import SCHEMA_VERSION, JobState, JobStore, ShardPlan, ShardState
from mtfleet.store.memory import TranslationMemory, segment_sha256
from mtfleet.store.schema import schema_version

SPEC = {"input": "data.json", "output": "out.json", "model": "opus-mt", "fields": ["instruction"]}
TTL_S = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_store(store_url: str, clock: FakeClock) -> Iterator[Callable[[], JobStore]]:
    """Opens another JobStore on the same database, as another process would."""
    opened: list[JobStore] = []

    def open_one() -> JobStore:
        store = JobStore(store_url, clock=clock)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], JobStore]) -> JobStore:
    return open_store()


def plan(*bounds: int) -> list[ShardPlan]:
    """Shards cut at the given row bounds: plan(0, 10, 20) is rows 0-9 and rows 10-19."""
    return [
        ShardPlan(start, end, units=2 * (end - start), est_tokens=50 * (end - start))
        for start, end in itertools.pairwise(bounds)
    ]


def running_job(store: JobStore, bounds: tuple[int, ...] = (0, 10, 20, 30)) -> str:
    store.jobs.create("job", SPEC, plan(*bounds))
    store.jobs.set_state("job", JobState.RUNNING)
    return "job"


def test_a_new_job_is_queued_and_its_shards_are_leased_in_row_order(store: JobStore) -> None:
    job = store.jobs.create("job", SPEC, list(reversed(plan(0, 10, 20))))

    assert (job.id, job.spec, job.state, job.counters) == ("job", SPEC, JobState.QUEUED, {})
    assert [(s.index, s.row_start, s.state) for s in store.shards.in_row_order("job")] == [
        (1, 0, ShardState.PENDING),
        (0, 10, ShardState.PENDING),
    ]
    assert store.leases.take("job", "t1", TTL_S) is None, "a queued job hands out no leases"
    store.jobs.set_state("job", JobState.RUNNING)
    assert store.leases.take("job", "t1", TTL_S).row_start == 0


def test_resume_returns_the_same_job_and_keeps_its_done_shards(
    open_store: Callable[[], JobStore], clock: FakeClock
) -> None:
    first = open_store()
    created = first.jobs.create("job", SPEC, plan(0, 10, 20))
    first.jobs.set_state("job", JobState.RUNNING)
    lease = first.leases.take("job", "t1", TTL_S)
    first.leases.complete("job", lease.index, lease.lease_id, "parts/0.json", {"segments": 4})
    first.close()

    clock.now += 60
    resumed = open_store().jobs.create("job", dict(reversed(SPEC.items())), plan(0, 5, 20))

    assert (resumed.id, resumed.created_at, resumed.state) == (
        "job",
        created.created_at,
        JobState.RUNNING,
    )
    assert [(s.row_start, s.state) for s in open_store().shards.in_row_order("job")] == [
        (0, ShardState.DONE),
        (10, ShardState.PENDING),
    ]


def test_a_different_spec_under_an_existing_job_id_is_refused(store: JobStore) -> None:
    store.jobs.create("job", SPEC, plan(0, 10))

    with pytest.raises(JobError, match=r"'job' already exists .*differs in model"):
        store.jobs.create("job", {**SPEC, "model": "nllb"}, plan(0, 10))


def test_stale_completion_is_ignored_so_a_shard_done_twice_counts_once_and_adds_once(
    store: JobStore, clock: FakeClock
) -> None:
    job_id = running_job(store, bounds=(0, 10))
    slow = store.leases.take(job_id, "slow", TTL_S)
    clock.now += TTL_S + 1
    assert store.leases.expire(job_id) == [slow.index]
    fast = store.leases.take(job_id, "fast", TTL_S)

    recalled = {"segments_from_memory": 3}
    assert store.leases.complete(
        job_id, fast.index, fast.lease_id, "fast.json", {"segments": 7}, recalled
    )
    assert not store.leases.complete(
        job_id, slow.index, slow.lease_id, "slow.json", {"segments": 7}, recalled
    )
    assert not store.leases.complete(
        job_id, fast.index, fast.lease_id, "again.json", {"segments": 7}, recalled
    )

    done = store.shards.get(job_id, fast.index)
    assert (done.state, done.part_path, done.lease_owner) == (ShardState.DONE, "fast.json", "fast")
    progress = store.counters.progress(job_id)
    assert progress["shards"] == {"pending": 0, "leased": 0, "done": 1, "failed": 0}
    assert (progress["rows_done"], progress["units_done"], progress["segments_done"]) == (10, 20, 7)
    assert store.counters.add(job_id, "segments_from_memory", 0) == 3


def test_expired_lease_puts_the_shard_back(store: JobStore, clock: FakeClock) -> None:
    job_id = running_job(store)
    lease = store.leases.take(job_id, "t1", TTL_S)

    clock.now += TTL_S - 1
    assert store.leases.expire(job_id) == []
    clock.now += 2
    assert store.leases.expire(job_id) == [lease.index]

    shard = store.shards.get(job_id, lease.index)
    assert (shard.state, shard.lease_id, shard.lease_owner, shard.attempts) == (
        ShardState.PENDING,
        None,
        None,
        1,
    )
    assert store.jobs.get(job_id).counters == {"lease_expiries": 1}
    # the shards never leased go first; the one that went back comes after them
    fresh = [store.leases.take(job_id, "t2", TTL_S) for _ in range(2)]
    assert [shard.attempts for shard in fresh] == [1, 1]
    again = store.leases.take(job_id, "t2", TTL_S)
    assert (again.index, again.attempts) == (lease.index, 2)
    assert not store.leases.renew(job_id, lease.index, lease.lease_id, TTL_S)


def test_a_renewed_lease_outlives_its_first_expiry(store: JobStore, clock: FakeClock) -> None:
    job_id = running_job(store)
    lease = store.leases.take(job_id, "t1", TTL_S)

    clock.now += TTL_S - 1
    assert store.leases.renew(job_id, lease.index, lease.lease_id, TTL_S)
    clock.now += TTL_S - 1

    assert store.leases.expire(job_id) == []
    assert store.shards.get(job_id, lease.index).lease_expires_at == clock.now + 1


def test_a_lease_handed_to_a_backup_makes_the_backups_completion_the_one_that_counts(
    store: JobStore,
) -> None:
    job_id = running_job(store)
    primary = store.leases.take(job_id, "slow", TTL_S)

    assert store.leases.hand_over(job_id, primary.index, primary.lease_id, "backup", "fast", TTL_S)
    assert store.shards.get(job_id, primary.index).lease_owner == "fast"
    assert not store.leases.renew(job_id, primary.index, primary.lease_id, TTL_S)
    assert not store.leases.complete(job_id, primary.index, primary.lease_id, "slow.part", {})
    assert store.leases.complete(job_id, primary.index, "backup", "fast.part", {})
    assert store.shards.get(job_id, primary.index).part_path == "fast.part"
    assert not store.leases.hand_over(job_id, primary.index, "backup", "third", "t3", TTL_S)


def test_concurrent_leasing_from_threads_never_hands_one_shard_to_two_owners(
    open_store: Callable[[], JobStore],
) -> None:
    shard_count, translator_count = 40, 6
    running_job(open_store(), bounds=tuple(range(0, 10 * shard_count + 1, 10)))
    stores = [open_store() for _ in range(translator_count)]
    start = threading.Barrier(translator_count)
    leased: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def translate(store: JobStore, owner: str) -> None:
        try:
            start.wait()
            while (lease := store.leases.take("job", owner, TTL_S)) is not None:
                leased.append((lease.index, owner))
                assert store.leases.complete("job", lease.index, lease.lease_id, owner, {})
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=translate, args=(store, f"t{n}")) for n, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Counter(index for index, _ in leased) == Counter(range(shard_count))
    shards = stores[0].shards.in_row_order("job")
    assert {(s.state, s.attempts) for s in shards} == {(ShardState.DONE, 1)}
    assert {s.index: s.lease_owner for s in shards} == dict(leased)


def test_a_paused_job_hands_out_no_leases_and_its_leased_shards_still_finish(
    store: JobStore,
) -> None:
    job_id = running_job(store)
    lease = store.leases.take(job_id, "t1", TTL_S)

    store.jobs.set_state(job_id, JobState.PAUSED)
    assert store.leases.take(job_id, "t2", TTL_S) is None
    assert store.leases.complete(job_id, lease.index, lease.lease_id, "0.json", {})
    store.jobs.set_state(job_id, JobState.RUNNING)
    assert store.leases.take(job_id, "t2", TTL_S).row_start == 10


def test_a_released_shard_goes_back_to_pending_and_keeps_its_error(store: JobStore) -> None:
    job_id = running_job(store)
    lease = store.leases.take(job_id, "t1", TTL_S)

    assert store.leases.release(job_id, lease.index, lease.lease_id, "CUDA out of memory")
    assert not store.leases.release(job_id, lease.index, lease.lease_id, "again")

    shard = store.shards.get(job_id, lease.index)
    assert (shard.state, shard.error, shard.attempts, shard.lease_id) == (
        ShardState.PENDING,
        "CUDA out of memory",
        1,
        None,
    )


def test_release_owner_frees_only_the_dead_translators_leases(store: JobStore) -> None:
    job_id = running_job(store, bounds=(0, 10, 20, 30, 40))
    dead = [store.leases.take(job_id, "dead", TTL_S) for _ in range(2)]
    alive = store.leases.take(job_id, "alive", TTL_S)

    assert store.leases.release_owner(job_id, "dead") == sorted(lease.index for lease in dead)
    assert store.shards.get(job_id, alive.index).state == ShardState.LEASED
    assert store.counters.progress(job_id)["shards"] == {
        "pending": 3,
        "leased": 1,
        "done": 0,
        "failed": 0,
    }
    assert store.leases.release_owner(job_id, "dead") == []


def test_transitions_that_are_not_allowed_raise(store: JobStore) -> None:
    job_id = running_job(store, bounds=(0, 10, 20))
    lease = store.leases.take(job_id, "t1", TTL_S)
    store.leases.complete(job_id, lease.index, lease.lease_id, "0.json", {})
    second = store.leases.take(job_id, "t1", TTL_S)

    with pytest.raises(JobError, match="'job' is running and cannot become queued"):
        store.jobs.set_state(job_id, JobState.QUEUED)
    with pytest.raises(JobError, match=f"Shard {lease.index} of job 'job' is done"):
        store.shards.fail(job_id, lease.index, None, "too late")
    with pytest.raises(JobError, match="only a pending shard can be split"):
        store.shards.split(job_id, second.index)
    store.jobs.set_state(job_id, JobState.SUCCEEDED)
    with pytest.raises(JobError, match="'job' is succeeded and cannot become running"):
        store.jobs.set_state(job_id, JobState.RUNNING)

    assert store.jobs.get(job_id).state == JobState.SUCCEEDED
    assert store.shards.get(job_id, lease.index).state == ShardState.DONE


def test_a_failed_job_can_be_queued_again_with_its_error_cleared(store: JobStore) -> None:
    job_id = running_job(store)
    failed = store.jobs.set_state(job_id, JobState.FAILED, error="row 17 failed")

    assert (failed.state, failed.error) == (JobState.FAILED, "row 17 failed")
    requeued = store.jobs.set_state(job_id, JobState.QUEUED)
    assert (requeued.state, requeued.error) == (JobState.QUEUED, None)


def test_retrying_a_succeeded_job_queues_it_with_only_its_failed_shards_pending(
    store: JobStore,
) -> None:
    job_id = running_job(store, bounds=(0, 10, 20))
    lease = store.leases.take(job_id, "t1", TTL_S)
    store.leases.complete(job_id, lease.index, lease.lease_id, "0.json", {})
    store.shards.count_failure(job_id, 1)
    store.shards.fail(job_id, 1, None, "ValueError: refused")
    with pytest.raises(JobError, match="only the failed rows of a succeeded job"):
        store.jobs.retry_failed(job_id)
    store.jobs.set_state(job_id, JobState.SUCCEEDED)

    assert store.jobs.retry_failed(job_id) == [1]

    assert store.jobs.get(job_id).state is JobState.QUEUED
    assert [(s.state, s.failures) for s in store.shards.in_row_order(job_id)] == [
        (ShardState.DONE, 0),
        (ShardState.PENDING, 0),
    ]
    store.jobs.set_state(job_id, JobState.RUNNING)
    store.jobs.set_state(job_id, JobState.SUCCEEDED)
    with pytest.raises(JobError, match="has no failed rows to retry"):
        store.jobs.retry_failed(job_id)


@contextlib.contextmanager
def written_as(store_url: str, version: int) -> Iterator[sa.Connection]:
    """A connection to the closed store at `store_url`, to change its tables as an mtfleet of
    schema `version` had them, in one transaction that then stamps it with `version`."""
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            yield conn
            conn.execute(sa.update(schema_version).values(version=version))
    finally:
        engine.dispose()


def stamped(store_url: str) -> tuple[int, list[str]]:
    """The schema version the store at `store_url` is stamped with, and its tables' names."""
    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.select(schema_version.c.version)).scalar_one()
            return version, sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_a_store_with_a_newer_schema_version_is_refused(store_url: str, store: JobStore) -> None:
    store.close()
    with written_as(store_url, SCHEMA_VERSION + 1):
        pass

    with pytest.raises(
        StoreError, match=f"schema version {SCHEMA_VERSION + 1}, written by a newer"
    ):
        JobStore(store_url)


def test_a_store_of_version_2_is_upgraded_in_place_with_its_jobs(
    store_url: str, store: JobStore
) -> None:
    job_id = running_job(store)
    store.close()
    with written_as(store_url, 2) as conn:
        # what version 2 had: no events, no failure counts
        conn.execute(sa.text("DROP TABLE mtfleet_job_events"))
        conn.execute(sa.text("DROP TABLE mtfleet_memory"))
        conn.execute(sa.text("ALTER TABLE mtfleet_shards DROP COLUMN failures"))

    upgraded = JobStore(store_url)
    try:
        assert upgraded.jobs.get(job_id).state is JobState.RUNNING
        assert {shard.failures for shard in upgraded.shards.in_row_order(job_id)} == {0}
        assert upgraded.shards.count_failure(job_id, 0) == 1
        assert [e.kind for e in upgraded.events.page(job_id)] == []
        upgraded.events.add(job_id, "paused", "Paused by the console.", actor="console")
        assert [e.kind for e in upgraded.events.page(job_id)] == ["paused"]
    finally:
        upgraded.close()
    assert stamped(store_url)[0] == SCHEMA_VERSION


def test_a_store_of_version_3_is_upgraded_in_place_with_its_translation_memory(
    store_url: str, store: JobStore
) -> None:
    job_id = running_job(store)
    store.close()
    entries = [
        ("sig", segment_sha256(f"segment {i}"), f"Segment {i}", json.dumps(["loop"] * (i % 2)), 5.0)
        for i in range(3)
    ]
    with written_as(store_url, 3) as conn:
        # what version 3 had: the memory keyed by its signature and sha256
        conn.execute(sa.text("DROP TABLE mtfleet_memory"))
        conn.execute(
            sa.text(
                "CREATE TABLE mtfleet_memory (signature VARCHAR(64) NOT NULL, "
                "source_sha256 VARCHAR(64) NOT NULL, target TEXT NOT NULL, flags JSON NOT NULL, "
                "used_at FLOAT NOT NULL, PRIMARY KEY (signature, source_sha256))"
            )
        )
        conn.execute(sa.text("CREATE INDEX ix_mtfleet_memory_used_at ON mtfleet_memory (used_at)"))
        conn.execute(
            sa.text("INSERT INTO mtfleet_memory VALUES (:s, :h, :t, :f, :u)"),
            [dict(zip("shtfu", entry, strict=True)) for entry in entries],
        )

    upgraded = JobStore(store_url)
    try:
        assert upgraded.jobs.get(job_id).state is JobState.RUNNING
        memory = TranslationMemory(upgraded)
        assert memory.recall("sig", [sha for _, sha, *_ in entries]) == {
            segment_sha256(f"segment {i}"): (f"Segment {i}", ["loop"] * (i % 2)) for i in range(3)
        }
        assert memory.stats().entries == 3
        memory.remember("sig", {segment_sha256("segment 3"): ("Segment 3", [])})
        assert memory.stats().entries == 4
    finally:
        upgraded.close()
    version, tables = stamped(store_url)
    assert version == SCHEMA_VERSION
    assert "mtfleet_memory_v3" not in tables


def test_failures_are_counted_per_shard_and_a_split_starts_its_halves_from_none(
    store: JobStore,
) -> None:
    job_id = running_job(store, bounds=(0, 10, 21))
    assert [store.shards.count_failure(job_id, 1) for _ in range(3)] == [1, 2, 3]
    assert store.shards.get(job_id, 0).failures == 0

    halves = store.shards.split(job_id, 1)

    assert [store.shards.get(job_id, index).failures for index in halves] == [0, 0]
    assert store.shards.count_failure(job_id, 1) == 0, "a shard split meanwhile counts nothing"


def test_events_are_a_job_history_read_in_pages(store: JobStore, clock: FakeClock) -> None:
    job_id = running_job(store)
    first = store.events.add(job_id, "submitted", "Submitted by the CLI.", actor="cli")
    clock.now += 5
    store.events.add(job_id, "paused", "Paused.", actor="alice")
    store.events.add(job_id, "node_lost", "Node n1 left; 2 shards went back to the queue.")

    history = store.events.page(job_id)
    assert [(e.kind, e.actor) for e in history] == [
        ("submitted", "cli"),
        ("paused", "alice"),
        ("node_lost", None),
    ]
    assert history[1].at == first.at + 5
    assert [e.kind for e in store.events.page(job_id, after=first.id, limit=1)] == ["paused"]
    with pytest.raises(JobError, match="nope"):
        store.events.add("nope", "paused", "Paused.")


def test_deleting_a_finished_job_takes_its_shards_counters_and_events_with_it(
    store: JobStore,
) -> None:
    job_id = running_job(store)
    store.events.add(job_id, "submitted", "Submitted.", actor="cli")
    store.counters.add(job_id, "lease_expiries")
    store.jobs.set_state(job_id, JobState.CANCELLED)

    deleted = store.jobs.delete(job_id)

    assert deleted.state is JobState.CANCELLED
    assert store.jobs.find(job_id) is None
    # the same id starts afresh: no shard, counter or event of the deleted job is left to find
    store.jobs.create(job_id, SPEC, None)
    assert not store.shards.exist(job_id)
    assert store.jobs.get(job_id).counters == {}
    assert store.events.page(job_id) == []


def test_an_active_job_cannot_be_deleted(store: JobStore) -> None:
    job_id = running_job(store)
    with pytest.raises(JobError, match=r"is running; only a finished .* cancel it first"):
        store.jobs.delete(job_id)
    assert store.jobs.get(job_id).state is JobState.RUNNING
    with pytest.raises(JobError, match="nope"):
        store.jobs.delete("nope")


def test_split_covers_the_same_rows_with_new_indices_and_no_attempts(store: JobStore) -> None:
    job_id = running_job(store, bounds=(0, 10, 21))
    first = store.leases.take(job_id, "t1", TTL_S)
    store.leases.complete(job_id, first.index, first.lease_id, "0.json", {})
    broken = store.leases.take(job_id, "t1", TTL_S)
    store.leases.release(job_id, broken.index, broken.lease_id, "ValueError")

    halves = store.shards.split(job_id, broken.index)
    quarters = store.shards.split(job_id, halves[1])

    assert halves == [2, 3] and quarters == [4, 5]
    shards = store.shards.in_row_order(job_id)
    assert [(s.index, s.row_start, s.row_end) for s in shards] == [
        (0, 0, 10),
        (2, 10, 15),
        (4, 15, 18),
        (5, 18, 21),
    ]
    assert all(s.row_end == after.row_start for s, after in itertools.pairwise(shards))
    assert [(s.state, s.attempts) for s in shards[1:]] == [(ShardState.PENDING, 0)] * 3
    assert sum(s.units for s in shards[1:]) == broken.units
    assert sum(s.est_tokens for s in shards[1:]) == broken.est_tokens
    with pytest.raises(JobError, match=f"has no shard {broken.index}"):
        store.shards.get(job_id, broken.index)


def test_a_one_row_shard_cannot_split_and_fails_with_its_error(store: JobStore) -> None:
    job_id = running_job(store, bounds=(0, 1, 2))
    lease = store.leases.take(job_id, "t1", TTL_S)
    store.leases.release(job_id, lease.index, lease.lease_id, "IndexError")

    with pytest.raises(JobError, match="holds only row 0 and cannot be split"):
        store.shards.split(job_id, lease.index)
    assert store.shards.fail(job_id, lease.index, None, "IndexError: row 0")

    shard = store.shards.get(job_id, lease.index)
    assert (shard.state, shard.error) == (ShardState.FAILED, "IndexError: row 0")
    assert store.counters.progress(job_id)["shards"]["failed"] == 1


def test_a_stale_lease_cannot_fail_a_shard(store: JobStore, clock: FakeClock) -> None:
    job_id = running_job(store)
    stale = store.leases.take(job_id, "t1", TTL_S)
    clock.now += TTL_S
    store.leases.expire(job_id)
    current = store.leases.take(job_id, "t2", TTL_S)

    assert not store.shards.fail(job_id, stale.index, stale.lease_id, "late")
    assert store.shards.fail(job_id, current.index, current.lease_id, "RuntimeError")
    assert store.shards.get(job_id, current.index).state == ShardState.FAILED


def test_counters_manifest_and_job_list_are_kept_per_job(store: JobStore, clock: FakeClock) -> None:
    store.jobs.create("first", SPEC, plan(0, 10))
    clock.now += 1
    running_job(store)

    assert store.counters.add("job", "translator_deaths") == 1
    assert store.counters.add("job", "translator_deaths", 2) == 3
    store.jobs.set_manifest("job", {"shards": 3, "failures": []})

    job = store.jobs.get("job")
    assert job.counters == {"translator_deaths": 3}
    assert job.manifest == {"shards": 3, "failures": []}
    assert job.updated_at == clock.now
    assert [j.id for j in store.jobs.all()] == ["first", "job"]
    assert [j.id for j in store.jobs.all(JobState.RUNNING)] == ["job"]
    assert store.jobs.all(JobState.RUNNING)[0].counters == {"translator_deaths": 3}


def test_an_unknown_job_is_a_job_error_naming_it(store: JobStore) -> None:
    with pytest.raises(JobError, match="No job 'ghost' in the job store"):
        store.jobs.get("ghost")
    with pytest.raises(JobError, match="No job 'ghost'"):
        store.leases.take("ghost", "t1", TTL_S)
    with pytest.raises(JobError, match="No job 'ghost'"):
        store.counters.add("ghost", "lease_expiries")


def test_an_overlapping_shard_plan_is_refused(store: JobStore) -> None:
    overlapping = [ShardPlan(0, 10, 1, 1), ShardPlan(5, 15, 1, 1)]

    with pytest.raises(JobError, match=r"overlapping row range \[5, 15\)"):
        store.jobs.create("job", SPEC, overlapping)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("jobs.db", "is not a URL"),
        ("mysql://root@localhost/jobs", "unsupported database 'mysql'"),
        ("sqlite://", "names no file"),
        ("sqlite:////nonexistent/dir/jobs.db", "cannot be used: unable to open database file"),
        ("postgresql://postgres@127.0.0.1:1/test", "cannot be used: .*127.0.0.1"),
    ],
)
def test_a_bad_or_unreachable_store_is_one_sentence_store_error(url: str, reason: str) -> None:
    with pytest.raises(StoreError, match=reason) as raised:
        JobStore(url)

    assert "\n" not in str(raised.value) and str(raised.value).endswith(".")


def test_the_state_dir_store_is_a_wal_file_another_process_reads(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with JobStore.for_state_dir(state_dir) as store:
        running_job(store)
        lease = store.leases.take("job", "t1", TTL_S)
        store.leases.complete("job", lease.index, lease.lease_id, "0.json", {"segments": 5})

        reader = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from mtfleet.store import JobStore; "
                "print(JobStore.for_state_dir(sys.argv[1]).counters.progress('job')['segments_done'])",
                str(state_dir),
            ],
            capture_output=True,
            text=True,
            check=True,
        )

    assert reader.stdout.strip() == "5"
    with sqlite3.connect(state_dir / "jobs.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_new_sqlite_store_locked_by_another_process_creating_it_is_waited_for(
    tmp_path: Path,
) -> None:
    from mtfleet.testing.faults import sqlite_locked

    database = tmp_path / "jobs.db"
    # longer than SQLite's own 5 s busy timeout: two commands starting at once on a new state dir
    with sqlite_locked(database, hold_s=7):
        store = JobStore(f"sqlite:///{database}")

    assert store.jobs.all() == []


def test_callers_take_turns_for_the_store_in_the_order_they_came() -> None:
    """A coordinator's 64 threads share a store of 15 connections: each waits its turn, none is
    overtaken (SQLAlchemy's pool let one wait 11 s behind the others)."""
    from mtfleet.store.database import Turns

    turns = Turns(1)
    order: list[int] = []
    first_holds = threading.Event()
    release = threading.Event()

    def first() -> None:
        # the second is a store method called by another: it needs no turn of its own
        with turns.turn(), turns.turn():
            first_holds.set()
            release.wait()

    def later(n: int) -> None:
        with turns.turn():
            order.append(n)

    holder = threading.Thread(target=first)
    holder.start()
    first_holds.wait()
    waiting = []
    for n in range(5):
        thread = threading.Thread(target=later, args=(n,))
        thread.start()
        waiting.append(thread)
        while len(turns._waiting) < n + 1:  # it stands in line before the next one comes
            threading.Event().wait(0.001)
    release.set()
    for thread in [holder, *waiting]:
        thread.join()
    assert order == [0, 1, 2, 3, 4]
