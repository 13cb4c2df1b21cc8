"""Faults of the machine are not poison rows: a job survives them, or stops cleanly naming them.

Each test injects one fault users meet (a full disk, a store that restarts or is locked, a hung
translator, a device out of memory, an input changed mid-job, a node lost while the coordinator
restarts). Every job must end `succeeded` with the bytes of a clean run, or stop (paused or
failed) with one sentence and no `failed` rows that a healthy run would have translated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray

from mtfleet.cluster import prepare_job, run_job, start_coordinator
from mtfleet.cluster.coordinator import NAMESPACE, coordinator_name
from mtfleet.cluster.ledger import FAULTS_BEFORE_PAUSE
from mtfleet.cluster.logs import log_path
from mtfleet.errors import StoreError
from mtfleet.spec import JobSpec
from mtfleet.store import JobState, JobStore, TransientStoreError
from mtfleet.testing.cluster import JobThread, local_cluster, repeated_jsonl, reverse_spec, wait_for
from mtfleet.testing.faults import full_disk, sqlite_locked, throwaway_postgres

pytestmark = pytest.mark.cluster

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"
FIELDS = ["instruction", "input", "output"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The alpaca sample twice over, as JSONL: 204 rows."""
    return repeated_jsonl(ALPACA, 2, tmp_path_factory.mktemp("data") / "alpaca2.jsonl")


def make_spec(dataset: Path, output: Path, **settings: Any) -> JobSpec:
    return reverse_spec(dataset, output, FIELDS, **settings)


