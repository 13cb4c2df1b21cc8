"""A job never destroys data: its output cannot be its input, the job store, another active job's
files or an unrelated existing file; each refusal is one sentence, exit 2, and nothing changes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mtfleet.cli.main import app
from mtfleet.cluster import submit_job
from mtfleet.spec import JobSpec
from mtfleet.store import JobState, JobStore

runner = CliRunner()


def translate(input: Path, output: Path | str, state_dir: Path, *extra: str) -> Any:
    return runner.invoke(
        app,
        ["translate", str(input), "--model", "reverse", "--engine", "reverse", "--fields",
         "text", "--output", str(output), "--state-dir", str(state_dir), *extra],
    )  # fmt: skip


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"Row {i}."}) + "\n" for i in range(6)))
    return path


def digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_refused(result: Any, *words: str) -> None:
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "Traceback" not in result.output
    for word in words:
        assert word in message, message


def test_the_input_cannot_be_its_own_output(rows: Path, tmp_path: Path) -> None:
    before = digest(rows)
    assert_refused(translate(rows, rows, tmp_path / "state"), "job's own input")
    assert digest(rows) == before


def test_a_symlink_or_a_hard_link_to_the_input_cannot_be_the_output(
    rows: Path, tmp_path: Path
) -> None:
    before = digest(rows)
    (tmp_path / "link.jsonl").symlink_to(rows)
    os.link(rows, tmp_path / "hard.jsonl")

    assert_refused(translate(rows, tmp_path / "link.jsonl", tmp_path / "state"), "own input")
    assert_refused(translate(rows, tmp_path / "hard.jsonl", tmp_path / "state"), "own input")
    assert digest(rows) == before


def test_the_job_store_and_the_state_dir_cannot_be_written(rows: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    JobStore.for_state_dir(state).close()
    store_before = digest(state / "jobs.db")

    assert_refused(translate(rows, state / "jobs.db", state), "state directory")
    relative = os.path.relpath(state / "sub" / ".." / "out.jsonl")
    assert_refused(translate(rows, relative, state), "state directory")
    assert digest(state / "jobs.db") == store_before
    assert JobStore.for_state_dir(state).jobs.all() == []


def test_an_active_jobs_input_or_output_cannot_be_another_jobs_output(
    rows: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "Another dataset."}) + "\n")
    first = JobSpec(input=str(other), output=str(tmp_path / "shared.jsonl"), model="reverse",
                    engine="reverse", fields=["text"])  # fmt: skip
    handle, created = submit_job(first, state_dir=state)
    assert created and JobStore(handle.store_url).jobs.get(handle.job_id).state is JobState.PLANNING

    assert_refused(translate(rows, tmp_path / "shared.jsonl", state), "active job", "output")
    assert_refused(translate(rows, other, state), "active job", "input")


def test_an_unrelated_existing_file_is_kept_unless_overwrite_is_given(
    rows: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text("earlier work\n")

    assert_refused(translate(rows, output, tmp_path / "state"), "--overwrite")
    assert output.read_text() == "earlier work\n"

    replaced = translate(rows, output, tmp_path / "state", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads(output.read_text().splitlines()[0]) == {"text": ".0 woR"}


def test_a_rerun_of_a_finished_job_needs_no_overwrite(rows: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    assert translate(rows, output, tmp_path / "state").exit_code == 0
    written = digest(output)

    again = translate(rows, output, tmp_path / "state")

    assert again.exit_code == 0, again.output
    assert digest(output) == written


def test_a_sharded_output_folder_cannot_lie_inside_its_input_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text(json.dumps({"text": "One."}) + "\n")

    assert_refused(translate(data, data / "out", tmp_path / "state"), "inside one another")
    assert sorted(p.name for p in data.iterdir()) == ["a.jsonl"]
