"""Jobs that share a cluster: warm translators between jobs, fair shares, summed autoscaler asks,
and translators that span GPUs.

The jobs run the deterministic reverse engine; its load is counted by the translator
(`engine_loads` in its info), so a warm job is seen not to load its engine again.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import ray
import ray.autoscaler.sdk
from ray.exceptions import RayActorError

from mtfleet.api.server import ServerSettings
from mtfleet.cluster import coordinator as coordinator_module
from mtfleet.cluster import pool as pool_module
from mtfleet.cluster import prepare_job, run_job, start_coordinator
from mtfleet.cluster.coordinator import NAMESPACE, coordinator_name
from mtfleet.cluster.job import with_keep_warm
from mtfleet.cluster.link import PoolLink
from mtfleet.cluster.placement import SHARE_EVERY_S, Placement, TranslatorSlot
from mtfleet.cluster.pool import (
    JOB_SILENCE_S,
    JobRegistry,
    Resources,
    WarmTranslator,
    evictions,
    warm_pool,
)
from mtfleet.cluster.protocol import Action, LeaseReply
from mtfleet.engines.reverse import HANG_ON_VARIABLE
from mtfleet.errors import ApiError
from mtfleet.spec import JobSpec
from mtfleet.store import JobState, JobStore
from mtfleet.testing.cluster import (
    JobThread,
    coordinator_of_a_running_job,
    local_cluster,
    repeated_jsonl,
    reverse_spec,
    wait_for,
)
from mtfleet.testing.engines import DELAY_VARIABLE

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"
FIELDS = ["instruction", "input", "output"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repeated_jsonl(ALPACA, 2, tmp_path_factory.mktemp("data") / "alpaca2.jsonl")


@pytest.fixture(scope="module")
def clean_output(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The output of the job alone on a local cluster: what every shared run must equal."""
    work = tmp_path_factory.mktemp("clean")
    result = run_job(reverse_spec(dataset, work / "out.jsonl", FIELDS), state_dir=work / "state")
    assert result.state == "succeeded", result.error
    return (work / "out.jsonl").read_bytes()


def make_spec(dataset: Path, output: Path, **settings: Any) -> JobSpec:
    # no translation memory: a job of a dataset translated before would be filled at planning,
    # and these jobs are here for their translators
    return reverse_spec(dataset, output, FIELDS, **({"memory": False} | settings))


def run(spec: JobSpec, state_dir: Path) -> dict[str, Any]:
    result = run_job(spec, state_dir=state_dir)
    assert result.state == "succeeded", result.error
    return result.manifest or {}


def warm_translators() -> list[tuple[Any, dict[str, Any]]]:
    """The pool's idle translators with their info; they stay in the pool."""
    pool = warm_pool()
    kept = []
    for idle in ray.get(pool.idle.remote()):
        handle = ray.get(pool.take.remote(idle["key"], idle["node_id"]))
        kept.append((handle, ray.get(handle.info.remote())))
        pool.keep.remote(handle, idle["key"], idle["node_id"], idle["resources"], idle["left_s"])
    return kept


def ended(handle: Any) -> bool:
    try:
        ray.get(handle.info.remote(), timeout=10)
    except RayActorError:
        return True
    return False


def test_a_second_job_of_the_same_model_runs_on_the_first_jobs_translator_without_loading_it(
    dataset: Path, tmp_path: Path, clean_output: bytes
) -> None:
    with local_cluster(head_cpus=1):
        run(make_spec(dataset, tmp_path / "first.jsonl", keep_warm_s=120), tmp_path / "state")
        [(_, first)] = warm_translators()
        assert first["engine_loads"] == 1 and first["jobs"] == 1
        run(make_spec(dataset, tmp_path / "second.jsonl", keep_warm_s=120), tmp_path / "state")
        [(_, second)] = warm_translators()
    assert second["pid"] == first["pid"]
    assert second["jobs"] == 2
    assert second["engine_loads"] == 1
    assert (tmp_path / "second.jsonl").read_bytes() == clean_output


