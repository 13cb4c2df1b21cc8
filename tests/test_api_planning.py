"""The API never reads a dataset whole: a submit answers with the job `planning`, its coordinator
plans it, and a plan the input refuses fails the job with its sentence."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mtfleet.api.server import ServerSettings
from mtfleet.testing.api import serving

TOKEN = "api-planning-token-51c2-0d9e4b7a36f18c"
ROWS = 200_000


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data_root")
    with open(root / "big.jsonl", "w", encoding="utf-8") as stream:
        for row in range(ROWS):
            stream.write(json.dumps({"id": row, "text": f"Row {row} is here."}) + "\n")
    # fine for the first 1,000 rows the submit checks, broken far past them
    with open(root / "late.jsonl", "w", encoding="utf-8") as stream:
        for row in range(5000):
            stream.write(json.dumps({"text": f"Row {row}."}) + "\n")
        stream.write('{"text": "broken\n')
    (root / "out").mkdir()
    return root


@pytest.fixture(scope="module")
def http(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = ServerSettings(
        data_root=data_root, token=TOKEN, state_dir=tmp_path_factory.mktemp("state")
    )
    with (
        serving(settings) as base,
        httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as client,
    ):
        yield client


def states_until_ended(http: httpx.Client, job_id: str) -> list[str]:
    """Every state the job was seen in, polled until it ended."""
    seen: list[str] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = http.get(f"/v1/jobs/{job_id}").json()["state"]
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("succeeded", "failed", "cancelled"):
            return seen
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not end")


def submit(http: httpx.Client, input: str, output: str) -> dict[str, Any]:
    response = http.post(
        "/v1/jobs",
        json={"input": input, "output": output, "fields": ["text"], "model": "reverse",
              "engine": "reverse"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def test_a_200k_row_submit_answers_planning_and_the_job_plans_runs_and_succeeds(
    http: httpx.Client, data_root: Path
) -> None:
    submitted = submit(http, "big.jsonl", "out/big.jsonl")

    assert submitted["state"] == "planning"
    assert submitted["rows_total"] == 0
    seen = states_until_ended(http, submitted["id"])
    assert seen[-1] == "succeeded", http.get(f"/v1/jobs/{submitted['id']}").json()
    assert "running" in seen
    assert http.get(f"/v1/jobs/{submitted['id']}").json()["rows_done"] == ROWS
    last = (data_root / "out" / "big.jsonl").read_text().splitlines()[-1]
    assert json.loads(last) == {"id": ROWS - 1, "text": f"Row {ROWS - 1} is here."[::-1]}


def test_a_plan_the_input_refuses_fails_the_job_with_its_sentence(
    http: httpx.Client, data_root: Path
) -> None:
    submitted = submit(http, "late.jsonl", "out/late.jsonl")

    assert states_until_ended(http, submitted["id"])[-1] == "failed"
    error = http.get(f"/v1/jobs/{submitted['id']}").json()["error"]
    assert "late.jsonl" in error and "line 5001" in error
    assert not (data_root / "out" / "late.jsonl").exists()
