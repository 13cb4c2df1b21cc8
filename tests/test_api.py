"""The REST API, its Python client and the admin console, over real HTTP on loopback.

One server and one local Ray cluster serve the whole module. Jobs run the reverse engine (each
segment's characters reversed, no model), slowed by MTFLEET_REVERSE_DELAY_S so that pause and
cancel find them running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

import mtfleet
from mtfleet.api.server import ServerSettings, refused_field
from mtfleet.api.views import JobRequest
from mtfleet.cli import console
from mtfleet.cluster.coordinator import NAMESPACE, coordinator_name
from mtfleet.cluster.retention import work_bytes
from mtfleet.errors import ApiError, DatasetError, ModelError, MtfleetError, OutputError
from mtfleet.testing.api import (
    ConsoleRun,
    authorized,
    free_port,
    run_console,
    serve_process,
    serving,
)
from mtfleet.testing.cluster import wait_for

TOKEN = "api-test-token-6b1f0c9e2d-58a3c70e4f"
DELAY_S = "0.1"
SMALL_ROWS = [{"id": i, "text": f"Row number {i} says hello", "note": ""} for i in range(6)]
# 40 rows of 18 estimated tokens (1 + 68 characters / 4) each: one shard per row at shard_tokens=16
BIG_ROWS = [
    {"id": i, "text": f"Sentence number {i:02d} is a plain line of words for the whole fleet here"}
    for i in range(40)
]
REVERSE = {"model": "reverse", "engine": "reverse"}


def reversed_rows(rows: list[dict[str, Any]], fields: list[str]) -> list[dict[str, Any]]:
    """What the reverse engine makes of one-sentence texts: each reversed, empty ones kept."""
    return [
        {key: value[::-1] if key in fields else value for key, value in row.items()} for row in rows
    ]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data_root")
    (root / "small.jsonl").write_text("".join(json.dumps(row) + "\n" for row in SMALL_ROWS))
    (root / "big.jsonl").write_text("".join(json.dumps(row) + "\n" for row in BIG_ROWS))
    (root / "out").mkdir()
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text(json.dumps({"text": "not yours"}) + "\n")
    (root / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (root / "models").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def api(data_root: Path, state_dir: Path) -> Iterator[str]:
    """The API on a free loopback port; it starts a local Ray cluster and stops it at the end."""
    with pytest.MonkeyPatch.context() as env:
        # Ray's workers inherit the environment of the process that starts the cluster.
        env.setenv("MTFLEET_REVERSE_DELAY_S", DELAY_S)
        env.setenv("OMP_NUM_THREADS", "1")
        with serving(ServerSettings(data_root=data_root, token=TOKEN, state_dir=state_dir)) as url:
            yield url
    assert not ray.is_initialized(), "the API left its Ray cluster running"


@pytest.fixture(scope="module")
def http(api: str) -> Iterator[httpx.Client]:
    with authorized(api, TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def client(api: str) -> Iterator[mtfleet.Client]:
    with mtfleet.Client(api, TOKEN) as client:
        yield client


def poll_until_ended(http: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = http.get(f"/v1/jobs/{job_id}").json()
        if view["state"] in ("succeeded", "failed", "cancelled"):
            return view
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not end in {timeout_s} s")


def translators_gone(http: httpx.Client, job_id: str) -> bool:
    view = http.get(f"/v1/jobs/{job_id}").json()
    return view["shards"]["leased"] == 0 and not view["translators"]


def coordinator_gone(job_id: str) -> bool:
    try:
        ray.get_actor(coordinator_name(job_id), namespace=NAMESPACE)
    except ValueError:
        return True
    return False


def big_job(**settings: Any) -> dict[str, Any]:
    """A job of many shards that runs long enough to be paused or cancelled: the translation
    memory, which earlier jobs of the module filled with its text, is off."""
    return {
        "input": "big.jsonl",
        "fields": ["text"],
        "shard_tokens": 16,
        "memory": False,
        **REVERSE,
        **settings,
    }


# --- jobs over HTTP


SMALL_JOB = {
    "input": "small.jsonl",
    "output": "out/small.jsonl",
    "fields": ["text", "note"],
    **REVERSE,
}


@pytest.fixture(scope="module")
def small_job(http: httpx.Client) -> tuple[httpx.Response, dict[str, Any]]:
    """SMALL_JOB POSTed once, and its status once it ended."""
    response = http.post("/v1/jobs", json=SMALL_JOB)
    return response, poll_until_ended(http, response.json()["id"])


def test_a_job_submitted_over_http_runs_to_the_end_and_writes_the_translated_dataset(
    http: httpx.Client, data_root: Path, small_job: tuple[httpx.Response, dict[str, Any]]
) -> None:
    response, final = small_job

    assert response.status_code == 201, response.text
    submitted = response.json()
    assert submitted["id"].startswith("job-") and submitted["id"] == final["id"]
    assert submitted["state"] in ("planning", "queued", "running", "succeeded")
    assert submitted["input"] == str(data_root / "small.jsonl")
    assert final["state"] == "succeeded", final["error"]
    assert (final["rows_done"], final["rows_total"], final["eta_s"]) == (6, 6, 0.0)
    assert final["segments_done"] == 6
    assert read_jsonl(data_root / "out" / "small.jsonl") == reversed_rows(SMALL_ROWS, ["text"])
    manifest = http.get(f"/v1/jobs/{final['id']}/manifest").json()
    assert manifest["rows"] == manifest["units_translated"] == manifest["units_skipped_empty"] == 6
    assert final["id"] in [job["id"] for job in http.get("/v1/jobs").json()]


def test_submitting_a_finished_job_again_returns_it_without_running_it_again(
    http: httpx.Client, small_job: tuple[httpx.Response, dict[str, Any]]
) -> None:
    _, first = small_job

    again = http.post("/v1/jobs", json=SMALL_JOB)

    assert again.status_code == 200
    assert {key: again.json()[key] for key in ("id", "state", "updated_at")} == {
        key: first[key] for key in ("id", "state", "updated_at")
    }


def test_a_job_reports_its_translators_and_throughput_per_node_while_it_runs(
    http: httpx.Client,
) -> None:
    job_id = http.post(
        "/v1/jobs", json=big_job(output="out/watched.jsonl", job_id="watched")
    ).json()["id"]
    wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["rows_done"] >= 5, timeout_s=60)
    wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["segments_per_s"], timeout_s=30)

    running = http.get(f"/v1/jobs/{job_id}").json()

    (node_id,) = [node["node_id"] for node in http.get("/v1/nodes").json()]
    assert [t["node_id"] for t in running["translators"]] == [node_id]
    (node,) = running["nodes"]
    assert node["node_id"] == node_id and node["shards_done"] >= 5 and node["segments_per_s"] > 0
    assert node["translators"] == [t["worker_id"] for t in running["translators"]]
    assert running["segments_per_s"] > 0 and running["eta_s"] > 0
    assert sum(running["shards"].values()) == 40
    http.post(f"/v1/jobs/{job_id}/cancel")


def test_pause_stops_new_leases_and_resume_finishes_with_the_same_output(
    http: httpx.Client, data_root: Path
) -> None:
    job_id = http.post("/v1/jobs", json=big_job(output="out/paused.jsonl", job_id="paused")).json()[
        "id"
    ]
    wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["rows_done"] >= 3, timeout_s=60)

    paused = http.post(f"/v1/jobs/{job_id}/pause")

    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    # shards leased before the pause finish; then the paused job's translators go, so none can
    # lease or land a shard any more
    wait_for(lambda: translators_gone(http, job_id), timeout_s=30)
    still = http.get(f"/v1/jobs/{job_id}").json()
    assert (still["state"], still["shards"]["leased"]) == ("paused", 0)
    assert still["shards"]["done"] < 40

    assert http.post(f"/v1/jobs/{job_id}/resume").json()["state"] == "running"
    assert poll_until_ended(http, job_id)["state"] == "succeeded"
    assert read_jsonl(data_root / "out" / "paused.jsonl") == reversed_rows(BIG_ROWS, ["text"])


def test_cancel_keeps_finished_parts_and_submitting_again_goes_on_from_them(
    http: httpx.Client, data_root: Path, state_dir: Path
) -> None:
    spec = big_job(output="out/cancelled.jsonl", job_id="cancelled")
    http.post("/v1/jobs", json=spec)
    wait_for(lambda: http.get("/v1/jobs/cancelled").json()["rows_done"] >= 3, timeout_s=60)

    cancelled = http.post("/v1/jobs/cancelled/cancel").json()

    assert cancelled["state"] == "cancelled"
    # a shard in flight may still land until the coordinator, and its translators with it, is gone
    wait_for(lambda: coordinator_gone("cancelled"), timeout_s=30)
    kept = http.get("/v1/jobs/cancelled").json()
    assert 3 <= kept["shards"]["done"] < 40
    parts = list((state_dir / "jobs" / "cancelled" / "parts").glob("*.jsonl"))
    assert len(parts) >= kept["shards"]["done"]
    assert not (data_root / "out" / "cancelled.jsonl").exists()

    again = http.post("/v1/jobs", json=spec).json()

    assert again["state"] in ("queued", "running")
    final = poll_until_ended(http, "cancelled")
    assert final["state"] == "succeeded"
    assert final["counters"]["shards_reused"] >= kept["shards"]["done"]
    assert read_jsonl(data_root / "out" / "cancelled.jsonl") == reversed_rows(BIG_ROWS, ["text"])


def test_the_api_starts_a_coordinator_again_when_one_dies(
    http: httpx.Client, data_root: Path
) -> None:
    http.post("/v1/jobs", json=big_job(output="out/orphaned.jsonl", job_id="orphaned"))
    wait_for(lambda: http.get("/v1/jobs/orphaned").json()["rows_done"] >= 3, timeout_s=60)

    ray.kill(ray.get_actor(coordinator_name("orphaned"), namespace=NAMESPACE), no_restart=True)

    final = poll_until_ended(http, "orphaned")
    assert final["state"] == "succeeded"
    assert final["counters"]["coordinator_restarts"] >= 1
    history = http.get("/v1/jobs/orphaned/events").json()["events"]
    assert "restarted" in [event["kind"] for event in history if event["actor"] is None]
    assert read_jsonl(data_root / "out" / "orphaned.jsonl") == reversed_rows(BIG_ROWS, ["text"])


def test_steering_a_finished_job_is_a_conflict_and_an_unknown_job_is_not_found(
    http: httpx.Client, small_job: tuple[httpx.Response, dict[str, Any]]
) -> None:
    job_id = small_job[1]["id"]

    conflict = http.post(f"/v1/jobs/{job_id}/pause")
    missing = http.get("/v1/jobs/ghost")

    assert conflict.status_code == 409
    assert conflict.json()["error"] == (
        f"Job {job_id} is succeeded; only a queued, running or paused job can pause."
    )
    assert (missing.status_code, missing.json()["error"]) == (404, "There is no job ghost.")
    assert http.get("/v1/jobs/ghost/manifest").status_code == 404
    no_failures = http.post(f"/v1/jobs/{job_id}/retry")
    assert (no_failures.status_code, no_failures.json()["error"]) == (
        409,
        f"Job {job_id} has no failed rows to retry.",
    )
    assert http.post("/v1/jobs/ghost/retry").status_code == 404


# --- retention, history and logs


def test_a_succeeded_job_keeps_its_plan_and_logs_only_and_says_what_they_weigh(
    http: httpx.Client, state_dir: Path, small_job: tuple[httpx.Response, dict[str, Any]]
) -> None:
    job_id = small_job[1]["id"]
    work_dir = state_dir / "jobs" / job_id
    # the server removes them once it has seen the job end, and counts them again
    wait_for(
        lambda: (
            not (work_dir / "parts").exists()
            and http.get(f"/v1/jobs/{job_id}").json()["work_bytes"] == work_bytes(work_dir)
        ),
        timeout_s=30,
    )

    view = http.get(f"/v1/jobs/{job_id}").json()

    assert sorted(path.name for path in work_dir.iterdir()) == ["logs", "plan.json"]
    assert view["work_bytes"] == work_bytes(work_dir) > 0
    listed = {job["id"]: job for job in http.get("/v1/jobs").json()}
    assert listed[job_id]["work_bytes"] == view["work_bytes"]
    # the output is still this job's own: submitting it again finds it done
    assert http.post("/v1/jobs", json=SMALL_JOB).json()["state"] == "succeeded"


def test_a_jobs_history_says_who_submitted_paused_resumed_and_cancelled_it(
    api: str, http: httpx.Client
) -> None:
    with mtfleet.Client(api, TOKEN, name="alice's notebook") as alice:
        job = alice.submit(**big_job(output="out/history.jsonl", job_id="history"))
        wait_for(lambda: job.status()["state"] == "running", timeout_s=60)
        job.pause()
        http.post("/v1/jobs/history/resume")
        job.cancel()
        wait_for(lambda: coordinator_gone("history"), timeout_s=30)

        history = job.events()

    asked = [(event["kind"], event["actor"]) for event in history if event["actor"]]
    assert asked == [
        ("submitted", "alice's notebook at 127.0.0.1"),
        ("paused", "alice's notebook at 127.0.0.1"),
        ("resumed", "api client at 127.0.0.1"),
        ("cancelled", "alice's notebook at 127.0.0.1"),
    ]
    assert "planned" in [event["kind"] for event in history if event["actor"] is None]
    assert [event["id"] for event in history] == sorted(event["id"] for event in history)
    page = http.get("/v1/jobs/history/events", params={"after": history[0]["id"], "limit": 1})
    assert page.json()["events"] == history[1:2]
    assert page.json()["next_after"] == history[1]["id"]


def test_a_finished_job_is_deleted_with_its_work_files_but_never_its_output(
    http: httpx.Client, data_root: Path, state_dir: Path, mtfleet_cli: Any
) -> None:
    spec = {**SMALL_JOB, "output": "out/deleted.jsonl", "job_id": "deleted", "keep_work": True}
    http.post("/v1/jobs", json=spec)
    assert poll_until_ended(http, "deleted")["state"] == "succeeded"
    assert (state_dir / "jobs" / "deleted" / "parts").is_dir()  # kept: keep_work

    shown = mtfleet_cli("status", "deleted", "--events")
    removed = mtfleet_cli("jobs", "rm", "deleted")

    assert shown.exit_code == 0 and re.search(r"submitted\s+api client at 127", shown.stdout)
    assert "succeeded" in shown.stdout
    assert removed.exit_code == 0, removed.output
    assert re.fullmatch(r"deleted deleted \(\d+\.\d KB freed\)\n", removed.stdout)
    assert http.get("/v1/jobs/deleted").status_code == 404
    assert not (state_dir / "jobs" / "deleted").exists()
    assert read_jsonl(data_root / "out" / "deleted.jsonl") == reversed_rows(SMALL_ROWS, ["text"])
    assert http.delete("/v1/jobs/deleted").status_code == 404


def test_an_active_job_cannot_be_deleted(http: httpx.Client, state_dir: Path) -> None:
    http.post("/v1/jobs", json=big_job(output="out/undeletable.jsonl", job_id="undeletable"))

    refused = http.delete("/v1/jobs/undeletable")

    assert refused.status_code == 409
    assert refused.json()["error"].startswith("Job undeletable is ")
    assert refused.json()["error"].endswith(
        "; only a finished job can be deleted, so cancel it first."
    )
    assert http.get("/v1/jobs/undeletable").status_code == 200
    http.post("/v1/jobs/undeletable/cancel")


def test_a_rerun_whose_output_went_missing_after_its_parts_were_removed_runs_again(
    http: httpx.Client, data_root: Path, state_dir: Path
) -> None:
    spec = {**SMALL_JOB, "output": "out/again.jsonl", "job_id": "again"}
    http.post("/v1/jobs", json=spec)
    assert poll_until_ended(http, "again")["state"] == "succeeded"
    # its parts go first, then the event that says so: wait for the event
    wait_for(lambda: "work_removed" in event_kinds(http, "again"), timeout_s=30)
    assert not (state_dir / "jobs" / "again" / "parts").exists()
    (data_root / "out" / "again.jsonl").unlink()

    rerun = http.post("/v1/jobs", json=spec)

    assert rerun.status_code == 201 and rerun.json()["state"] != "succeeded"
    assert poll_until_ended(http, "again")["state"] == "succeeded"
    assert read_jsonl(data_root / "out" / "again.jsonl") == reversed_rows(SMALL_ROWS, ["text"])
    kinds = event_kinds(http, "again")
    assert kinds[:2] == ["submitted", "replanned"] and "succeeded" in kinds


def event_kinds(http: httpx.Client, job_id: str) -> list[str]:
    return [event["kind"] for event in http.get(f"/v1/jobs/{job_id}/events").json()["events"]]


def test_a_jobs_logs_are_read_by_their_tail_and_never_outside_their_folder(
    http: httpx.Client, small_job: tuple[httpx.Response, dict[str, Any]]
) -> None:
    job_id = small_job[1]["id"]

    tail = http.get(f"/v1/jobs/{job_id}/logs", params={"tail": 2}).json()

    assert tail["file"] == "coordinator.log" and tail["files"][0]["name"] == "coordinator.log"
    assert any(f["name"].startswith("translator-") for f in tail["files"])
    assert len(tail["lines"]) == 2 and tail["next_offset"] == tail["size"]
    whole = http.get(f"/v1/jobs/{job_id}/logs", params={"offset": 0}).json()
    assert whole["lines"][-2:] == tail["lines"]
    assert any(f"job {job_id} started" in line for line in whole["lines"])
    outside = http.get(f"/v1/jobs/{job_id}/logs", params={"file": "../jobs.db"})
    assert outside.status_code == 422
    unknown = http.get(f"/v1/jobs/{job_id}/logs", params={"file": "jobs.db"})
    assert unknown.status_code == 404
    assert unknown.json()["error"].startswith(f"Job {job_id} has no log file jobs.db; its logs:")


# --- security


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
def test_every_v1_call_without_the_right_bearer_token_is_refused_with_401(
    api: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=api, headers=headers) as anonymous:
        for method, path in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/nodes"),
            ("POST", "/v1/jobs/x/cancel"),
            ("GET", "/v1/jobs/x/manifest"),
        ]:
            response = anonymous.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.json()["error"] in (
                "This call needs the header 'Authorization: Bearer <MTFLEET_API_TOKEN>'.",
                "The API token is wrong.",
            )


def test_health_metrics_and_the_openapi_document_need_no_token(api: str) -> None:
    with httpx.Client(base_url=api) as anonymous:
        health = anonymous.get("/healthz").json()
        openapi = anonymous.get("/openapi.json").json()
        assert anonymous.get("/metrics").status_code == 200
    assert health["status"] == "ok" and health["nodes_alive"] == 1
    assert {
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/pause",
        "/v1/jobs/{job_id}/resume",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/manifest",
        "/v1/nodes",
    } <= set(openapi["paths"])


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("input", "../{outside}/secret.jsonl", "lies outside the data root"),
        ("input", "{root}/../{outside}/secret.jsonl", "lies outside the data root"),
        ("input", "/etc/hostname", "lies outside the data root"),
        ("input", "link.jsonl", "leads through a symlink"),
        ("output", "../escaped.jsonl", "lies outside the data root"),
        ("output", "models/written.jsonl", "leads through a symlink"),
        ("model", "../{outside}", "lies outside the data root"),
        ("model", "models", "leads through a symlink"),
    ],
)
def test_a_path_outside_the_data_root_is_refused_with_400_naming_the_field(
    http: httpx.Client, data_root: Path, field: str, value: str, says: str
) -> None:
    value = value.format(root=data_root, outside=f"{data_root.name}-outside")
    spec = {
        "input": "small.jsonl",
        "output": "out/x.jsonl",
        "fields": ["text"],
        **REVERSE,
        field: value,
    }

    response = http.post("/v1/jobs", json=spec)

    assert response.status_code == 400
    error = response.json()["error"]
    assert response.json()["problems"] == [{"field": field, "message": error}]
    # the data root itself is never named, not even as the client wrote it
    assert error.startswith(f"Field {field}: {value.replace(f'{data_root}/', '')} ")
    assert says in error and str(data_root) not in error
    assert not (data_root.parent / "escaped.jsonl").exists()


def test_a_model_that_is_no_path_is_taken_as_a_hub_id(http: httpx.Client) -> None:
    spec = {
        "input": "small.jsonl",
        "output": "out/hub.jsonl",
        "fields": ["text"],
        "engine": "reverse",
        "model": "Helsinki-NLP/opus-mt-en-de",
        "job_id": "hub-id",
    }

    response = http.post("/v1/jobs", json=spec)

    assert response.status_code == 201, response.text
    assert response.json()["model"] == "Helsinki-NLP/opus-mt-en-de"
    assert poll_until_ended(http, "hub-id")["state"] == "succeeded"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"beam": 0}, "Field beam: Input should be greater than or equal to 1."),
        ({"model": None}, "Field model is required."),
        ({"modle": "x"}, "Field modle is not a job setting."),
        ({"engine": "gpt"}, "Field engine: Input should be 'hf', 'ct2' or 'reverse'."),
        ({"job_id": "../up"}, "Field job_id: String should match pattern"),
        ({"fields": []}, "Field fields: List should have at least 1 item after validation"),
        (
            {"checks": False, "on_flag": "drop-row"},
            "Field checks: on_flag drop-row acts on what the health checks flag",
        ),
    ],
)
def test_a_bad_spec_is_refused_with_422_naming_the_field(
    http: httpx.Client, change: dict[str, Any], message: str
) -> None:
    spec = {
        "input": "small.jsonl",
        "output": "out/x.jsonl",
        "fields": ["text"],
        **REVERSE,
        **change,
    }
    spec = {key: value for key, value in spec.items() if value is not None}

    response = http.post("/v1/jobs", json=spec)

    assert response.status_code == 422
    assert response.json()["error"].startswith(message)
    # the first problem at its field, for a form to show it there; `detail` as FastAPI has it
    assert response.json()["problems"][0]["field"] == message.split()[1].rstrip(":")
    assert response.json()["detail"][0]["loc"][0] == "body"


@pytest.mark.parametrize(
    ("error", "field"),
    [
        (OutputError("Cannot write out/x.jsonl: folder out does not exist."), "output"),
        (ModelError("Model m has no language code 'deu'; the nearest is 'de'."), "tgt_lang"),
        (ModelError("Model m has no language code 'eng'; the nearest is 'en'."), "src_lang"),
        (DatasetError("small.json does not exist."), "input"),
        (ApiError("Field gpus: 90 is more than this server's limit of 64.", 400), "gpus"),
        (ApiError("This server runs at most 16 active jobs.", 429), None),
    ],
)
def test_a_refused_submission_names_the_field_it_is_about(
    error: MtfleetError, field: str | None
) -> None:
    request = JobRequest(
        input="small.jsonl", output="out/x.jsonl", model="m", fields=["text"], src_lang="eng"
    )

    assert refused_field(error, request) == field


def test_a_model_name_too_long_for_the_file_system_is_refused_with_400(
    http: httpx.Client,
) -> None:
    spec = {"input": "small.jsonl", "output": "out/x.jsonl", "fields": ["text"], "model": "m" * 300}

    response = http.post("/v1/jobs", json=spec)

    assert response.status_code == 400, response.text
    assert response.json()["field"] == "model"
    assert "cannot be resolved to a file (File name too long)" in response.json()["error"]


def test_a_spec_the_planner_refuses_is_a_400_with_its_sentence(http: httpx.Client) -> None:
    spec = {"input": "small.jsonl", "output": "out/x.jsonl", "fields": ["title"], **REVERSE}

    response = http.post("/v1/jobs", json=spec)

    assert response.status_code == 400
    assert "title" in response.json()["error"]
    assert response.json()["field"] == "fields"


# --- a model's languages, for the console's pickers


@pytest.fixture(scope="module")
def nllb_dir(data_root: Path) -> Path:
    from mtfleet.random_models import build_tiny_model

    tiny = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "vocab_size": 300}
    return build_tiny_model("nllb", data_root / "tiny" / "nllb", **tiny)


def test_a_models_language_codes_are_served_with_what_each_is_in_iso_639(
    http: httpx.Client, nllb_dir: Path
) -> None:
    response = http.get("/v1/models/inspect", params={"model": "tiny/nllb"})

    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["model"], report["family"], report["engines"]) == (
        "tiny/nllb",
        "nllb",
        ["hf", "ct2"],
    )
    languages = report["languages"]
    assert languages["count"] == len(languages["codes"]) == len(languages["iso639"]) == 202
    assert languages["iso639"]["mar_Deva"] == {
        "iso639_3": "mar",
        "iso639_1": "mr",
        "script": "Deva",
    }
    # Standard Arabic is what a user means by ar
    assert languages["iso639"]["arb_Arab"]["iso639_1"] == "ar"
    # worded for the API: fields, not CLI options
    assert languages["given_as"].startswith("src_lang and tgt_lang")


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("../elsewhere", "Field model: ../elsewhere lies outside the data root."),
        (
            "models/secret.jsonl",
            "Field model: models/secret.jsonl leads through a symlink outside the data root.",
        ),
        ("small.jsonl", "Model directory small.jsonl is a file, not a model directory."),
        ("out", "Model directory out has no config.json: it holds no Hugging Face model."),
        (
            "no-such-org/no-such-model-6b1f0c",
            "Model 'no-such-org/no-such-model-6b1f0c' is not found locally: the API checks hub "
            "models without the network;",
        ),
        ("a\x00b", "Field model: holds the character U+0000, which no path or name may hold."),
        ("m" * 300, f"Field model: {'m' * 300} cannot be resolved to a file (File name too long)."),
    ],
)
def test_inspecting_a_model_the_api_cannot_read_is_one_sentence_naming_no_server_path(
    http: httpx.Client, data_root: Path, model: str, says: str
) -> None:
    response = http.get("/v1/models/inspect", params={"model": model})

    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(says)
    assert str(data_root) not in response.text


def test_inspecting_a_model_with_its_own_code_needs_a_server_that_allows_it(
    http: httpx.Client, nllb_dir: Path
) -> None:
    response = http.get(
        "/v1/models/inspect", params={"model": "tiny/nllb", "trust_remote_code": True}
    )

    assert response.status_code == 400
    assert response.json()["field"] == "trust_remote_code"
    assert "mtfleet serve --allow-remote-code" in response.json()["error"]


# --- metrics


def segments_counted(api: str) -> float:
    text = httpx.get(f"{api}/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["mtfleet_segments_translated"].type == "counter"
    (sample,) = families["mtfleet_segments_translated"].samples
    assert sample.name == "mtfleet_segments_translated_total"
    return sample.value


def test_metrics_parse_as_prometheus_text_and_count_the_segments_translated(
    api: str, http: httpx.Client
) -> None:
    before = segments_counted(api)
    spec = {"input": "small.jsonl", "output": "out/metrics.jsonl", "fields": ["text"], **REVERSE}
    job = poll_until_ended(http, http.post("/v1/jobs", json=spec).json()["id"])

    after = segments_counted(api)

    assert after - before == job["segments_done"] == 6
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{api}/metrics").text)}
    assert all(name.startswith("mtfleet_") for name in families)
    jobs = {sample.labels["state"]: sample.value for sample in families["mtfleet_jobs"].samples}
    assert jobs["succeeded"] >= 1
    assert families["mtfleet_nodes"].samples[0].value == 1
    requests = families["mtfleet_api_requests"].samples
    assert any(
        s.labels == {"method": "POST", "route": "/v1/jobs", "status": "201"} for s in requests
    )


# --- the Python client


def test_the_client_submits_waits_and_reads_the_manifest(
    client: mtfleet.Client, data_root: Path
) -> None:
    job = client.submit(
        input="small.jsonl",
        output="out/client.jsonl",
        fields="text,note",
        job_id="client",
        **REVERSE,
    )

    final = job.wait(progress=True, poll_s=0.2, timeout_s=60)

    assert final["state"] == "succeeded" and job.state == "succeeded"
    assert job.manifest()["units_translated"] == 6
    assert read_jsonl(data_root / "out" / "client.jsonl") == reversed_rows(SMALL_ROWS, ["text"])
    assert "client" in [listed.id for listed in client.jobs()]
    assert client.job("client").status()["rows_done"] == 6
    (node,) = client.nodes()
    assert node["state"] == "alive" and node["head"]


def test_a_job_into_several_languages_takes_a_list_and_shows_each_language(
    client: mtfleet.Client, http: httpx.Client, data_root: Path
) -> None:
    job = client.submit(
        input="small.jsonl",
        output="out/languages.{tgt_lang}.jsonl",
        fields=["text"],
        tgt_lang=["de", "fr", "hi"],
        **REVERSE,
    )

    final = job.wait(poll_s=0.2, timeout_s=60)

    assert final["state"] == "succeeded", final["error"]
    assert [target["tgt_lang"] for target in final["targets"]] == ["de", "fr", "hi"]
    for target in final["targets"]:
        assert (target["units_done"], target["units_total"]) == (6, 6)
        assert target["output"] == str(data_root / "out" / f"languages.{target['tgt_lang']}.jsonl")
        assert read_jsonl(Path(target["output"])) == reversed_rows(SMALL_ROWS, ["text"])
    assert list(job.manifest()["targets"]) == ["de", "fr", "hi"]
    # the lists name its languages, and its paths as the client wrote them
    (listed,) = [summary for summary in http.get("/v1/jobs").json() if summary["id"] == job.id]
    assert listed["tgt_lang"] == ["de", "fr", "hi"]
    assert listed["relative"] == {
        "input": "small.jsonl",
        "output": "out/languages.{tgt_lang}.jsonl",
        "model": "reverse",
    }
    as_comma_string = http.post(
        "/v1/jobs",
        json={**SMALL_JOB, "output": "out/commas.{tgt_lang}.jsonl", "tgt_lang": "de,de"},
    )
    assert as_comma_string.status_code == 422
    assert "de is given more than once" in as_comma_string.json()["error"]


def test_the_client_pauses_resumes_and_cancels(client: mtfleet.Client) -> None:
    job = client.submit(**big_job(output="out/client-steer.jsonl", job_id="client-steer"))
    # a job is planned before it runs, and only a running job can pause
    wait_for(lambda: job.status()["state"] == "running", timeout_s=60)

    assert job.pause()["state"] == "paused"
    assert job.resume()["state"] == "running"
    assert job.cancel()["state"] == "cancelled"
    assert job.wait(poll_s=0.2, timeout_s=10)["state"] == "cancelled"


def test_the_client_raises_the_servers_sentence_as_an_api_error(
    api: str, client: mtfleet.Client
) -> None:
    with pytest.raises(ApiError, match=r"^There is no job ghost\.$") as missing:
        client.job("ghost")
    with mtfleet.Client(api, "wrong-token") as intruder, pytest.raises(ApiError) as refused:
        intruder.jobs()
    with pytest.raises(ApiError, match=r"^Field beam: ") as invalid:
        client.submit(input="small.jsonl", output="out/x.jsonl", fields="text", beam=99, **REVERSE)
    with (
        mtfleet.Client("http://127.0.0.1:9", TOKEN) as nowhere,
        pytest.raises(ApiError) as unreachable,
    ):
        nowhere.jobs()

    assert (missing.value.status, refused.value.status, invalid.value.status) == (404, 401, 422)
    assert str(refused.value) == "The API token is wrong."
    assert unreachable.value.status is None
    assert str(unreachable.value).startswith("Cannot reach the mtfleet API at http://127.0.0.1:9")


# --- the admin console


@pytest.fixture(scope="module")
def mtfleet_cli(api: str) -> Callable[..., ConsoleRun]:
    def run(*args: str, token: str = TOKEN) -> ConsoleRun:
        return run_console(api, token, *args)

    return run


def test_console_submit_sends_protected_spans_a_glossary_and_the_flag_policy(
    mtfleet_cli: Any, data_root: Path, tmp_path: Path, client: mtfleet.Client
) -> None:
    glossary = tmp_path / "terms.tsv"
    glossary.write_text("hello\tbonjour\n")

    submitted = mtfleet_cli(
        "submit", "small.jsonl", "-m", "reverse", "-f", "text", "-o", "out/cli-terms.jsonl",
        "--engine", "reverse", "--job-id", "cli-terms", "--protect", r"Row number \d+",
        "--glossary", str(glossary), "--on-flag", "source",
    )  # fmt: skip

    assert submitted.exit_code == 0, submitted.output
    spec = client.job("cli-terms").status()["spec"]
    assert spec["protect"] == [r"Row number \d+"]
    assert spec["glossary"] == {"hello": "bonjour"}
    assert spec["on_flag"] == "source"
    missing = mtfleet_cli("submit", "small.jsonl", "-m", "reverse", "-f", "text", "-o",
                          "out/x.jsonl", "--glossary", str(tmp_path / "none.tsv"))  # fmt: skip
    assert missing.exit_code == 2 and "none.tsv" in missing.output


def test_console_submit_watch_jobs_and_status(mtfleet_cli: Any, data_root: Path) -> None:
    submitted = mtfleet_cli(
        "submit",
        "small.jsonl",
        "-m",
        "reverse",
        "-f",
        "text,note",
        "-o",
        "out/cli.jsonl",
        "--engine",
        "reverse",
        "--job-id",
        "cli",
        "--watch",
        "--poll",
        "0.2",
    )

    assert submitted.exit_code == 0, submitted.output
    assert submitted.stdout.startswith("cli\n")
    assert read_jsonl(data_root / "out" / "cli.jsonl") == reversed_rows(SMALL_ROWS, ["text"])
    listed = mtfleet_cli("jobs")
    assert listed.exit_code == 0 and "cli" in listed.stdout and "succeeded" in listed.stdout
    shown = mtfleet_cli("status", "cli")
    assert shown.exit_code == 0
    assert (
        "6/6 rows" in shown.stdout
        and "6 segments" in shown.stdout
        and "ETA 0:00:00" in shown.stdout
    )
    assert mtfleet_cli("status", "cli", "--watch").exit_code == 0


def test_console_submit_takes_several_languages_and_status_lists_them(
    mtfleet_cli: Any, data_root: Path
) -> None:
    submitted = mtfleet_cli(
        "submit", "small.jsonl", "-m", "reverse", "-f", "text", "-o", "out/cli.{tgt_lang}.jsonl",
        "--engine", "reverse", "--tgt-lang", "de,fr", "--job-id", "cli-languages", "--watch",
        "--poll", "0.2",
    )  # fmt: skip

    assert submitted.exit_code == 0, submitted.output
    for code in ("de", "fr"):
        translated = read_jsonl(data_root / "out" / f"cli.{code}.jsonl")
        assert translated == reversed_rows(SMALL_ROWS, ["text"])
    shown = mtfleet_cli("status", "cli-languages")
    assert shown.exit_code == 0
    assert re.search(r"de\s+6/6\s+6\s+\S*cli\.de\.jsonl", shown.stdout), shown.stdout
    assert re.search(r"fr\s+6/6\s+6\s+\S*cli\.fr\.jsonl", shown.stdout), shown.stdout


def test_console_pause_resume_and_cancel_a_running_job(
    mtfleet_cli: Any, client: mtfleet.Client
) -> None:
    job = client.submit(**big_job(output="out/cli-steer.jsonl", job_id="cli-steer"))
    wait_for(lambda: job.status()["state"] == "running", timeout_s=60)

    paused = mtfleet_cli("pause", "cli-steer")
    resumed = mtfleet_cli("resume", "cli-steer")
    cancelled = mtfleet_cli("cancel", "cli-steer")

    assert (paused.exit_code, paused.stdout) == (0, "cli-steer paused\n")
    assert (resumed.exit_code, resumed.stdout) == (0, "cli-steer running\n")
    assert (cancelled.exit_code, cancelled.stdout) == (0, "cli-steer cancelled\n")


def test_console_status_watch_follows_a_running_job_to_its_end(
    mtfleet_cli: Any, client: mtfleet.Client
) -> None:
    job = client.submit(**big_job(output="out/cli-watch.jsonl", job_id="cli-watch"))
    wait_for(lambda: job.status()["rows_done"] >= 1, timeout_s=60)
    canceller = threading.Timer(2.0, job.cancel)
    canceller.start()

    watched = mtfleet_cli("status", "cli-watch", "--watch", "--poll", "0.2")

    canceller.join()
    # a job that ends other than succeeded ends the command with 2, after the live view
    assert watched.exit_code == 2
    assert "/40 rows" in watched.stdout and "seg/s" in watched.stdout
    assert "translators" in watched.stdout and "shards done" in watched.stdout
    assert watched.stderr == "error: Job cli-watch cancelled.\n"


def test_console_nodes_lists_the_head_node(mtfleet_cli: Any) -> None:
    nodes = mtfleet_cli("nodes")

    assert nodes.exit_code == 0
    assert "(head)" in nodes.stdout and "alive" in nodes.stdout


def test_console_errors_are_one_sentence_with_exit_code_2(
    mtfleet_cli: Any, small_job: tuple[httpx.Response, dict[str, Any]]
) -> None:
    missing = mtfleet_cli("status", "ghost")
    no_failures = mtfleet_cli("retry", small_job[1]["id"])
    refused = mtfleet_cli("jobs", token="wrong-token")
    invalid = mtfleet_cli(
        "submit",
        "small.jsonl",
        "-m",
        "reverse",
        "-f",
        "text",
        "-o",
        "out/x.jsonl",
        "--engine",
        "reverse",
        "--beam",
        "99",
    )

    assert (missing.exit_code, missing.output) == (2, "error: There is no job ghost.\n")
    assert (refused.exit_code, refused.output) == (
        2,
        "error: MTFLEET_API_TOKEN is not this API's token.\n",
    )
    assert invalid.exit_code == 2
    assert invalid.output.startswith("error: --beam: Input should be less than or equal to 16")
    assert (no_failures.exit_code, no_failures.output) == (
        2,
        f"error: Job {small_job[1]['id']} has no failed rows to retry.\n",
    )
    assert "Traceback" not in missing.output + refused.output + invalid.output


def test_console_serve_without_a_token_prints_a_generated_one_that_the_api_takes(
    ray_address: str, data_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "MTFLEET_API_TOKEN"}
    options = ["--data-root", str(data_root), "--state-dir", str(tmp_path / "state")]
    with serve_process(port, *options, "--address", ray_address, env=env) as server:
        refused = httpx.get(f"http://127.0.0.1:{port}/v1/jobs")
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    (token,) = re.findall(r"MTFLEET_API_TOKEN is not set; this server's token is (\S+)", output)
    assert refused.status_code == 401 and len(token) >= 32


def test_console_serve_refuses_a_token_shorter_than_32_characters(data_root: Path) -> None:
    app = typer.Typer(pretty_exceptions_enable=False)
    console.register(app)

    refused = CliRunner().invoke(
        app, ["serve", "--data-root", str(data_root)], env={"MTFLEET_API_TOKEN": "short"}
    )

    assert refused.exit_code == 2
    assert refused.output.startswith(
        "error: MTFLEET_API_TOKEN must be at least 32 characters, not 5"
    )


def test_console_serve_without_a_token_listens_on_loopback_only(
    ray_address: str, data_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "MTFLEET_API_TOKEN"}
    options = ["--data-root", str(data_root), "--state-dir", str(tmp_path / "state")]
    options += ["--address", ray_address, "--insecure-no-auth", "--host", "0.0.0.0"]
    with serve_process(port, *options, env=env) as server:
        assert httpx.get(f"http://127.0.0.1:{port}/v1/jobs").status_code == 200
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert "without a token the API listens on 127.0.0.1 only, not 0.0.0.0" in output
    assert f"Uvicorn running on http://127.0.0.1:{port}" in output


@pytest.fixture
def ray_address(api: str) -> str:
    """The address of the module's Ray cluster, started by the API in this process."""
    return ray.get_runtime_context().gcs_address
