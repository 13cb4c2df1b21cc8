"""The elastic cluster: nodes join and leave, the coordinator and the driver die, nothing is lost.

Every job here runs the deterministic reverse engine (each segment reversed), so a run with crashes
must give the same bytes as a clean run, and the manifest must account for every unit once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
from ray.experimental.internal_kv import _internal_kv_get

from mtfleet.cluster import prepare_job, run_job, start_coordinator
from mtfleet.cluster.coordinator import NAMESPACE, coordinator_name
from mtfleet.cluster.plan import HELD_VARIABLE, plan_job
from mtfleet.spec import JobSpec
from mtfleet.store import JobStore
from mtfleet.testing.cluster import JobThread, local_cluster, repeated_jsonl, reverse_spec, wait_for
from mtfleet.testing.engines import DELAY_VARIABLE

pytestmark = pytest.mark.cluster

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"
FIELDS = ["instruction", "input", "output"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The alpaca sample four times over, as JSONL: 408 rows, 216 empty inputs."""
    return repeated_jsonl(ALPACA, 4, tmp_path_factory.mktemp("data") / "alpaca4.jsonl")


def make_spec(dataset: Path, output: Path, **settings: Any) -> JobSpec:
    return reverse_spec(dataset, output, FIELDS, **settings)


@pytest.fixture(scope="module")
def clean_output(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The output of a clean run on a one-node local cluster: what every chaotic run must equal."""
    work = tmp_path_factory.mktemp("clean")
    result = run_job(make_spec(dataset, work / "out.jsonl"), state_dir=work / "state")
    assert result.state == "succeeded", result.error
    return (work / "out.jsonl").read_bytes()


def assert_accounted(manifest: dict[str, Any]) -> None:
    assert manifest["rows"] == 408
    assert manifest["units_total"] == 408 * 3
    assert manifest["units_skipped_empty"] == 216
    assert manifest["units_translated"] + manifest["units_skipped_empty"] == manifest["units_total"]
    assert manifest["failures"] == []


class Driver(JobThread):
    """Runs a job to its end in the background while the test changes the cluster under it."""

    def finish(self, timeout_s: float = 180) -> dict[str, Any]:
        result = self.outcome(timeout_s)
        assert result.state == "succeeded", result.error
        return result.manifest


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_store_url")


def test_each_gpu_gets_one_translator_and_a_cpu_node_the_configured_count(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each shard takes 10 s (under the watchdog's bound), so the job runs while it is looked at;
    # a paused job would hold no translators at all.
    monkeypatch.setenv(DELAY_VARIABLE, "10")
    with local_cluster(head_cpus=2) as cluster:
        gpu_node = cluster.add_node(num_cpus=1, num_gpus=2)
        cluster.wait_for_nodes()
        spec = make_spec(dataset, tmp_path / "out.jsonl", cpu_translators_per_node=2, gpus=3)
        handle = prepare_job(spec, state_dir=tmp_path / "state")
        coordinator = start_coordinator(handle)

        def translators() -> list[dict[str, Any]]:
            return [t for t in ray.get(coordinator.translators.remote()) if "gpu_ids" in t]

        wait_for(lambda: len(translators()) == 4)
        on_gpu_node = [t for t in translators() if t["node_id"] == gpu_node.node_id]
        on_head = [t for t in translators() if t["node_id"] != gpu_node.node_id]
        assert sorted(t["gpu_ids"][0] for t in on_gpu_node) == [0, 1]
        assert len(on_head) == 2 and all(t["gpu_ids"] == [] for t in on_head)
        # --gpus 3: the autoscaler is asked for three one-GPU bundles while work is left.
        assert json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)) == [{"GPU": 1}] * 3
        ray.kill(coordinator)


def test_a_node_that_joins_mid_run_gets_translators_and_completes_shards(
    dataset: Path, tmp_path: Path, clean_output: bytes, store_url: str | None, slow_engine: None
) -> None:
    with local_cluster(head_cpus=1) as cluster:
        driver = Driver(make_spec(dataset, tmp_path / "out.jsonl"), tmp_path / "state", store_url)
        driver.start()
        wait_for(lambda: driver.shards_done() >= 2)
        joined = cluster.add_node(num_cpus=1)
        manifest = driver.finish()
    assert manifest["segments_per_node"].get(joined.node_id, 0) > 0
    assert_accounted(manifest)
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output


def test_a_node_that_leaves_mid_run_has_its_shards_redone_elsewhere(
    dataset: Path,
    tmp_path: Path,
    clean_output: bytes,
    store_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A shard takes a second here, so the leaving node is caught holding one.
    monkeypatch.setenv("MTFLEET_REVERSE_DELAY_S", "1.0")
    store = JobStore(store_url) if store_url else JobStore.for_state_dir(tmp_path / "state")
    with local_cluster(head_cpus=1) as cluster:
        leaving = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        spec = make_spec(dataset, tmp_path / "out.jsonl", shard_tokens=3000)
        driver = Driver(spec, tmp_path / "state", store_url)
        driver.start()
        held: list[int] = []

        def leaving_node_holds_a_shard() -> bool:
            jobs = store.jobs.all()
            held[:] = [
                s.index
                for s in (store.shards.in_row_order(jobs[0].id) if jobs else [])
                if s.state.value == "leased" and s.lease_owner.startswith(leaving.node_id[:8])
            ]
            return bool(held)

        wait_for(leaving_node_holds_a_shard, poll_s=0.02)
        cluster.remove_node(leaving)
        manifest = driver.finish()
    redone = store.shards.get(manifest["job_id"], held[0])
    assert redone.state.value == "done"
    assert not redone.lease_owner.startswith(leaving.node_id[:8])
    assert redone.attempts >= 2
    assert_accounted(manifest)
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output


def test_a_killed_coordinator_is_restarted_and_the_job_resumes(
    dataset: Path, tmp_path: Path, clean_output: bytes, store_url: str | None, slow_engine: None
) -> None:
    with local_cluster(head_cpus=2):
        driver = Driver(make_spec(dataset, tmp_path / "out.jsonl"), tmp_path / "state", store_url)
        driver.start()
        wait_for(lambda: driver.shards_done() >= 3)
        job_id = driver.reports[-1]["job_id"]
        ray.kill(ray.get_actor(coordinator_name(job_id), namespace=NAMESPACE), no_restart=True)
        manifest = driver.finish()
    assert manifest["shards_reused"] > 0
    assert manifest["coordinator_restarts"] >= 1
    assert_accounted(manifest)
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output


def test_a_coordinator_killed_mid_plan_is_restarted_and_plans_on_from_its_stored_shards(
    dataset: Path, tmp_path: Path, clean_output: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small shards, so the plan is handed over in steps; it waits after each while `held` exists
    held = tmp_path / "plan-held"
    held.touch()
    monkeypatch.setenv(HELD_VARIABLE, str(held))
    spec = make_spec(dataset, tmp_path / "out.jsonl", shard_tokens=200)
    store = JobStore.for_state_dir(tmp_path / "state")

    def events() -> list[str]:
        jobs = store.jobs.all()
        return [event.kind for event in store.events.page(jobs[0].id)] if jobs else []

    with local_cluster(head_cpus=2):
        driver = Driver(spec, tmp_path / "state")
        driver.start()
        wait_for(lambda: store.jobs.all() and store.shards.exist(store.jobs.all()[0].id))
        job_id = store.jobs.all()[0].id
        stored = len(store.shards.in_row_order(job_id))
        assert "planned" not in events() and store.jobs.get(job_id).state.value == "running"
        ray.kill(ray.get_actor(coordinator_name(job_id), namespace=NAMESPACE), no_restart=False)
        wait_for(lambda: "restarted" in events())
        held.unlink()
        manifest = driver.finish()

    shards = store.shards.in_row_order(job_id)
    whole = plan_job(spec, tmp_path / "whole")
    assert 0 < stored < len(shards)
    assert [(s.row_start, s.row_end) for s in shards] == [(s.row_start, s.row_end) for s in whole]
    assert events() == ["submitted", "restarted", "planned", "succeeded", "work_removed"]
    assert manifest["coordinator_restarts"] >= 1
    assert_accounted(manifest)
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output


def test_a_storm_of_joins_and_leaves_loses_and_duplicates_nothing(
    dataset: Path, tmp_path: Path, clean_output: bytes, store_url: str | None, slow_engine: None
) -> None:
    storm = random.Random(7)
    with local_cluster(head_cpus=1) as cluster:
        driver = Driver(make_spec(dataset, tmp_path / "out.jsonl"), tmp_path / "state", store_url)
        driver.start()
        wait_for(lambda: driver.shards_done() >= 1)
        workers: list[Any] = []
        changes = 0
        while changes < 12 and driver.is_alive():
            if workers and (len(workers) >= 3 or storm.random() < 0.5):
                cluster.remove_node(workers.pop(storm.randrange(len(workers))))
            else:
                workers.append(cluster.add_node(num_cpus=1, num_gpus=storm.choice([0, 1])))
            changes += 1
            # the storm's pace, not a wait for a state: nodes come and go at random moments
            time.sleep(storm.uniform(0.3, 1.0))
        manifest = driver.finish()
    assert changes >= 10
    assert_accounted(manifest)
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output
    store = JobStore(store_url) if store_url else JobStore.for_state_dir(tmp_path / "state")
    assert all(s.state.value == "done" for s in store.shards.in_row_order(manifest["job_id"]))


def test_resume_keeps_the_stored_plan_whatever_the_fleet_is_now(
    dataset: Path, tmp_path: Path, clean_output: bytes
) -> None:
    # shards sized to the fleet (no --shard-tokens): two translators planned for, one resumes
    output = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "mtfleet.cli.main", "translate", str(dataset),
        "--model", "reverse", "--engine", "reverse", "--fields", ",".join(FIELDS),
        "--output", str(output), "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    # every engine call of the first run outlasts it: it is killed once its plan is stored
    first = subprocess.Popen(
        [*command, "--cpu-translators-per-node", "2"],
        env=os.environ | {DELAY_VARIABLE: "600"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = JobStore.for_state_dir(tmp_path / "state")

    def planned() -> list[tuple[int, int]]:
        jobs = store.jobs.all()
        shards = store.shards.in_row_order(jobs[0].id) if jobs else []
        return [(shard.row_start, shard.row_end) for shard in shards]

    try:
        wait_for(planned, timeout_s=120, poll_s=0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    plan = planned()
    rerun = subprocess.run(
        [*command, "--cpu-translators-per-node", "1"], capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr
    # one translator alone would have planned one shard (40,000 tokens): the stored plan ran
    assert len(plan) > 1 or os.cpu_count() == 1
    assert planned() == plan
    manifest = json.loads(output.with_name("out.jsonl.manifest.json").read_text())
    assert manifest["shards"] == len(plan)
    assert output.read_bytes() == clean_output


def test_a_driver_killed_mid_run_and_rerun_resumes_with_shards_reused(
    dataset: Path, tmp_path: Path, clean_output: bytes, store_url: str | None
) -> None:
    output = tmp_path / "out.jsonl"
    command = [
        sys.executable,
        "-m",
        "mtfleet.cli.main",
        "translate",
        str(dataset),
        "--model",
        "reverse",
        "--engine",
        "reverse",
        "--fields",
        ",".join(FIELDS),
        "--output",
        str(output),
        "--shard-tokens",
        "250",
        "--state-dir",
        str(tmp_path / "state"),
        *(["--store", store_url] if store_url else []),
    ]
    env = os.environ | {"MTFLEET_REVERSE_DELAY_S": "0.05"}
    first = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = JobStore(store_url) if store_url else JobStore.for_state_dir(tmp_path / "state")

    def some_shards_done() -> bool:
        jobs = store.jobs.all()
        return bool(jobs) and store.counters.progress(jobs[0].id)["shards"]["done"] >= 3

    try:
        wait_for(some_shards_done, timeout_s=120, poll_s=0.2)
    finally:
        # The whole session goes, the driver's local Ray with it: as when its machine dies.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert not output.exists()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads(output.with_name("out.jsonl.manifest.json").read_text())
    assert manifest["shards_reused"] >= 3
    assert_accounted(manifest)
    assert output.read_bytes() == clean_output