# A second model on a node: with one CPU, the first model's idle translator holds what the job
# needs; with two, the job has room for its one translator beside it.
@pytest.mark.parametrize("head_cpus, evicted", [(1, True), (2, False)], ids=["full", "room"])
def test_a_job_of_another_model_evicts_an_idle_translator_only_where_the_node_has_no_room(
    dataset: Path, tmp_path: Path, clean_output: bytes, head_cpus: int, evicted: bool
) -> None:
    with local_cluster(head_cpus=head_cpus):
        run(make_spec(dataset, tmp_path / "first.jsonl", keep_warm_s=120), tmp_path / "state")
        [(first, _)] = warm_translators()
        # another batch budget is another engine
        other = make_spec(dataset, tmp_path / "other.jsonl", keep_warm_s=120, max_batch_tokens=2048)
        run(other, tmp_path / "state")
        assert ended(first) is evicted
        kept = [info for _, info in warm_translators()]
    # the other model's translator, and the first model's where it stayed warm for its next job
    assert [info["jobs"] for info in kept] == [1] * (1 if evicted else 2)
    assert all(info["engine_loads"] == 1 for info in kept)
    assert (tmp_path / "other.jsonl").read_bytes() == clean_output


def test_a_kept_translator_ends_itself_when_its_keep_warm_time_is_over(
    dataset: Path, tmp_path: Path
) -> None:
    with local_cluster(head_cpus=1):
        # kept long enough to be found in the pool however slow the machine is
        run(make_spec(dataset, tmp_path / "out.jsonl", keep_warm_s=120), tmp_path / "state")
        # taken out of the pool, it is no one's to kill: it ends itself
        [(translator, _)] = warm_translators()
        pool = warm_pool()
        [idle] = ray.get(pool.idle.remote())
        ray.get(pool.take.remote(idle["key"], idle["node_id"]))
        # released for no keep-warm time at all: only the pool's grace is left
        ray.get(translator.release.remote(0))
        wait_for(lambda: ended(translator))
        wait_for(lambda: ray.available_resources().get("CPU") == 1.0)


def test_the_pool_kills_a_kept_translator_when_its_time_is_over_even_one_that_cannot_end_itself(
    dataset: Path, tmp_path: Path
) -> None:
    with local_cluster(head_cpus=1):
        # kept long enough to be found in the pool however slow the machine is
        run(make_spec(dataset, tmp_path / "out.jsonl", keep_warm_s=120), tmp_path / "state")
        [(translator, _)] = warm_translators()
        # as a translator stuck where its own guard thread never runs
        ray.get(translator.__ray_call__.remote(lambda self: setattr(self, "deadline", None)))
        # then its keep-warm time is over
        pool = warm_pool()
        [idle] = ray.get(pool.idle.remote())
        ray.get(pool.take.remote(idle["key"], idle["node_id"]))
        ray.get(pool.keep.remote(translator, idle["key"], idle["node_id"], idle["resources"], 0))
        wait_for(lambda: ended(translator))
        assert ray.get(warm_pool().idle.remote()) == []
        wait_for(lambda: ray.available_resources().get("CPU") == 1.0)


@pytest.mark.parametrize("restart", [True, False], ids=["restarted", "killed"])
def test_a_translator_whose_coordinator_is_gone_or_does_not_know_it_ends_itself(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart: bool
) -> None:
    monkeypatch.setenv(DELAY_VARIABLE, "0.5")
    with local_cluster(head_cpus=2):
        spec = make_spec(
            dataset, tmp_path / "out.jsonl", keep_warm_s=120, cpu_translators_per_node=2
        )
        coordinator = start_coordinator(prepare_job(spec, state_dir=tmp_path / "state"))

        def placed() -> list[dict[str, Any]]:
            return [t for t in ray.get(coordinator.translators.remote()) if "pid" in t]

        wait_for(lambda: len(placed()) == 2)
        workers = [t["worker_id"] for t in placed()]
        handles = [
            ray.get(
                coordinator.__ray_call__.remote(lambda self, w=w: self.placement.slots[w].handle)
            )
            for w in workers
        ]
        ray.kill(coordinator, no_restart=not restart)
        for handle in handles:
            wait_for(lambda handle=handle: ended(handle))
        if restart:
            # the restarted coordinator goes on with translators of its own
            wait_for(lambda: len(placed()) == 2)
            assert not {t["worker_id"] for t in placed()} & set(workers)
            ray.kill(ray.get_actor(coordinator_name(spec_job_id(tmp_path)), namespace=NAMESPACE))


