"""A row that breaks the engine is found by bisection; the rest of the job is unharmed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtfleet.cluster import run_job
from mtfleet.spec import JobSpec

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


def spec(dataset: Path, on_error: str) -> JobSpec:
    return JobSpec(
        input=str(dataset),
        output=str(dataset.with_name("out.jsonl")),
        model="reverse",
        engine="reverse",
        fields=["text"],
        shard_tokens=60,
        max_attempts=2,
        on_error=on_error,
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


def test_with_on_error_fail_a_poison_row_fails_the_job_and_names_the_row(poisoned: Path) -> None:
    result = run_job(spec(poisoned, "fail"), state_dir=poisoned.parent / "state")
    assert result.state == "failed"
    assert f"row(s) {POISON_ROW}" in result.error
    assert not poisoned.with_name("out.jsonl").exists()
