"""Steering a job and leasing its shards through its coordinator, with no Ray: the coordinator's
lease call waits for work (long-polled) and wakes on every change; a move with no coordinator
running goes through the store, and the job's history says who asked."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mtfleet.cluster import coordinator as coordinator_module
from mtfleet.cluster.control import steer
from mtfleet.cluster.coordinator import JobCoordinator
from mtfleet.cluster.placement import TranslatorSlot
from mtfleet.cluster.protocol import Action, LeaseReply
from mtfleet.errors import JobError
from mtfleet.store import JobState, JobStore, ShardPlan
from mtfleet.testing.cluster import coordinator_of_a_running_job, wait_for


@pytest.fixture
def coordinator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobCoordinator:
    """The coordinator of a running job of one shard, translators `a` and `b` placed; a waiting
    lease wakes only when told (never on its own clock), so each test shows what wakes it."""
    monkeypatch.setattr(coordinator_module, "LEASE_WAIT_S", 600.0)
    monkeypatch.setattr(coordinator_module, "LEASE_RECHECK_S", 600.0)
    coordinator = coordinator_of_a_running_job(tmp_path)
    coordinator.planned.set()
    for worker in ("a", "b"):
        coordinator.placement.slots[worker] = TranslatorSlot(
            worker, "node", "cpu0", None, None, None
        )
    return coordinator


def waiting_lease(
    coordinator: JobCoordinator, worker_id: str
) -> tuple[threading.Thread, list[LeaseReply]]:
    replies: list[LeaseReply] = []
    asking = threading.Thread(target=lambda: replies.append(coordinator.lease(worker_id)))
    asking.start()
    wait_for(lambda: coordinator.lease_waiters == 1)
    return asking, replies


def answered(asking: threading.Thread) -> bool:
    asking.join(timeout=60)
    return not asking.is_alive()


def test_an_idle_translator_waits_in_its_lease_call_and_gets_the_shard_another_one_failed(
    coordinator: JobCoordinator,
) -> None:
    first = coordinator.lease("a")
    assert first.action is Action.TRANSLATE and first.lease is not None
    asking, replies = waiting_lease(coordinator, "b")

    coordinator.fail("a", first.lease.index, first.lease.lease_id, "ValueError: row 3")
    assert answered(asking), "the waiting lease was not woken"

    assert replies[0].action is Action.TRANSLATE
    assert replies[0].lease is not None and replies[0].lease.index == first.lease.index


def test_a_cancel_answers_the_waiting_translators_stop_at_once(
    coordinator: JobCoordinator,
) -> None:
    assert coordinator.lease("a").action is Action.TRANSLATE
    asking, replies = waiting_lease(coordinator, "b")

    assert coordinator.move(JobState.CANCELLED.value) == (True, "cancelled")
    assert answered(asking), "the waiting lease was not woken"

    assert replies[0].action is Action.STOP
    assert coordinator.move(JobState.CANCELLED.value) == (False, "cancelled")


def test_no_more_than_half_the_actors_threads_wait_for_a_lease(
    coordinator: JobCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator_module, "MAX_LEASE_WAITERS", 1)
    assert coordinator.lease("a").action is Action.TRANSLATE
    asking, replies = waiting_lease(coordinator, "b")

    # the second idle translator is told to wait at once: the thread stays free for other calls
    assert coordinator.lease("b").action is Action.WAIT

    coordinator.move(JobState.CANCELLED.value)
    assert answered(asking), "the waiting lease was not woken"
    assert replies[0].action is Action.STOP


def test_a_job_with_no_coordinator_is_steered_in_the_store_and_its_history_says_who(
    tmp_path: Path,
) -> None:
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        store.jobs.create("job", {"input": "in"}, [ShardPlan(0, 10, 10, 1000)])
        store.jobs.set_state("job", JobState.RUNNING)

        paused = steer(store, "job", JobState.PAUSED, "ada")
        again = steer(store, "job", JobState.PAUSED, "bob")
        cancelled = steer(store, "job", JobState.CANCELLED, "bob")
        with pytest.raises(JobError) as refused:
            steer(store, "job", JobState.RUNNING, "ada")

        assert (paused.state, again.state, cancelled.state) == (
            JobState.PAUSED,
            JobState.PAUSED,
            JobState.CANCELLED,
        )
        assert [(e.kind, e.actor) for e in store.events.page("job")] == [
            ("paused", "ada"),
            ("cancelled", "bob"),
        ]
        assert str(refused.value) == (
            "Job job is cancelled; only a queued, running or paused job can resume."
        )
