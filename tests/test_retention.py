"""What a job leaves on disk, and when it goes: a succeeded job's units and parts are removed,
finished jobs are deleted on demand or by age, and a job's logs are read a page at a time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtfleet.api.history import LOG_PAGE_BYTES, log_files, read_logs
from mtfleet.api.jobs import JobService
from mtfleet.cli.main import app
from mtfleet.cluster.job import forget_unassemblable, handle_for, retry_failed
from mtfleet.cluster.retention import (
    delete_job,
    format_bytes,
    parse_age,
    parse_states,
    parts_missing,
    prune_jobs,
    retire,
    work_bytes,
    work_dir_of,
)
from mtfleet.errors import ApiError, JobError
from mtfleet.spec import JobSpec
from mtfleet.store import JobState, JobStore, ShardPlan
from mtfleet.testing.cluster import wait_for

NOW = 1_700_000_000.0
SPEC = {"input": "data.json", "output": "out.json", "model": "opus-mt", "fields": ["text"]}


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> Iterator[JobStore]:
    with JobStore.for_state_dir(state_dir, clock=lambda: NOW) as opened:
        yield opened


def finished_job(
    store: JobStore,
    state_dir: Path,
    job_id: str,
    state: JobState,
    failed_row: bool = False,
    **spec: object,
) -> Path:
    """A job that ran to `state`, with the work files a run leaves (units, a part, plan, logs, and
    an earlier version's rows.cost); with `failed_row`, its row 2 failed."""
    plan = [ShardPlan(0, 2, 2, 10)] + ([ShardPlan(2, 3, 1, 5)] if failed_row else [])
    store.jobs.create(job_id, {**SPEC, **spec}, plan)
    store.jobs.set_state(job_id, JobState.RUNNING)
    work_dir = work_dir_of(state_dir, job_id)
    (work_dir / "parts").mkdir(parents=True)
    (work_dir / "logs").mkdir()
    for name, size in (("units.jsonl", 300), ("units.idx", 24), ("rows.cost", 32)):
        (work_dir / name).write_bytes(b"u" * size)
    part = work_dir / "parts" / "000000000-000000002-abc.jsonl"
    part.write_bytes(b"p" * 500)
    (work_dir / "plan.json").write_text("{}")
    (work_dir / "logs" / "coordinator.log").write_text("started\n")
    lease = store.leases.take(job_id, "worker", ttl_s=60)
    assert lease is not None and lease.lease_id is not None
    store.leases.complete(job_id, lease.index, lease.lease_id, part, {})
    if failed_row:
        store.shards.fail(job_id, 1, None, "ValueError: refused")
    store.jobs.set_state(job_id, state)
    return work_dir


def test_a_succeeded_jobs_units_and_parts_go_and_its_plan_and_logs_stay(
    store: JobStore, state_dir: Path
) -> None:
    work_dir = finished_job(store, state_dir, "done", JobState.SUCCEEDED)
    before = work_bytes(work_dir)

    freed = retire(store, "done", work_dir)

    assert sorted(path.name for path in work_dir.iterdir()) == ["logs", "plan.json"]
    assert freed == 300 + 24 + 32 + 500 and work_bytes(work_dir) == before - freed
    assert parts_missing(store, "done")
    (event,) = store.events.page("done")
    assert (event.kind, event.actor) == ("work_removed", None)
    assert "856 B" in event.message
    assert retire(store, "done", work_dir) == 0
    assert len(store.events.page("done")) == 1


def test_keep_work_keeps_them_and_a_failed_job_keeps_them_for_its_rerun(
    store: JobStore, state_dir: Path
) -> None:
    kept = finished_job(store, state_dir, "kept", JobState.SUCCEEDED, keep_work=True)
    failed = finished_job(store, state_dir, "failed", JobState.FAILED)

    assert retire(store, "kept", kept) == retire(store, "failed", failed) == 0
    assert (kept / "parts").is_dir() and (failed / "units.jsonl").is_file()
    assert not parts_missing(store, "kept")


def test_keep_work_is_no_part_of_a_jobs_identity() -> None:
    spec = JobSpec(**SPEC)
    assert spec.model_copy(update={"keep_work": True}).identity() == spec.identity()
    assert spec.default_job_id("key") == JobSpec(**SPEC, keep_work=True).default_job_id("key")


def test_a_succeeded_job_whose_parts_are_gone_is_forgotten_so_that_a_rerun_plans_it_anew(
    store: JobStore, state_dir: Path
) -> None:
    kept = finished_job(store, state_dir, "kept", JobState.SUCCEEDED, keep_work=True)
    removed = finished_job(store, state_dir, "removed", JobState.SUCCEEDED)
    retire(store, "removed", removed)

    assert not forget_unassemblable(handle_for("kept", state_dir, store.url))
    assert forget_unassemblable(handle_for("removed", state_dir, store.url))

    assert store.jobs.find("kept") is not None and (kept / "parts").is_dir()
    assert store.jobs.find("removed") is None and not removed.exists()


def test_a_succeeded_jobs_failed_rows_are_retried_only_while_its_parts_are_kept(
    store: JobStore, state_dir: Path
) -> None:
    kept = finished_job(store, state_dir, "kept", JobState.SUCCEEDED, True, keep_work=True)
    removed = finished_job(store, state_dir, "removed", JobState.SUCCEEDED, True)
    retire(store, "removed", removed)
    retire(store, "kept", kept)

    with pytest.raises(JobError, match=r"units and parts were removed .* --keep-work"):
        retry_failed(handle_for("removed", state_dir, store.url), actor="ops")
    assert retry_failed(handle_for("kept", state_dir, store.url), actor="ops") == [1]

    assert store.jobs.get("removed").state is JobState.SUCCEEDED
    assert store.jobs.get("kept").state is JobState.QUEUED
    retried = store.events.page("kept")[-1]
    assert (retried.kind, retried.actor) == ("retried", "ops")
    assert "1 failed row(s)" in retried.message


def test_deleting_a_finished_job_removes_its_work_dir_and_record_never_its_output(
    store: JobStore, state_dir: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out.json"
    output.write_text("[]")
    work_dir = finished_job(store, state_dir, "old", JobState.CANCELLED, output=str(output))

    delete_job(store, state_dir, "old")

    assert not work_dir.exists() and store.jobs.find("old") is None
    assert output.read_text() == "[]"


def test_an_active_job_is_never_deleted_and_its_files_stay(
    store: JobStore, state_dir: Path
) -> None:
    store.jobs.create("active", SPEC, None)
    (work_dir_of(state_dir, "active") / "logs").mkdir(parents=True)

    with pytest.raises(JobError, match="is planning; only a finished"):
        delete_job(store, state_dir, "active")

    assert (work_dir_of(state_dir, "active") / "logs").is_dir()


def test_a_job_id_that_leads_out_of_the_jobs_folder_is_refused(state_dir: Path) -> None:
    for job_id in ("..", "../escape", "a/b", ""):
        with pytest.raises(JobError, match="does not name a folder of"):
            work_dir_of(state_dir, job_id)


def test_prune_deletes_finished_jobs_older_than_the_age_in_the_states_asked_for(
    store: JobStore, state_dir: Path
) -> None:
    for job_id, state in (
        ("ok", JobState.SUCCEEDED),
        ("bad", JobState.FAILED),
        ("stopped", JobState.CANCELLED),
    ):
        finished_job(store, state_dir, job_id, state)
    store.jobs.create("queued", SPEC, [ShardPlan(0, 1, 1, 1)])

    assert prune_jobs(store, state_dir, 3600, now=NOW + 60) == []
    pruned = prune_jobs(store, state_dir, 3600, parse_states("failed,cancelled"), now=NOW + 7200)

    assert sorted(record.id for record in pruned) == ["bad", "stopped"]
    assert sorted(record.id for record in store.jobs.all()) == ["ok", "queued"]
    assert [r.id for r in prune_jobs(store, state_dir, 0, now=NOW + 7200)] == ["ok"]
    assert [record.id for record in store.jobs.all()] == ["queued"]
    assert sorted(path.name for path in (state_dir / "jobs").iterdir()) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600)],
)
def test_an_age_is_a_number_and_a_unit(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


def test_a_bad_age_or_state_is_one_sentence_naming_the_option() -> None:
    with pytest.raises(JobError, match=r"--older-than '7 days' is not an age; give a number"):
        parse_age("7 days")
    with pytest.raises(JobError, match=r"--state 'running' is not a finished state; use cancel"):
        parse_states("failed,running")


def test_sizes_read_as_people_read_them() -> None:
    assert [format_bytes(n) for n in (12, 13_200_000, 11_200_000_000)] == [
        "12 B",
        "13.2 MB",
        "11.2 GB",
    ]


# --- logs


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "coordinator.log").write_text("".join(f"line {i}\n" for i in range(10)))
    (folder / "translator-w1.log").write_text("leased 0\nwriting")
    (folder / "notes.txt").write_text("not a log")
    outside = tmp_path / "secret.log"
    outside.write_text("secret\n")
    (folder / "linked.log").symlink_to(outside)
    return folder


