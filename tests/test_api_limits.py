"""The API against careless and hostile clients (issue 17) and against destroying data (issue 16).

One server on loopback, over a local Ray cluster, with its state dir inside its data root as the
Kubernetes setup has it, serves the whole module. Each test asserts the answer and that the server,
the node and other jobs are unharmed afterwards. Jobs run the reverse engine, slowed by
MTFLEET_REVERSE_DELAY_S so that pause and cancel find them running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import ray
import schemathesis
import typer
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from mtfleet.api.server import ServerSettings
from mtfleet.cli import console
from mtfleet.cluster.coordinator import NAMESPACE, coordinator_name
from mtfleet.data import shards
from mtfleet.errors import ApiError, DatasetError
from mtfleet.store import JobState, JobStore
from mtfleet.testing.api import free_port, serve_process, serving
from mtfleet.testing.cluster import wait_for

TOKEN = "limits-test-token-5c2e9a-7f31d0b48e6a"
MAX_JOBS = 3
MAX_GPUS = 4
ROWS = [{"id": i, "text": f"Row number {i} says hello"} for i in range(4)]
# one shard per row at shard_tokens=16: a job of 30 shards at 0.2 s each runs for seconds
BIG_ROWS = [
    {"id": i, "text": f"Sentence {i:02d} is a plain line of words for the fleet"} for i in range(30)
]
REVERSE = {"model": "reverse", "engine": "reverse"}
T = TypeVar("T")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits_root")
    for name, rows in (("small.jsonl", ROWS), ("other.jsonl", ROWS[:2]), ("big.jsonl", BIG_ROWS)):
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    (root / "out").mkdir()
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def api(data_root: Path) -> Iterator[str]:
    """The API with its state dir inside the data root; it starts and stops a local Ray cluster."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MTFLEET_REVERSE_DELAY_S", "0.2")
        env.setenv("OMP_NUM_THREADS", "1")
        settings = ServerSettings(
            data_root=data_root,
            token=TOKEN,
            state_dir=data_root / "state",
            max_jobs=MAX_JOBS,
            max_gpus=MAX_GPUS,
        )
        with serving(settings) as url:
            yield url