def ended_process(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_cancelled_job_kills_its_translator_stuck_in_a_shard_and_keeps_only_the_idle_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked to go warm, a translator in the middle of a shard would finish it first: one stuck
    there would hold its CPU for good, as a warm translator that serves no one. Cancel kills it."""
    monkeypatch.setenv(HANG_ON_VARIABLE, "MARKER")
    rows = [{"text": f"Sentence number {i} is fine."} for i in range(40)]
    rows[17]["text"] = "This one carries MARKER."
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = reverse_spec(
        dataset,
        tmp_path / "out.jsonl",
        ["text"],
        keep_warm_s=120,
        cpu_translators_per_node=2,
        shard_tokens=30,
        # far above the test's length: the watchdog is not what stops the stuck translator
        lease_ttl_s=600,
        # a backup lease would put the idle translator on the stuck shard too
        speculative_tail=False,
    )
    with local_cluster(head_cpus=2):
        job = JobThread(spec, tmp_path / "state")
        job.start()
        store = JobStore.for_state_dir(tmp_path / "state")
        wait_for(lambda: bool(store.jobs.all()))
        [record] = store.jobs.all()

        def stuck_and_the_rest_done() -> bool:
            progress = store.counters.progress(record.id)["shards"]
            return progress["leased"] == 1 and progress["pending"] == 0

        wait_for(stuck_and_the_rest_done)
        [stuck] = [s for s in store.shards.in_row_order(record.id) if s.state == "leased"]
        assert stuck.row_start <= 17 < stuck.row_end
        coordinator = ray.get_actor(coordinator_name(record.id), namespace=NAMESPACE)

        def pids() -> dict[str, int]:
            translators = ray.get(coordinator.translators.remote())
            return {t["worker_id"]: t["pid"] for t in translators if "pid" in t}

        wait_for(lambda: len(pids()) == 2)
        pid_of = pids()

        store.jobs.set_state(record.id, JobState.CANCELLED)

        job.join()
        assert job.result is not None and job.result.state == "cancelled"
        # the coordinator stops its translators after the driver has seen the job end
        wait_for(lambda: store.counters.progress(record.id)["shards"]["leased"] == 0)
        wait_for(lambda: ended_process(pid_of[stuck.lease_owner]))
        # the coordinator hands the idle one to the pool without waiting for the pool's answer
        wait_for(lambda: len(ray.get(warm_pool().idle.remote())) == 1)
        [(_, idle)] = warm_translators()
        assert idle["pid"] == next(pid for w, pid in pid_of.items() if w != stuck.lease_owner)


def spec_job_id(tmp_path: Path) -> str:
    from mtfleet.store import JobStore

    [job] = JobStore.for_state_dir(tmp_path / "state").jobs.all()
    return job.id


def test_two_jobs_at_once_each_get_a_fair_share_and_write_what_each_writes_alone(
    dataset: Path, tmp_path: Path, clean_output: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY_VARIABLE, "0.3")
    with local_cluster(head_cpus=2):
        jobs = [
            JobThread(
                make_spec(dataset, tmp_path / f"out{i}.jsonl", cpu_translators_per_node=2),
                tmp_path / "state",
            )
            for i in range(2)
        ]
        for job in jobs:
            job.start()
        # each job holds a translator at the same time: the node's two are shared one and one
        wait_for(lambda: all(job.reports and job.reports[-1]["translators"] for job in jobs))
        wait_for(lambda: all(len(job.reports[-1]["translators"]) == 1 for job in jobs))
        results = [job.outcome() for job in jobs]
    assert [r.state for r in results] == ["succeeded", "succeeded"]
    for i in range(2):
        assert (tmp_path / f"out{i}.jsonl").read_bytes() == clean_output


def test_the_autoscaler_is_asked_once_for_the_gpus_every_active_job_wants() -> None:
    asked: list[int] = []
    now = [0.0]
    registry = JobRegistry(asked.append, clock=lambda: now[0])
    assert registry.share("a", True, 2) == 1
    assert registry.share("b", True, 3) == 2
    # a paused job wants no translators and no GPUs: the others' share grows
    assert registry.share("c", False, 0) == 2
    registry.leave("a")
    assert asked == [2, 5, 3]
    # a job whose coordinator went silent no longer counts
    now[0] = JOB_SILENCE_S + 1
    assert registry.share("d", True, 1) == 1
    assert asked == [2, 5, 3, 1]


def test_the_registry_counts_what_the_other_jobs_translators_hold_on_a_node() -> None:
    registry = JobRegistry(lambda gpus: None)
    registry.share("a", True, 0, {"n1": {"CPU": 2}, "n2": {"GPU": 1}})
    registry.share("b", True, 0, {"n1": {"CPU": 1, "GPU": 2}})
    assert registry.held_on("n1", but="a") == {"CPU": 1, "GPU": 2}
    assert registry.held_on("n1", but="c") == {"CPU": 3, "GPU": 2}
    assert registry.held_on("n3", but="c") == {}


def test_idle_translators_go_only_as_far_as_a_node_is_short_soonest_to_expire_first() -> None:
    cpu_soon = WarmTranslator(None, "a", "n", {"CPU": 1}, expires_at=1.0)
    cpu_late = WarmTranslator(None, "b", "n", {"CPU": 1}, expires_at=2.0)
    gpus = WarmTranslator(None, "c", "n", {"GPU": 2}, expires_at=0.0)
    idle = [cpu_late, gpus, cpu_soon]
    # room left (zero or more): nothing is evicted
    assert evictions(idle, {"CPU": 0}) == []
    assert evictions(idle, {"CPU": -3, "GPU": 0}) == []
    assert evictions(idle, {"CPU": 1}) == [cpu_soon]
    assert evictions(idle, {"CPU": 2}) == [cpu_soon, cpu_late]
    assert evictions(idle, {"GPU": 1}) == [gpus]
    # short of more than they hold: those that hold what is short, no others
    assert evictions(idle, {"CPU": 5}) == [cpu_soon, cpu_late]


class ToldPool(PoolLink):
    """A warm pool that notes what it is told and answers that `sharing` jobs share the fleet."""

    def __init__(self, told: list[tuple[Any, ...]], sharing: int) -> None:
        super().__init__()
        self.told, self.sharing = told, sharing

    def share(self, job_id: str, wants: bool, gpus: int, held: dict[str, Resources]) -> int:
        self.told.append(("share", job_id, wants, gpus, held))
        return self.sharing


def test_a_job_is_planned_for_its_share_of_the_live_nodes_and_the_gpus_it_asks_for(
    tmp_path: Path,
) -> None:
    coordinator = coordinator_of_a_running_job(tmp_path)
    spec = coordinator.spec.model_copy(update={"cpu_translators_per_node": 2})
    placement = Placement("job", coordinator.store, spec, tmp_path, ToldPool([], 1))
    cpu_node = {"NodeID": "a", "Alive": True, "Resources": {"CPU": 4.0}}
    gpu_node = {"NodeID": "b", "Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0}}
    dead_node = {"NodeID": "c", "Alive": False, "Resources": {"CPU": 64.0}}

    assert placement.fleet_size([cpu_node, gpu_node, dead_node]) == 2 + 2 + 2
    # another job shares the fleet: half of each node's translators (rounded up) are this one's
    placement.sharing_jobs = 2
    assert placement.fleet_size([cpu_node, gpu_node]) == 1 + 1 + 1
    # --gpus 8 asks the autoscaler for GPU nodes the cluster does not have yet
    placement.sharing_jobs = 1
    placement.spec = spec.model_copy(update={"gpus": 8, "gpus_per_translator": 2})
    assert placement.fleet_size([cpu_node]) == 2 + 4
    assert placement.fleet_size([]) == 4


def test_a_job_tells_the_pool_what_it_wants_when_that_changes_and_every_few_seconds(
    tmp_path: Path,
) -> None:
    coordinator = coordinator_of_a_running_job(tmp_path)
    told: list[tuple[Any, ...]] = []
    placement = Placement(
        "job",
        coordinator.store,
        coordinator.spec,
        tmp_path,
        ToldPool(told, sharing=2),
    )

    for _ in range(3):
        placement.share(JobState.RUNNING, 5)
    assert told == [("share", "job", True, 0, {})]
    assert placement.sharing_jobs == 2
    placement.slots["w"] = TranslatorSlot("w", "node", "cpu0", None, None, None)  # placed
    placement.share(JobState.RUNNING, 5)
    placement.share(JobState.PAUSED, 5)
    placement.share(JobState.PAUSED, 5)
    assert told[1:] == [
        ("share", "job", True, 0, {"node": {"CPU": 1}}),
        ("share", "job", False, 0, {"node": {"CPU": 1}}),
    ]
    # nothing changed, but the pool must hear from a job within JOB_SILENCE_S
    placement.told_pool_at -= SHARE_EVERY_S
    placement.share(JobState.PAUSED, 5)
    assert len(told) == 4


def test_a_job_resumed_with_other_fleet_settings_runs_with_them_on_its_live_coordinator(
    tmp_path: Path,
) -> None:
    coordinator = coordinator_of_a_running_job(tmp_path)
    store = coordinator.store
    stored = dict(store.jobs.get("job").spec)
    store.jobs.update_spec("job", {**stored, "cpu_translators_per_node": 3, "lease_ttl_s": 90.0})

    coordinator.fleet.follow_spec(store.jobs.get("job").spec)

    assert (coordinator.spec.cpu_translators_per_node, coordinator.spec.lease_ttl_s) == (3, 90.0)
    assert coordinator.ledger.spec.lease_ttl_s == 90.0
    asked_at = time.time()
    lease = coordinator.ledger.lease("t1")
    assert lease is not None
    expires_at = store.shards.get("job", lease.index).lease_expires_at
    # leased for the new 90 s, not the 60 s the job was stored with
    assert expires_at is not None and expires_at - asked_at > 60


class PlanWatched(threading.Event):
    """The coordinator's `planned` event, which says when someone waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.awaited.set()
        return super().wait(timeout)


def test_a_translator_asking_while_its_job_is_planned_gets_a_shard_once_the_plan_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a translator is told to wait only when the plan takes longer than this; never in this test
    monkeypatch.setattr(coordinator_module, "PLAN_WAIT_S", 600.0)
    coordinator = coordinator_of_a_running_job(tmp_path)
    coordinator.placement.slots["warm"] = TranslatorSlot("warm", "node", "cpu0", None, None, None)
    coordinator.planned = PlanWatched()
    replies: list[LeaseReply] = []
    asking = threading.Thread(target=lambda: replies.append(coordinator.lease("warm")))
    asking.start()
    assert coordinator.planned.awaited.wait(timeout=60), "the lease did not wait for the plan"
    coordinator.planned.set()
    asking.join()
    assert replies[0].action is Action.TRANSLATE


def test_the_gpu_sum_goes_to_the_autoscaler_as_one_gpu_bundles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests: list[list[dict[str, int]]] = []
    monkeypatch.setattr(
        ray.autoscaler.sdk, "request_resources", lambda bundles: requests.append(bundles)
    )
    pool_module.ask_autoscaler(3)
    assert requests == [[{"GPU": 1}] * 3]


def test_a_translator_spans_k_gpus_of_one_node_and_cpu_translators_use_the_cores_left(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DELAY_VARIABLE, "10")
    with local_cluster(head_cpus=1) as cluster:
        gpu_node = cluster.add_node(num_cpus=3, num_gpus=4)
        cluster.wait_for_nodes()
        spec = make_spec(
            dataset, tmp_path / "out.jsonl", gpus_per_translator=2, cpu_translators_per_node=2
        )
        coordinator = start_coordinator(prepare_job(spec, state_dir=tmp_path / "state"))

        def on_gpu_node() -> list[dict[str, Any]]:
            return [
                t
                for t in ray.get(coordinator.translators.remote())
                if "pid" in t and t["node_id"] == gpu_node.node_id
            ]

        # 4 GPUs in translators of 2; 3 cores less the 2 GPU translators' leave one CPU translator
        wait_for(lambda: len(on_gpu_node()) == 3)
        gpu_sets = sorted(t["gpu_ids"] for t in on_gpu_node() if t["gpu_ids"])
        ray.kill(coordinator, no_restart=True)
    assert len(gpu_sets) == 2 and all(len(ids) == 2 for ids in gpu_sets)
    assert sorted(i for ids in gpu_sets for i in ids) == [0, 1, 2, 3]


def test_a_job_keeps_its_own_keep_warm_time_else_the_clusters_default(dataset: Path) -> None:
    spec = make_spec(dataset, dataset.with_suffix(".out.jsonl"))
    assert with_keep_warm(spec, 300).keep_warm_s == 300
    assert with_keep_warm(spec.model_copy(update={"keep_warm_s": 0}), 300).keep_warm_s == 0
    # a run setting: the job is the same job, whatever its translators' keep-warm time
    assert with_keep_warm(spec, 300).default_job_id("k") == spec.default_job_id("k")


def test_a_server_refuses_a_negative_keep_warm_in_one_sentence(tmp_path: Path) -> None:
    settings = ServerSettings(data_root=tmp_path, insecure_no_auth=True, keep_warm_s=-1)
    with pytest.raises(ApiError, match=r"^--keep-warm must be 0 or more seconds\.$"):
        settings.check()