def test_the_logs_listed_are_the_folders_own_log_files_the_coordinators_first(
    logs: Path,
) -> None:
    assert [(f.name, f.bytes) for f in log_files(logs)] == [
        ("coordinator.log", 70),
        ("translator-w1.log", 16),
    ]
    assert log_files(logs.parent / "none") == []


def test_a_log_is_read_by_its_tail_and_then_followed_from_its_next_offset(logs: Path) -> None:
    tail = read_logs(logs, "job", None, 3, None)
    assert (tail.file, tail.lines) == ("coordinator.log", ["line 7", "line 8", "line 9"])
    assert (tail.offset, tail.next_offset, tail.size) == (49, 70, 70)

    with open(logs / "coordinator.log", "a") as log:
        log.write("line 10\nline 1")
    followed = read_logs(logs, "job", "coordinator.log", 200, tail.next_offset)

    # a line still being written waits for the next read
    assert followed.lines == ["line 10"] and followed.next_offset == 78
    assert read_logs(logs, "job", "coordinator.log", 200, 0).lines[:2] == ["line 0", "line 1"]
    assert read_logs(logs, "job", "translator-w1.log", 200, None).lines == ["leased 0"]
    # rotated since (shorter than the offset followed): read again from its start
    (logs / "coordinator.log").write_text("after rotation\n")
    assert read_logs(logs, "job", "coordinator.log", 200, 78).lines == ["after rotation"]


