"""What a job leaves on the state dir's disk, and when it goes.

A job's work dir (`STATE_DIR/jobs/JOB`) holds its unit file, its parts, its plan's summary
(`plan.json`) and its logs. Once the job has succeeded, its units and parts are removed (unless
its spec says `keep_work`): the output and its manifest are written, and the store keeps the
job's record, so the same command finds it done. Deleting a finished job (`mtfleet jobs rm`,
`mtfleet prune`, `DELETE /v1/jobs/{id}`) removes its work dir and its record; never an output.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Collection
from pathlib import Path

from mtfleet.errors import JobError
from mtfleet.store import TERMINAL, JobRecord, JobState, JobStore

# What a succeeded job keeps of its work dir: enough to say what it read, and what it did.
KEPT_WORK = frozenset({"plan.json", "logs"})
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")

log = logging.getLogger(__name__)


def work_dir_of(state_dir: Path, job_id: str) -> Path:
    """The job's work dir; a job id that would lead out of `STATE_DIR/jobs` is a JobError."""
    jobs = Path(state_dir).expanduser().resolve() / "jobs"
    work_dir = jobs / job_id
    if work_dir.parent != jobs or job_id in ("", ".", ".."):
        raise JobError(f"Job id {job_id!r} does not name a folder of {jobs}.")
    return work_dir


def work_bytes(work_dir: Path) -> int:
    """The bytes of the files under `work_dir` (0 when it is gone); links are not followed."""
    total = 0
    for folder, _, files in os.walk(work_dir):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed while counted
                continue
    return total


def remove_work_files(work_dir: Path) -> int:
    """Removes a succeeded job's units and parts, keeping KEPT_WORK; the bytes freed."""
    freed = 0
    try:
        entries = list(os.scandir(work_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name in KEPT_WORK:
            continue
        if entry.is_dir(follow_symlinks=False):
            freed += work_bytes(Path(entry.path))
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            freed += entry.stat(follow_symlinks=False).st_size
            Path(entry.path).unlink(missing_ok=True)
    return freed


def retire(store: JobStore, job_id: str, work_dir: Path) -> int:
    """Removes the units and parts of a succeeded job, unless its spec keeps them (`keep_work`)
    or they are gone already; records it in the job's history. The bytes freed."""
    job = store.jobs.get(job_id)
    if job.state is not JobState.SUCCEEDED or job.spec.get("keep_work"):
        return 0
    # rows.cost: the row costs an earlier version's planner kept beside the units
    if not any(
        (work_dir / name).exists() for name in ("parts", "units.jsonl", "units.idx", "rows.cost")
    ):
        return 0
    freed = remove_work_files(work_dir)
    store.events.add(
        job_id,
        "work_removed",
        f"Its units and parts were removed ({format_bytes(freed)}); the output, its manifest "
        "and the job's record stay (--keep-work keeps them).",
    )
    return freed


def parts_missing(store: JobStore, job_id: str) -> bool:
    """A done shard's part is gone: the job cannot be assembled again from its work files."""
    return any(
        shard.part_path is not None and not Path(shard.part_path).is_file()
        for shard in store.shards.in_row_order(job_id)
    )


def delete_job(store: JobStore, state_dir: Path, job_id: str) -> JobRecord:
    """Deletes a finished job: its record (an active one is refused, a JobError), then its work
    dir. Its output and manifest stay where they are."""
    work_dir = work_dir_of(state_dir, job_id)
    record = store.jobs.delete(job_id)
    shutil.rmtree(work_dir, ignore_errors=True)
    return record


def prune_jobs(
    store: JobStore,
    state_dir: Path,
    older_than_s: float,
    states: Collection[JobState] = TERMINAL,
    now: float | None = None,
) -> list[JobRecord]:
    """Deletes the jobs in `states` (finished ones only) that have not changed for
    `older_than_s` seconds; the jobs deleted, oldest first."""
    cutoff = (time.time() if now is None else now) - older_than_s
    deleted = []
    for record in store.jobs.all():
        if record.state not in TERMINAL or record.state not in states:
            continue
        if record.updated_at > cutoff:
            continue
        try:
            deleted.append(delete_job(store, state_dir, record.id))
        except JobError as error:  # submitted again meanwhile, or deleted by another
            log.info("job %s is not pruned: %s", record.id, error)
    return deleted


def parse_age(text: str, option: str = "--older-than") -> float:
    """Seconds in an age such as 90s, 30m, 12h, 7d or 2w."""
    found = _AGE.fullmatch(text.strip())
    if found is None:
        raise JobError(
            f"{option} {text!r} is not an age; give a number and a unit, such as 30m, 12h or 7d."
        )
    return float(found.group(1)) * AGE_UNITS[found.group(2)]


def parse_states(text: str, option: str = "--state") -> frozenset[JobState]:
    """Finished states named in a comma list, such as failed,cancelled."""
    finished = ", ".join(state.value for state in sorted(TERMINAL))
    states = set()
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        if name not in {state.value for state in TERMINAL}:
            raise JobError(f"{option} {name!r} is not a finished state; use {finished}.")
        states.add(JobState(name))
    if not states:
        raise JobError(f"{option} names no state; use {finished}.")
    return frozenset(states)


def format_bytes(count: int) -> str:
    """1.2 MB, 340.0 KB, 12 B: a size as people read it."""
    size = float(count)
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
