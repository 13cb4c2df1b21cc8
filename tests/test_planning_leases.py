"""Translators lease a job's first shards while the rest of its input is planned: only shards whose
rows' units are on disk, and a plan an earlier coordinator stored part of goes on where it ended
(no speculative backup before the plan is whole: test_tail.py); the API says the job is still
planned, and gives no ETA of the rows cut so far."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from mtfleet.api.following import Followed
from mtfleet.api.jobs import JobService
from mtfleet.cli.console import render_job
from mtfleet.cluster import coordinator as coordinator_module
from mtfleet.cluster.coordinator import JobCoordinator
from mtfleet.cluster.placement import TranslatorSlot
from mtfleet.cluster.plan import PlanStep
from mtfleet.cluster.protocol import Action
from mtfleet.errors import JobError
from mtfleet.spec import stored_spec
from mtfleet.store import JobState, JobStore, ShardPlan
from mtfleet.testing.cluster import reverse_spec

TRANSLATORS = ("a", "b")


class Steps:
    """Planning's steps, handed over one at a time by the test: `hand` returns once the
    coordinator has taken the step and asks for the next."""

    def __init__(self) -> None:
        self.waiting: queue.Queue[PlanStep] = queue.Queue()
        self.taken = threading.Semaphore(0)

    def __iter__(self) -> Iterator[PlanStep]:
        while True:
            step = self.waiting.get()
            yield step
            self.taken.release()
            if step.done:
                return

    def hand(self, step: PlanStep) -> None:
        self.waiting.put(step)
        assert self.taken.acquire(timeout=60), "the coordinator did not take the step"


@pytest.fixture
def planning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[JobCoordinator, Steps]:
    """The coordinator of a job being planned, with two translators placed and a planner whose
    steps the test hands over; a lease is answered at once (no waiting for work)."""
    monkeypatch.setattr(coordinator_module, "LEASE_WAIT_S", 0.0)
    store_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    spec = reverse_spec(tmp_path / "in.jsonl", tmp_path / "out.jsonl", ["text"])
    with JobStore(store_url) as store:
        store.jobs.create("job", stored_spec(spec, "key"), None)
    coordinator = JobCoordinator("job", store_url, str(tmp_path / "work"))
    coordinator.ledger.rows_planned = 0
    for worker in TRANSLATORS:
        coordinator.placement.slots[worker] = TranslatorSlot(
            worker, "node", "cpu0", None, None, None
        )
    steps = Steps()
    threading.Thread(target=coordinator.take_steps, args=(steps, 2), daemon=True).start()
    return coordinator, steps


def leased_rows(coordinator: JobCoordinator, worker: str) -> tuple[int, int] | None:
    reply = coordinator.lease(worker)
    if reply.action is Action.WAIT:
        return None
    assert reply.lease is not None
    return reply.lease.row_start, reply.lease.row_end


def test_a_translator_leases_the_first_shard_while_the_rest_of_the_input_is_planned(
    planning: tuple[JobCoordinator, Steps],
) -> None:
    coordinator, steps = planning
    assert leased_rows(coordinator, "a") is None

    steps.hand(PlanStep(0, [ShardPlan(0, 10, 10, 100)], rows=14, done=False))

    assert coordinator.store.jobs.get("job").state is JobState.RUNNING
    assert leased_rows(coordinator, "a") == (0, 10)
    # nothing else is planned: the other translator waits
    assert leased_rows(coordinator, "b") is None

    steps.hand(PlanStep(1, [ShardPlan(10, 20, 10, 100)], rows=30, done=False))
    assert leased_rows(coordinator, "b") == (10, 20)
    assert [event.kind for event in coordinator.store.events.page("job")] == []

    steps.hand(PlanStep(2, [ShardPlan(20, 30, 10, 100)], rows=30, done=True))
    assert leased_rows(coordinator, "b") == (20, 30)
    assert coordinator.ledger.rows_planned is None
    assert [event.kind for event in coordinator.store.events.page("job")] == ["planned"]


def test_shards_an_earlier_coordinator_stored_are_leased_once_planned_again_past_their_rows(
    planning: tuple[JobCoordinator, Steps],
) -> None:
    coordinator, steps = planning
    # what the last coordinator stored of the plan before it stopped
    coordinator.store.jobs.add_plan("job", [ShardPlan(0, 10, 10, 100), ShardPlan(10, 20, 10, 100)])

    steps.hand(PlanStep(2, [], rows=12, done=False))
    assert leased_rows(coordinator, "a") == (0, 10)
    # its rows 12-19 are not written again yet: a translator reading them now would read the
    # earlier plan's unit file, or none
    assert leased_rows(coordinator, "b") is None

    steps.hand(PlanStep(2, [ShardPlan(20, 25, 5, 50)], rows=26, done=True))
    assert leased_rows(coordinator, "b") == (10, 20)
    assert leased_rows(coordinator, "b") == (20, 25)
    shards = coordinator.store.shards.in_row_order("job")
    assert [(s.index, s.row_start, s.row_end) for s in shards] == [
        (0, 0, 10),
        (1, 10, 20),
        (2, 20, 25),
    ]


def test_a_plan_that_does_not_go_on_where_the_stored_one_ended_is_refused(
    planning: tuple[JobCoordinator, Steps],
) -> None:
    coordinator, _ = planning
    coordinator.store.jobs.add_plan("job", [ShardPlan(0, 10, 10, 100)])

    with pytest.raises(JobError, match="does not go on where its stored shards end"):
        coordinator.store.jobs.add_plan("job", [ShardPlan(12, 20, 8, 80)], first_index=1)


def test_the_api_says_a_job_is_still_planned_and_gives_no_eta_of_its_rows_cut_so_far(
    tmp_path: Path,
) -> None:
    service = JobService(tmp_path, tmp_path / "state")
    spec = reverse_spec(tmp_path / "in.jsonl", tmp_path / "out.jsonl", ["text"])
    service.store.jobs.create("job", stored_spec(spec, "key"), [ShardPlan(0, 1000, 1000, 9000)])
    service.store.jobs.set_state("job", JobState.RUNNING)
    # what its coordinator said last: 100 rows a second, and its plan not whole
    samples = deque([(0.0, 0, 0), (1.0, 100, 100)])
    service.followed["job"] = Followed(None, {"planning": True}, samples)

    planning = service.job("job")
    assert planning.planning and planning.eta_s is None
    assert planning.rows_per_s == 100
    # and the terminal console (`mtfleet status JOB`) says so where the ETA goes
    console = Console(width=160, record=True)
    console.print(render_job(planning.model_dump()))
    shown = console.export_text()
    assert "0/1000 rows" in shown and "planning" in shown and "ETA" not in shown

    service.followed["job"].report = {"planning": False}
    planned = service.job("job")
    assert not planned.planning and planned.eta_s == 10.0