def test_a_page_ends_at_a_whole_line(logs: Path) -> None:
    (logs / "big.log").write_bytes(b"x" * (LOG_PAGE_BYTES - 2) + b"\nnext line\n")
    first = read_logs(logs, "job", "big.log", 200, 0)
    assert first.next_offset == LOG_PAGE_BYTES - 1 and len(first.lines) == 1
    assert read_logs(logs, "job", "big.log", 200, first.next_offset).lines == ["next line"]


def test_a_file_outside_the_logs_or_a_link_is_never_read(logs: Path) -> None:
    for name in ("linked.log", "notes.txt", "../secret.log", "secret.log"):
        with pytest.raises(ApiError, match=f"Job job has no log file {name}; its logs: coord"):
            read_logs(logs, "job", name, 200, None)


def test_a_job_without_logs_has_an_empty_page(tmp_path: Path) -> None:
    page = read_logs(tmp_path / "none", "job", None, 200, None)
    assert (page.files, page.file, page.lines) == ([], None, [])


# --- the commands and the server's own pruning


def test_mtfleet_prune_deletes_old_finished_jobs_of_a_state_dir_and_names_them(
    store: JobStore, state_dir: Path
) -> None:
    finished_job(store, state_dir, "old-failure", JobState.FAILED)
    finished_job(store, state_dir, "old-success", JobState.SUCCEEDED)
    store.jobs.create("still-planning", SPEC, None)

    pruned = CliRunner().invoke(
        app, ["prune", "--older-than", "7d", "--state", "failed", "--state-dir", str(state_dir)]
    )

    assert pruned.exit_code == 0, pruned.output
    # units, idx, costs and part (856 B), plan.json (2 B) and the log (8 B)
    assert pruned.stdout.splitlines() == [
        "old-failure failed deleted",
        "1 job deleted, 866 B freed",
    ]
    assert sorted(r.id for r in store.jobs.all()) == ["old-success", "still-planning"]


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["prune", "--older-than", "a week"], "--older-than 'a week' is not an age"),
        (
            ["prune", "--older-than", "7d", "--state", "paused"],
            "--state 'paused' is not a finished",
        ),
        (["serve", "--data-root", ".", "--retain", "soon"], "--retain 'soon' is not an age"),
    ],
)
def test_a_bad_age_or_state_on_the_command_line_is_one_sentence_and_exit_2(
    command: list[str], message: str, state_dir: Path
) -> None:
    result = CliRunner().invoke(app, [*command, "--state-dir", str(state_dir)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_the_server_removes_succeeded_jobs_work_files_when_it_starts_and_prunes_by_age(
    store: JobStore, state_dir: Path, tmp_path: Path
) -> None:
    work_dir = finished_job(store, state_dir, "done-before", JobState.SUCCEEDED)
    service = JobService(tmp_path, state_dir)
    service.start()
    try:
        # the files go first, then the event that says so: wait for the event
        wait_for(lambda: bool(store.events.page("done-before")), timeout_s=30)
        assert [e.kind for e in store.events.page("done-before")] == ["work_removed"]
        assert not (work_dir / "parts").exists()
    finally:
        service.stop()

    retaining = JobService(tmp_path, state_dir, retain_s=3600)
    retaining.start()
    try:
        # the job changed last at NOW, long before this test ran
        wait_for(lambda: store.jobs.find("done-before") is None, timeout_s=30)
    finally:
        retaining.stop()
    assert not work_dir.exists()


def test_a_retention_shorter_than_five_minutes_prunes_as_often_as_it_lasts(
    store: JobStore, state_dir: Path, tmp_path: Path
) -> None:
    finished_job(store, state_dir, "done-first", JobState.SUCCEEDED)
    retaining = JobService(tmp_path, state_dir, retain_s=1)
    retaining.start()
    try:
        wait_for(lambda: store.jobs.find("done-first") is None, timeout_s=30)
        # finished after the first prune: the next one, a second later, takes it
        later = finished_job(store, state_dir, "done-later", JobState.CANCELLED)
        wait_for(lambda: store.jobs.find("done-later") is None, timeout_s=30)
    finally:
        retaining.stop()
    assert not later.exists()


def test_a_job_deleted_before_the_server_retires_it_is_no_error(
    store: JobStore, state_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    finished_job(store, state_dir, "deleted-first", JobState.SUCCEEDED)
    service = JobService(tmp_path, state_dir)
    delete_job(store, state_dir, "deleted-first")

    with caplog.at_level(logging.ERROR):
        service._retire("deleted-first")

    assert caplog.records == []