@pytest.fixture(scope="module")
def clean_output(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The output of a clean run: what every run that survives a fault must equal."""
    work = tmp_path_factory.mktemp("clean")
    result = run_job(make_spec(dataset, work / "out.jsonl"), state_dir=work / "state")
    assert result.state == "succeeded", result.error
    return (work / "out.jsonl").read_bytes()


def translate_command(dataset: Path, output: Path, state_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "mtfleet.cli.main", "translate", str(dataset),
        "--model", "reverse", "--engine", "reverse", "--fields", ",".join(FIELDS),
        "--output", str(output), "--shard-tokens", "250", "--state-dir", str(state_dir),
    ]  # fmt: skip


def no_failed_shards(store: JobStore, job_id: str) -> bool:
    return not store.shards.failed(job_id)


# --- the work dir's disk fills up


def test_a_full_disk_pauses_the_job_naming_it_and_a_rerun_after_freeing_it_finishes(
    dataset: Path, tmp_path: Path, clean_output: bytes
) -> None:
    state_dir, output = tmp_path / "state", tmp_path / "out.jsonl"
    # the jobs' work dirs fill up; the store (state/jobs.db) is elsewhere
    with full_disk(state_dir / "jobs", tmp_path / "disk-is-full") as disk:
        env = os.environ | disk.environment | {"MTFLEET_REVERSE_DELAY_S": "0.05"}
        command = translate_command(dataset, output, state_dir)
        first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        store = JobStore.for_state_dir(state_dir)

        def shards_done() -> int:
            jobs = store.jobs.all()
            return store.counters.progress(jobs[0].id)["shards"]["done"] if jobs else 0

        wait_for(lambda: shards_done() >= 2, timeout_s=120)
        disk.fill()
        _, stderr = first.communicate(timeout=180)

        (job,) = store.jobs.all()
        assert first.returncode == 2
        assert job.state is JobState.PAUSED
        parts = f"{state_dir / 'jobs' / job.id / 'parts'}: no space left on device"
        assert job.error.startswith(parts)
        assert parts in " ".join(stderr.split())
        assert no_failed_shards(store, job.id)
        assert job.counters["faults"] >= FAULTS_BEFORE_PAUSE
        assert not output.exists()

        disk.free()
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert output.read_bytes() == clean_output
    manifest = json.loads(output.with_name("out.jsonl.manifest.json").read_text())
    assert manifest["failures"] == [] and manifest["shards_reused"] >= 2


# --- the job store restarts or is locked


def test_a_postgresql_server_restarted_mid_job_is_waited_for_and_the_job_finishes(
    dataset: Path, tmp_path: Path, clean_output: bytes, slow_engine: None
) -> None:
    with throwaway_postgres() as server, local_cluster(head_cpus=2):
        driver = JobThread(
            make_spec(dataset, tmp_path / "out.jsonl"), tmp_path / "state", server.url
        )
        driver.start()
        wait_for(lambda: driver.shards_done() >= 2)
        coordinator_log = log_path(driver.work_dir(), "coordinator")
        server.stop()
        # down until the coordinator has met the outage (and retried) at least once
        wait_for(lambda: "Retrying" in coordinator_log.read_text())
        server.start()
        result = driver.outcome()
        store = JobStore(server.url)
        assert result.state == "succeeded", result.error
        assert no_failed_shards(store, result.job_id)
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output


def test_a_sqlite_store_locked_by_another_process_is_waited_for_and_the_job_finishes(
    dataset: Path, tmp_path: Path, clean_output: bytes, slow_engine: None
) -> None:
    with local_cluster(head_cpus=2):
        driver = JobThread(make_spec(dataset, tmp_path / "out.jsonl"), tmp_path / "state")
        driver.start()
        wait_for(lambda: driver.shards_done() >= 2)
        # longer than SQLite's own busy timeout, so the store's retries take over
        with sqlite_locked(tmp_path / "state" / "jobs.db", hold_s=8):
            pass
        result = driver.outcome()
    assert result.state == "succeeded", result.error
    assert "database is locked" in log_path(driver.work_dir(), "coordinator").read_text()
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output


def test_a_locked_sqlite_store_is_a_transient_error_and_a_missing_one_a_lasting_one(
    tmp_path: Path,
) -> None:
    store = JobStore.for_state_dir(tmp_path)
    store.jobs.create("job", {"input": "x"}, [])
    store.db.retry_s = 0.5  # no time for a second try
    locked = pytest.raises(TransientStoreError, match="database is locked")
    with sqlite_locked(tmp_path / "jobs.db", hold_s=7), locked:
        store.counters.add("job", "n")
    assert store.counters.add("job", "n") == 1  # the lock's holder has let go
    with pytest.raises(StoreError) as missing:
        JobStore(f"sqlite:///{tmp_path / 'missing' / 'jobs.db'}")
    assert not isinstance(missing.value, TransientStoreError)


# --- translators that hang or run out of device memory


@pytest.fixture
def marked(tmp_path: Path) -> Path:
    """40 one-sentence rows; row 17 carries the word MARKER."""
    rows = [{"id": i, "text": f"Sentence number {i} is fine."} for i in range(40)]
    rows[17]["text"] = "This one carries MARKER."
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def marked_spec(dataset: Path, **settings: Any) -> JobSpec:
    return JobSpec(
        input=str(dataset),
        output=str(dataset.with_name("out.jsonl")),
        model="reverse",
        engine="reverse",
        fields=["text"],
        **({"shard_tokens": 30, "max_attempts": 1, "lease_ttl_s": 5.0} | settings),
    )


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_translator_hung_on_a_row_is_restarted_by_the_watchdog_and_only_that_row_fails(
    marked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTFLEET_REVERSE_HANG_ON", "MARKER")
    result = run_job(marked_spec(marked), state_dir=marked.parent / "state")
    assert result.state == "succeeded", result.error
    manifest = result.manifest
    assert [failure["row"] for failure in manifest["failures"]] == [17]
    assert "hung: no progress" in manifest["failures"][0]["error"]
    assert manifest["translator_deaths"] >= 1
    rows = read_rows(marked.with_name("out.jsonl"))
    assert rows[17]["text"] == "This one carries MARKER."
    assert all(
        rows[i]["text"] == f"Sentence number {i} is fine."[::-1] for i in range(40) if i != 17
    )
    work_dir = marked.parent / "state" / "jobs" / result.job_id
    assert "hung: no progress on shard" in log_path(work_dir, "coordinator").read_text()


def test_a_translator_stuck_holding_the_gil_is_killed_when_its_heartbeats_stop(
    marked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its heartbeat thread cannot run, and it would not hear a request to stop: the watchdog
    kills it once the lease's TTL passes without a heartbeat, and only its row fails."""
    monkeypatch.setenv("MTFLEET_REVERSE_SPIN_ON", "MARKER")
    result = run_job(marked_spec(marked), state_dir=marked.parent / "state")
    assert result.state == "succeeded", result.error
    manifest = result.manifest
    assert [failure["row"] for failure in manifest["failures"]] == [17]
    assert "hung: no heartbeat on shard" in manifest["failures"][0]["error"]
    rows = read_rows(marked.with_name("out.jsonl"))
    assert rows[17]["text"] == "This one carries MARKER."
    assert rows[16]["text"] == "Sentence number 16 is fine."[::-1]


def test_a_device_out_of_memory_halves_the_batch_budget_and_translates_everything(
    marked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTFLEET_REVERSE_OOM_ABOVE", "40")
    spec = marked_spec(marked, shard_tokens=400, max_batch_tokens=256)
    result = run_job(spec, state_dir=marked.parent / "state")
    assert result.state == "succeeded", result.error
    assert result.manifest["failures"] == []
    rows = read_rows(marked.with_name("out.jsonl"))
    assert rows[17]["text"] == ".REKRAM seirrac eno sihT"
    work_dir = marked.parent / "state" / "jobs" / result.job_id
    (translator_log,) = (work_dir / "logs").glob("translator-*.log")
    assert "out of memory at 256 tokens a batch; halved to 128" in translator_log.read_text()
    assert "halved to 32" in translator_log.read_text()


def test_a_device_too_small_for_any_batch_pauses_the_job_with_no_failed_rows(
    marked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTFLEET_REVERSE_OOM_ABOVE", "1")
    result = run_job(marked_spec(marked), state_dir=marked.parent / "state")
    assert result.state == "paused"
    assert "is out of memory even at 32 tokens a batch" in result.error
    store = JobStore.for_state_dir(marked.parent / "state")
    assert no_failed_shards(store, result.job_id)
    assert not marked.with_name("out.jsonl").exists()


# --- the input, and the cluster under the coordinator


def test_an_input_changed_mid_job_fails_it_at_assembly_in_one_sentence(
    dataset: Path, tmp_path: Path, slow_engine: None
) -> None:
    changing = tmp_path / "input.jsonl"
    changing.write_bytes(dataset.read_bytes())
    with local_cluster(head_cpus=2):
        driver = JobThread(make_spec(changing, tmp_path / "out.jsonl"), tmp_path / "state")
        driver.start()
        wait_for(lambda: driver.shards_done() >= 2)
        with changing.open("a") as stream:
            stream.write(
                json.dumps({"instruction": "Added.", "input": "", "output": "Late."}) + "\n"
            )
        result = driver.outcome()
    assert result.state == "failed"
    assert (
        result.error
        == f"{changing} changed while job {result.job_id} ran; run it again as a new job."
    )
    assert no_failed_shards(JobStore.for_state_dir(tmp_path / "state"), result.job_id)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_store_url")


def test_a_detached_job_goes_on_when_its_coordinator_dies_and_a_node_leaves_meanwhile(
    dataset: Path,
    tmp_path: Path,
    clean_output: bytes,
    store_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A shard takes a second here, so the leaving node is caught holding one.
    monkeypatch.setenv("MTFLEET_REVERSE_DELAY_S", "1.0")
    spec = make_spec(dataset, tmp_path / "out.jsonl", shard_tokens=3000)
    with local_cluster(head_cpus=1) as cluster:
        leaving = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        handle = prepare_job(spec, state_dir=tmp_path / "state", store_url=store_url)
        store = JobStore(handle.store_url)
        start_coordinator(handle)

        def leaving_node_holds_a_shard() -> bool:
            return any(
                s.state.value == "leased" and s.lease_owner.startswith(leaving.node_id[:8])
                for s in store.shards.in_row_order(handle.job_id)
            )

        wait_for(leaving_node_holds_a_shard, poll_s=0.02)
        # no driver and no API: Ray restarts the coordinator, which resumes the job by itself
        coordinator = ray.get_actor(coordinator_name(handle.job_id), namespace=NAMESPACE)
        ray.kill(coordinator, no_restart=False)
        cluster.remove_node(leaving)
        wait_for(lambda: store.jobs.get(handle.job_id).state.value == "succeeded", timeout_s=180)
        ray.kill(coordinator, no_restart=True)
    job = store.jobs.get(handle.job_id)
    assert job.counters["coordinator_restarts"] >= 1
    assert no_failed_shards(store, handle.job_id)
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output


def test_a_model_a_node_cannot_load_pauses_the_job_naming_it_instead_of_failing_rows(
    tiny_marian_dir: Path, marked: Path
) -> None:
    # config and tokenizer pass the driver's check; the weights are missing where translators run
    model = marked.parent / "model-without-weights"
    shutil.copytree(tiny_marian_dir, model, ignore=shutil.ignore_patterns("*.safetensors"))
    spec = marked_spec(marked).model_copy(update={"model": str(model), "engine": "hf"})
    result = run_job(spec, state_dir=marked.parent / "state")
    assert result.state == "paused"
    assert "cannot load the model" in result.error
    assert no_failed_shards(JobStore.for_state_dir(marked.parent / "state"), result.job_id)