@pytest.fixture(scope="module")
def http(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        yield c


@pytest.fixture(autouse=True)
def no_job_left_active(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test leaves no active job behind, so the next finds the --max-jobs room it needs."""
    yield
    if "http" not in request.fixturenames:
        return
    http: httpx.Client = request.getfixturevalue("http")
    for job in http.get("/v1/jobs").json():
        if job["state"] in ("planning", "queued", "running", "paused"):
            http.post(f"/v1/jobs/{job['id']}/cancel")


def spec(**change: Any) -> dict[str, Any]:
    return {
        "input": "small.jsonl",
        "output": "out/x.jsonl",
        "fields": ["text"],
        **REVERSE,
        **change,
    }


def view(http: httpx.Client, job_id: str) -> dict[str, Any]:
    return http.get(f"/v1/jobs/{job_id}").json()


def run_to_end(http: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=job)
    assert response.status_code in (200, 201), response.text
    job_id = response.json()["id"]
    wait_for(lambda: view(http, job_id)["state"] in ("succeeded", "failed", "cancelled"))
    return view(http, job_id)


def running(http: httpx.Client, job_id: str, output: str) -> str:
    """Submits a big job and waits until it runs (planned: it can be paused)."""
    response = http.post(
        "/v1/jobs",
        json={
            "input": "big.jsonl",
            "output": output,
            "fields": ["text"],
            "shard_tokens": 16,
            "job_id": job_id,
            # long enough to be paused: not taken from the memory earlier jobs filled
            "memory": False,
            **REVERSE,
        },
    )
    assert response.status_code == 201, response.text
    wait_for(lambda: view(http, job_id)["state"] == "running", timeout_s=60)
    return job_id


def assert_unharmed(http: httpx.Client, name: str) -> None:
    """The server answers, its node is alive, and a new job runs to its end."""
    health = http.get("/healthz")
    assert health.status_code == 200 and health.json()["nodes_alive"] == 1, health.text
    final = run_to_end(http, spec(output=f"out/after-{name}.jsonl", job_id=f"after-{name}"))
    assert final["state"] == "succeeded", final["error"]


def error_of(response: httpx.Response) -> str:
    return response.json()["error"]


def raw_request(api: str, head: str, body_parts: list[bytes]) -> bytes:
    """Sends a request head and body parts over a socket, and reads the answer as it comes: the
    server may answer before the body is complete, and close the connection."""
    port = int(api.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(head.encode())
        try:
            for part in body_parts:
                connection.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest: the point
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.rstrip().endswith(b"}"):
                break
    return answer


def post_big(api: str, job: dict[str, Any]) -> bytes:
    """POSTs a body far over the limit the way a client that keeps sending does."""
    body = json.dumps(job).encode()
    head = (
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return raw_request(api, head, [body[i : i + 65536] for i in range(0, len(body), 65536)])


# --- high: threads, a dead node, hung calls, SIGTERM


def test_threads_beyond_the_largest_node_are_refused_and_the_node_stays_alive(
    http: httpx.Client,
) -> None:
    absurd = http.post("/v1/jobs", json=spec(threads=1_000_000))
    too_many = http.post("/v1/jobs", json=spec(threads=64))

    assert absurd.status_code == 422
    assert error_of(absurd) == "Field threads: Input should be less than or equal to 1024."
    assert too_many.status_code == 400
    assert error_of(too_many) == (
        f"Field threads: 64 is more than the {os.cpu_count()} CPUs of the cluster's largest node."
    )
    assert_unharmed(http, "threads")


def test_healthz_answers_503_when_no_node_is_alive_or_ray_does_not_answer(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeID": "dead", "Alive": False}])
    dead = http.get("/healthz")
    hang = threading.Event()
    monkeypatch.setattr(ray, "nodes", lambda: hang.wait() and [])
    try:
        silent = http.get("/healthz")
        metrics = http.get("/metrics")
    finally:
        hang.set()
    monkeypatch.undo()

    assert (dead.status_code, error_of(dead)) == (503, "No node of the Ray cluster is alive.")
    assert (silent.status_code, error_of(silent)) == (
        503,
        "The Ray cluster did not answer within 5 s.",
    )
    # the store's numbers are still scraped
    assert metrics.status_code == 200 and "mtfleet_jobs" in metrics.text
    wait_for(lambda: http.get("/healthz").status_code == 200)


def test_sigterm_stops_the_server_promptly_while_it_follows_a_job(
    api: str, data_root: Path, tmp_path: Path
) -> None:
    port = free_port()
    options = ["--data-root", str(data_root), "--state-dir", str(tmp_path / "state")]
    options += ["--address", ray.get_runtime_context().gcs_address]
    job = {"input": "big.jsonl", "output": "out/sigterm.jsonl", "fields": ["text"],
           "shard_tokens": 16, "job_id": "sigterm", **REVERSE}  # fmt: skip
    with serve_process(port, *options, env={**os.environ, "MTFLEET_API_TOKEN": TOKEN}) as server:
        submitted = httpx.post(
            f"http://127.0.0.1:{port}/v1/jobs",
            json=job,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        assert submitted.status_code == 201, submitted.text

        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)

    # uvicorn ends by raising the signal again; what matters is that it went through shutdown
    assert "Application shutdown complete." in output and "Finished server process" in output
    # the job's coordinator, detached, goes on without the server: stop it for the next tests
    ray.kill(ray.get_actor(coordinator_name("sigterm"), namespace=NAMESPACE), no_restart=True)


# --- high: bodies, read before the token was checked


def test_a_body_without_the_token_is_refused_before_it_is_read(
    api: str, http: httpx.Client
) -> None:
    head = (
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 104857600\r\n\r\n"
    )

    answer = raw_request(api, head, [b"x" * 65536])

    assert answer.startswith(b"HTTP/1.1 401 ")
    assert b"This call needs the header 'Authorization: Bearer <MTFLEET_API_TOKEN>'." in answer
    assert_unharmed(http, "unread-body")


def test_a_body_over_the_limit_is_refused_with_413_by_its_length_or_by_its_bytes(
    api: str, http: httpx.Client
) -> None:
    declared = raw_request(
        api,
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Length: 104857600\r\n\r\n",
        [b"x" * 65536],
    )
    chunk = b"x" * 65536
    streamed = raw_request(
        api,
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n",
        [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 40,
    )

    limit = b"larger than this server's limit of 1048576 bytes (mtfleet serve --max-body-bytes)."
    assert declared.startswith(b"HTTP/1.1 413 ") and limit in declared
    assert streamed.startswith(b"HTTP/1.1 413 ") and limit in streamed
    assert_unharmed(http, "big-body")


# --- high: the output's folder, checked at submit and written much later


def test_the_job_store_keeps_the_data_root_so_the_output_is_confined_when_written(
    http: httpx.Client, data_root: Path
) -> None:
    job_id = http.post("/v1/jobs", json=spec(output="out/rooted.jsonl", job_id="rooted")).json()[
        "id"
    ]

    stored = JobStore(f"sqlite:///{data_root / 'state' / 'jobs.db'}").jobs.get(job_id).spec

    assert stored["data_root"] == str(data_root.resolve())
    assert "data_root" not in view(http, job_id)["spec"]
    assert "input_key" in stored and "input_key" not in view(http, job_id)["spec"]


def test_an_output_folder_swapped_for_a_symlink_while_paused_is_not_written_outside(
    http: httpx.Client, data_root: Path
) -> None:
    (data_root / "sub2").mkdir()
    job_id = running(http, "swapped", "sub2/out.jsonl")
    assert http.post(f"/v1/jobs/{job_id}/pause").json()["state"] == "paused"
    outside = data_root.parent / f"{data_root.name}-outside"
    (data_root / "sub2").rename(data_root / "sub2-before")
    (data_root / "sub2").symlink_to(outside)

    http.post(f"/v1/jobs/{job_id}/resume")
    wait_for(lambda: view(http, job_id)["state"] in ("succeeded", "failed"), timeout_s=120)

    final = view(http, job_id)
    assert not (outside / "out.jsonl").exists()
    assert final["state"] == "failed" and final["error"].startswith("Cannot write ")
    assert str(data_root) not in final["error"]


# --- medium: bad text


@pytest.mark.parametrize(
    ("field", "raw", "status", "says"),
    [
        # the JSON parser refuses a lone surrogate, before any of our code runs
        ("output", '"o\\udc80.json"', 422, "Field output: Input should be a valid string"),
        ("fields", '["te\\udcffxt"]', 422, "Field fields.0: Input should be a valid string"),
        ("output", '"out/a\\u0000b.jsonl"', 400, "Field output: holds the character U+0000"),
        ("input", '"small\\njsonl"', 400, "Field input: holds the character U+000A"),
        ("src_lang", '"en\\u001b"', 400, "Field src_lang: holds the character U+001B"),
    ],
)
def test_bad_text_is_refused_and_nothing_is_stored(
    http: httpx.Client, field: str, raw: str, status: int, says: str
) -> None:
    others = {key: value for key, value in spec(job_id="bad-text").items() if key != field}
    body = json.dumps(others)[:-1] + f', "{field}": {raw}}}'

    response = http.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == status, response.text
    assert error_of(response).startswith(says)
    assert http.get("/v1/jobs/bad-text").status_code == 404
    assert http.get("/v1/jobs").status_code == 200


def test_an_over_long_path_is_refused_before_anything_is_stored(
    api: str, http: httpx.Client
) -> None:
    long = http.post("/v1/jobs", json=spec(output="o" * 5000, job_id="long-path"))
    huge = post_big(api, spec(output="o" * 10_000_000, job_id="long-path"))

    assert long.status_code == 422
    assert error_of(long) == "Field output: String should have at most 4096 characters."
    assert huge.startswith(b"HTTP/1.1 413 ")
    assert http.get("/v1/jobs/long-path").status_code == 404


def test_a_job_that_cannot_be_read_back_never_makes_the_job_list_fail(
    http: httpx.Client, data_root: Path
) -> None:
    store = JobStore(f"sqlite:///{data_root / 'state' / 'jobs.db'}")
    store.jobs.create_or_find("unreadable", {"input": "o\udc80.json", "model": "reverse"}, None)
    store.jobs.set_state("unreadable", JobState.CANCELLED)

    listed = http.get("/v1/jobs")
    one = http.get("/v1/jobs/unreadable")

    assert listed.status_code == 200
    (unreadable,) = [job for job in listed.json() if job["id"] == "unreadable"]
    assert (unreadable["input"], unreadable["output"]) == ("o\\udc80.json", "")
    assert one.status_code == 200 and one.json()["state"] == "cancelled"


# --- medium: paused jobs and active jobs cost nothing, steering answers consistently


def test_paused_jobs_release_their_translators_and_another_job_runs(http: httpx.Client) -> None:
    paused = []
    for i in range(2):
        # each is paused as soon as it runs: the first, left running while the second waited
        # to be planned, could end before its pause on a slow host
        paused.append(running(http, f"paused-{i}", f"out/paused-{i}.jsonl"))
        assert http.post(f"/v1/jobs/{paused[-1]}/pause").json()["state"] == "paused"

    for job_id in paused:
        wait_for(lambda job_id=job_id: not view(http, job_id)["translators"], timeout_s=30)
    # two paused jobs held both CPUs of the node; now a third job gets them
    assert_unharmed(http, "paused")
    states = [(view(http, job_id)["state"], view(http, job_id)["error"]) for job_id in paused]
    assert states == [("paused", None), ("paused", None)]
    for job_id in paused:
        assert http.post(f"/v1/jobs/{job_id}/resume").json()["state"] == "running"
    for job_id in paused:
        wait_for(lambda job_id=job_id: view(http, job_id)["state"] == "succeeded", timeout_s=120)


def test_more_active_jobs_than_max_jobs_are_refused_with_429(http: httpx.Client) -> None:
    active = []
    for i in range(MAX_JOBS):
        # each paused as soon as it runs: a paused job stays active, even once its shards land
        active.append(running(http, f"active-{i}", f"out/active-{i}.jsonl"))
        assert http.post(f"/v1/jobs/{active[-1]}/pause").json()["state"] == "paused"

    refused = http.post("/v1/jobs", json=spec(output="out/one-more.jsonl", job_id="one-more"))
    again = http.post(
        "/v1/jobs",
        json={
            "input": "big.jsonl",
            "output": "out/active-0.jsonl",
            "fields": ["text"],
            "shard_tokens": 16,
            "job_id": "active-0",
            "memory": False,
            **REVERSE,
        },
    )

    assert refused.status_code == 429
    assert error_of(refused) == (
        f"This server runs at most {MAX_JOBS} active jobs (mtfleet serve --max-jobs) and has "
        f"{MAX_JOBS}; try again once one has ended, or cancel one."
    )
    assert http.get("/v1/jobs/one-more").status_code == 404
    # a job already active is found again, not refused
    assert again.status_code == 200 and again.json()["id"] == "active-0"
    for job_id in active:
        assert http.post(f"/v1/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    assert_unharmed(http, "max-jobs")


def test_racing_steering_calls_all_answer_the_state_the_job_is_in(http: httpx.Client) -> None:
    job_id = running(http, "raced", "out/raced.jsonl")

    def race(verb: str) -> list[httpx.Response]:
        start = threading.Barrier(4)
        answers: list[httpx.Response] = []

        def call() -> None:
            start.wait()
            answers.append(http.post(f"/v1/jobs/{job_id}/{verb}"))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return answers

    pauses = race("pause")
    cancels = race("cancel")

    assert [(r.status_code, r.json()["state"]) for r in pauses] == [(200, "paused")] * 4
    assert [(r.status_code, r.json()["state"]) for r in cancels] == [(200, "cancelled")] * 4
    assert view(http, job_id)["state"] == "cancelled"
    resumed = http.post(f"/v1/jobs/{job_id}/resume")
    assert resumed.status_code == 409
    assert error_of(resumed) == (
        f"Job {job_id} is cancelled; only a queued, running or paused job can resume."
    )


# --- medium: a hub id blocks no request


def test_a_hub_model_missing_locally_is_refused_at_once_without_the_network(
    http: httpx.Client,
) -> None:
    response = http.post(
        "/v1/jobs", json=spec(model="no-such-org/no-such-model-5c2e9a", engine="hf")
    )

    assert response.status_code == 400
    assert error_of(response).startswith(
        "Model 'no-such-org/no-such-model-5c2e9a' is not found locally: the API checks hub "
        "models without the network"
    )
    assert_unharmed(http, "hub")


# --- medium: /metrics


def test_metrics_labels_are_bounded_and_job_ids_need_the_token(
    api: str, http: httpx.Client
) -> None:
    job_id = running(http, "scraped", "out/scraped.jsonl")
    http.post(f"/v1/jobs/{job_id}/pause")
    httpx.request("BREW", f"{api}/healthz")
    httpx.get(f"{api}/no/such/route-5c2e9a")

    public = httpx.get(f"{api}/metrics").text
    private = httpx.get(f"{api}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text

    requests = [
        sample.labels
        for family in text_string_to_metric_families(public)
        if family.name == "mtfleet_api_requests"
        for sample in family.samples
        if sample.name == "mtfleet_api_requests_total"
    ]
    assert {"method": "other", "route": "/healthz", "status": "405"} in requests
    assert {"method": "GET", "route": "unmatched", "status": "404"} in requests
    assert not any(
        "BREW" in labels.values() or "route-5c2e9a" in labels["route"] for labels in requests
    )
    assert job_id not in public and "mtfleet_job_rows_done" not in public
    assert f'mtfleet_job_rows_done{{job_id="{job_id}"}}' in private


# --- medium: lengths, and what a 422 says back


def test_long_strings_and_lists_are_refused_with_422_without_echoing_them(
    api: str, http: httpx.Client
) -> None:
    language = http.post("/v1/jobs", json=spec(src_lang="x" * 10_000))
    fields = http.post("/v1/jobs", json=spec(fields=[f"f{i}" for i in range(100_000)]))
    field = http.post("/v1/jobs", json=spec(fields=["y" * 2000]))
    huge = post_big(api, spec(src_lang="x" * 10_000_000))

    assert language.status_code == 422
    assert error_of(language) == "Field src_lang: String should have at most 32 characters."
    assert "xxxxxxxx" not in language.text and len(language.text) < 1000
    assert fields.status_code == 422
    assert error_of(fields).startswith("Field fields: List should have at most 256 items")
    assert "f99999" not in fields.text and len(fields.text) < 1000
    assert field.status_code == 422
    assert error_of(field) == "Field fields.0: String should have at most 1024 characters."
    assert huge.startswith(b"HTTP/1.1 413 ")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lease_ttl_s": 1e-300}, "Field lease_ttl_s: Input should be greater than or equal to 5."),
        (
            {"max_length_factor": 1e308},
            "Field max_length_factor: Input should be less than or equal to 16.",
        ),
        (
            {"max_length_offset": 10**9},
            "Field max_length_offset: Input should be less than or equal to 1024.",
        ),
        ({"gpus": 1000}, "Field gpus: Input should be less than or equal to 64."),
    ],
)
def test_settings_that_could_hurt_are_bounded(
    http: httpx.Client, change: dict[str, Any], message: str
) -> None:
    response = http.post("/v1/jobs", json=spec(**change))

    assert response.status_code == 422
    assert error_of(response) == message


def test_gpus_beyond_the_servers_max_gpus_are_refused(http: httpx.Client) -> None:
    response = http.post("/v1/jobs", json=spec(gpus=MAX_GPUS + 1))

    assert response.status_code == 400
    assert error_of(response) == (
        f"Field gpus: {MAX_GPUS + 1} is more than this server's limit of {MAX_GPUS} "
        "(mtfleet serve --max-gpus)."
    )


# --- low: what errors tell


def test_errors_name_paths_relative_to_the_data_root_and_never_a_symlinks_target(
    http: httpx.Client, data_root: Path
) -> None:
    missing = http.post("/v1/jobs", json=spec(input="nowhere.jsonl"))
    escaped = http.post("/v1/jobs", json=spec(output="escape/out.jsonl"))

    assert missing.status_code == escaped.status_code == 400
    assert "nowhere.jsonl" in error_of(missing)
    assert error_of(escaped) == (
        "Field output: escape/out.jsonl leads through a symlink outside the data root."
    )
    for response in (missing, escaped):
        assert str(data_root) not in response.text and "outside/" not in response.text


def test_the_model_field_tells_nothing_of_the_servers_working_directory(
    http: httpx.Client,
) -> None:
    # "src" is a folder of the server's working directory (this checkout), "srcx" is none
    present = http.post("/v1/jobs", json=spec(model="src", engine="hf"))
    absent = http.post("/v1/jobs", json=spec(model="srcx", engine="hf"))

    assert present.status_code == absent.status_code == 400
    assert error_of(present).replace("'src'", "'srcx'") == error_of(absent)


# --- issue 16: a job never destroys data


@pytest.fixture(scope="module")
def links(data_root: Path) -> Path:
    (data_root / "alias.jsonl").symlink_to(data_root / "small.jsonl")
    (data_root / "twin.jsonl").write_bytes((data_root / "small.jsonl").read_bytes())
    os.link(data_root / "twin.jsonl", data_root / "hard.jsonl")
    return data_root


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"output": "small.jsonl"}, "Field output: small.jsonl is the job's own input"),
        ({"output": "alias.jsonl"}, "Field output: small.jsonl is the job's own input"),
        # an input with other hard links is refused before its outputs are looked at
        (
            {"input": "twin.jsonl", "output": "hard.jsonl"},
            "Field input: twin.jsonl has other hard links",
        ),
        (
            {"output": "out/../state/x.jsonl"},
            "Field output: out/../state/x.jsonl lies in the server's state directory",
        ),
        (
            {"output": "state/jobs.db"},
            "Field output: state/jobs.db lies in the server's state directory",
        ),
        (
            {"input": "state/jobs.db"},
            "Field input: state/jobs.db lies in the server's state directory",
        ),
        ({"model": "state"}, "Field model: state lies in the server's state directory"),
    ],
)
def test_an_output_that_would_destroy_data_is_refused_with_400(
    http: httpx.Client, links: Path, change: dict[str, Any], says: str
) -> None:
    response = http.post("/v1/jobs", json=spec(**change))

    assert response.status_code == 400, response.text
    assert error_of(response).startswith(says)
    assert (links / "small.jsonl").read_text().count("\n") == len(ROWS)


def test_two_jobs_cannot_share_an_output_while_the_first_is_active(http: httpx.Client) -> None:
    first = running(http, "first-writer", "out/shared.jsonl")
    http.post(f"/v1/jobs/{first}/pause")

    second = http.post("/v1/jobs", json=spec(input="other.jsonl", output="out/shared.jsonl"))

    assert second.status_code == 400
    assert error_of(second) == (
        f"Field output: out/shared.jsonl is the output of active job {first}; "
        "choose another output path."
    )


def test_an_existing_unrelated_output_needs_overwrite(http: httpx.Client, data_root: Path) -> None:
    (data_root / "out" / "existing.jsonl").write_text("precious\n")

    refused = http.post("/v1/jobs", json=spec(output="out/existing.jsonl"))
    assert refused.status_code == 400
    assert error_of(refused).startswith(
        "Field output: out/existing.jsonl exists and is not this job's earlier output; "
        "set overwrite to true to replace it."
    )
    assert (data_root / "out" / "existing.jsonl").read_text() == "precious\n"

    final = run_to_end(http, spec(output="out/existing.jsonl", overwrite=True))
    assert final["state"] == "succeeded", final["error"]
    assert "precious" not in (data_root / "out" / "existing.jsonl").read_text()


def test_a_finished_job_submitted_again_needs_no_overwrite(
    http: httpx.Client, data_root: Path
) -> None:
    job = spec(output="out/rerun.jsonl", job_id="rerun", keep_work=True)
    assert run_to_end(http, job)["state"] == "succeeded"
    written = (data_root / "out" / "rerun.jsonl").read_text()

    again = http.post("/v1/jobs", json=job)
    (data_root / "out" / "rerun.jsonl").unlink()
    missing = http.post("/v1/jobs", json=job)

    assert (again.status_code, again.json()["state"]) == (200, "succeeded")
    # its output went missing: it is assembled again from the parts it kept
    assert (missing.status_code, missing.json()["state"]) == (200, "succeeded")
    assert (data_root / "out" / "rerun.jsonl").read_text() == written


# --- issue 11: the API fuzzed from its own OpenAPI document

FUZZ_EXAMPLES = 40
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.mark.parametrize("token", [TOKEN, None], ids=["with-token", "without-token"])
def test_fuzzed_calls_to_every_endpoint_get_no_500_and_match_the_schema(
    api: str, http: httpx.Client, token: str | None
) -> None:
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cases: Counter[str] = Counter()
    for operation in schema.get_all_operations():
        endpoint = operation.ok()

        @given(case=endpoint.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            cases[f"{case.method} {case.path}"] += 1
            if token is None and case.path.startswith("/v1"):
                assert response.status_code == 401

        call()

    print(f"schemathesis {'with' if token else 'without'} the token: {sum(cases.values())} cases")
    assert len(cases) == sum(len(methods) for methods in schema.raw_schema["paths"].values())
    assert_unharmed(http, f"fuzzed-{'with' if token else 'without'}")


# --- issue 25: patterns, templates, swapped folders, loops. Each attack runs in a thread while
# /healthz is asked; a fresh job runs to its end afterwards.


def attacked(api: str, attack: Callable[[], T]) -> T:
    """Runs `attack` in a thread and asks /healthz while it is in flight: the server answers (200)
    however long the attack would take; returns what the attack returned."""
    outcome: list[T] = []
    started = threading.Event()

    def run() -> None:
        started.set()
        outcome.append(attack())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait()
    health = httpx.get(f"{api}/healthz", timeout=60)
    thread.join()
    assert health.status_code == 200, health.text
    return outcome[0]


def test_a_backtracking_protect_pattern_runs_in_linear_time_and_its_job_succeeds(
    api: str, http: httpx.Client, data_root: Path
) -> None:
    (data_root / "nodigits.jsonl").write_text(
        "".join(json.dumps({"text": "words without any digit " * 40}) + "\n" for _ in range(3))
    )
    job = spec(
        input="nodigits.jsonl",
        output="out/backtrack.jsonl",
        job_id="backtrack",
        protect=[r"(\D+)+\d"],
    )

    final = attacked(api, lambda: run_to_end(http, job))

    assert final["state"] == "succeeded", final["error"]
    assert_unharmed(http, "backtrack")


@pytest.mark.parametrize(
    ("protect", "says"),
    [
        (["ok-\\d+", "a(?=b)"], "Field protect: the pattern 'a(?=b)' is not one RE2"),
        (["(a)\\1"], "Field protect: the pattern '(a)\\\\1' is not one RE2 runs"),
        (["(" * 1000 + "a" + ")" * 1000], "Field protect: the pattern '(((("),
        ([f"p{i}" for i in range(65)], "Field protect: List should have at most 64 items"),
    ],
    ids=["lookahead", "backreference", "nested-1000-deep", "too-many"],
)
def test_a_pattern_re2_refuses_is_a_json_422_naming_it(
    http: httpx.Client, protect: list[str], says: str
) -> None:
    response = http.post("/v1/jobs", json=spec(protect=protect, job_id="refused-pattern"))

    assert response.status_code == 422, response.text
    assert error_of(response).startswith(says)
    assert http.get("/v1/jobs/refused-pattern").status_code == 404


def test_huge_pattern_bodies_are_refused_while_healthz_answers(
    api: str, http: httpx.Client
) -> None:
    alternation = "|".join(f"branch{i:06d}" for i in range(30_000))
    job = spec(protect=[alternation] * 2, job_id="huge-pattern")

    def five_at_once() -> list[httpx.Response]:
        with ThreadPoolExecutor(5) as pool:
            return list(pool.map(lambda _: http.post("/v1/jobs", json=job), range(5)))

    answers = attacked(api, five_at_once)

    assert [answer.status_code for answer in answers] == [422] * 5
    assert all("is longer than 1024 characters" in error_of(answer) for answer in answers)
    assert_unharmed(http, "huge-pattern")


@pytest.mark.parametrize(
    ("field", "raw"),
    [("protect", '["ab\\ud800c"]'), ("glossary", '{"Ray\\udc80": "Ray"}')],
)
def test_lone_surrogates_in_patterns_and_terms_are_refused_with_422(
    http: httpx.Client, field: str, raw: str
) -> None:
    body = json.dumps(spec(job_id="surrogate"))[:-1] + f', "{field}": {raw}}}'

    response = http.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    assert error_of(response).startswith(f"Field {field}")
    assert http.get("/v1/jobs/surrogate").status_code == 404


def test_a_target_that_is_no_language_code_is_refused_before_any_folder_is_made(
    api: str, http: httpx.Client, data_root: Path
) -> None:
    outside = data_root.parent / f"{data_root.name}-by-template"
    job = spec(output="out/{tgt_lang}/sub/x.jsonl", tgt_lang=f"../../{outside.name}/x")

    response = attacked(api, lambda: http.post("/v1/jobs", json=job))

    assert response.status_code == 422, response.text
    assert error_of(response).startswith(
        f"Field tgt_lang: '../../{outside.name}/x' is not a language code"
    )
    assert not outside.exists()
    assert_unharmed(http, "template")


def test_an_output_folder_swapped_for_a_symlink_into_the_state_dir_writes_nothing_there(
    api: str, http: httpx.Client, data_root: Path
) -> None:
    victim_spec = spec(output="out/victim.jsonl", job_id="victim", keep_work=True)
    assert run_to_end(http, victim_spec)["state"] == "succeeded"
    victim = data_root / "state" / "jobs" / "victim"
    before = {file.name: file.read_bytes() for file in victim.iterdir() if file.is_file()}
    (data_root / "sub3").mkdir()
    job_id = running(http, "swapped-into-state", "sub3/units.jsonl")
    assert http.post(f"/v1/jobs/{job_id}/pause").json()["state"] == "paused"
    (data_root / "sub3").rename(data_root / "sub3-before")
    (data_root / "sub3").symlink_to(victim)

    attacked(api, lambda: http.post(f"/v1/jobs/{job_id}/resume"))
    wait_for(lambda: view(http, job_id)["state"] in ("succeeded", "failed"), timeout_s=120)

    final = view(http, job_id)
    assert final["state"] == "failed"
    assert final["error"].startswith("Cannot write sub3/units.jsonl")
    assert "sub3 is a symlink or a file, not a folder" in final["error"]
    assert {file.name: file.read_bytes() for file in victim.iterdir() if file.is_file()} == before
    assert http.get("/v1/jobs/victim/sample", params={"row_start": 0}).status_code == 200
    assert_unharmed(http, "swapped-into-state")


@pytest.mark.parametrize("output", ["out/jobs.db", "out/jobs.db-wal", "jobs.db/x.jsonl"])
def test_an_output_named_like_the_job_store_is_refused(http: httpx.Client, output: str) -> None:
    response = http.post("/v1/jobs", json=spec(output=output, job_id="store-named"))

    assert response.status_code == 400, response.text
    assert "is the name of the job store's file; choose another" in error_of(response)
    assert http.get("/v1/jobs/store-named").status_code == 404


def test_a_glob_through_self_symlinks_ends_and_its_job_succeeds(
    api: str, http: httpx.Client, data_root: Path
) -> None:
    loop = data_root / "gl" / "loop"
    loop.mkdir(parents=True)
    (loop / "self").symlink_to(".")
    (loop / "again").symlink_to(".")
    (loop / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    job = spec(input="gl/loop/**/*.jsonl", output="out/loop", job_id="glob-loop")

    final = attacked(api, lambda: run_to_end(http, job))

    assert final["state"] == "succeeded", final["error"]
    assert sorted(path.name for path in (data_root / "out" / "loop").rglob("*.jsonl")) == [
        "rows.jsonl"
    ]
    assert_unharmed(http, "glob-loop")


def test_a_dataset_of_more_files_than_the_bound_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shards, "MAX_FILES", 3)
    for number in range(4):
        (tmp_path / f"part{number}.jsonl").write_text("{}\n")

    for named in (tmp_path, tmp_path / "*.jsonl"):
        with pytest.raises(DatasetError, match=r"names more than 3 files and folders; split it"):
            shards.dataset_files(named)


def test_an_input_with_other_hard_links_is_refused(
    api: str, http: httpx.Client, data_root: Path
) -> None:
    secret = data_root.parent / f"{data_root.name}-outside" / "secret.jsonl"
    secret.write_text(json.dumps({"text": "a secret outside the root"}) + "\n")
    os.link(secret, data_root / "linked.jsonl")
    job = spec(input="linked.jsonl", output="out/linked.jsonl", job_id="linked")

    response = attacked(api, lambda: http.post("/v1/jobs", json=job))

    assert response.status_code == 400, response.text
    assert error_of(response) == (
        "Field input: linked.jsonl has other hard links, which may be files outside the data "
        "root; copy it, or start the server with mtfleet serve --allow-hardlinks."
    )
    assert http.get("/v1/jobs/linked").status_code == 404


def test_an_unreadable_active_job_never_makes_a_submission_fail(
    api: str, http: httpx.Client, data_root: Path
) -> None:
    store = JobStore(f"sqlite:///{data_root / 'state' / 'jobs.db'}")
    store.jobs.create_or_find(
        "0-unreadable-active", {"input": "gone.json", "model": "reverse"}, None
    )
    try:
        final = attacked(
            api, lambda: run_to_end(http, spec(output="out/beside.jsonl", job_id="beside"))
        )
        assert final["state"] == "succeeded", final["error"]
        assert http.get("/v1/jobs").status_code == 200
    finally:
        store.jobs.set_state("0-unreadable-active", JobState.CANCELLED)


@pytest.mark.parametrize(
    ("field", "limit"),
    [("max_batch_tokens", 1 << 20), ("shard_tokens", 1 << 24), ("max_attempts", 100)],
)
def test_every_numeric_setting_has_an_upper_bound(
    http: httpx.Client, field: str, limit: int
) -> None:
    response = http.post("/v1/jobs", json=spec(**{field: 10**23}))

    assert response.status_code == 422
    assert error_of(response) == f"Field {field}: Input should be less than or equal to {limit}."


def test_swagger_ui_is_served_by_the_server_itself(api: str) -> None:
    page = httpx.get(f"{api}/docs")
    script = httpx.get(f"{api}/docs/assets/swagger-ui-bundle.js")

    assert page.status_code == 200
    assert 'src="/docs/assets/swagger-ui-bundle.js"' in page.text
    assert "https://" not in page.text.replace("https://fastapi.tiangolo.com", "")
    assert script.status_code == 200 and len(script.content) > 100_000


def test_a_token_shorter_than_32_characters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="MTFLEET_API_TOKEN must be at least 32 characters, not 31"):
        ServerSettings(data_root=tmp_path, token="x" * 31).check()


def test_serve_takes_the_token_out_of_the_environment_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtfleet.api import server

    seen: list[bool] = []
    monkeypatch.setattr(
        server, "serve", lambda *_, **__: seen.append("MTFLEET_API_TOKEN" in os.environ)
    )
    app = typer.Typer(pretty_exceptions_enable=False)
    console.register(app)

    result = CliRunner().invoke(
        app, ["serve", "--data-root", str(tmp_path)], env={"MTFLEET_API_TOKEN": TOKEN}
    )

    assert result.exit_code == 0, result.output
    assert seen == [False]
