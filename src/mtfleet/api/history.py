"""A job's history and logs through the API: its events from the store, and the log files its
coordinator and translators write under `WORK/logs`, a page or a tail at a time. A log is named
by its file name as listed; no other path is ever opened."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from mtfleet.api.jobs import JobService
from mtfleet.api.shards import JobId
from mtfleet.errors import ApiError

EVENTS_DEFAULT = 200
EVENTS_MAX = 1000
TAIL_DEFAULT = 200
TAIL_MAX = 5000
# one answer reads at most this much of a log, from an offset or back from its end
LOG_PAGE_BYTES = 256 * 1024
# coordinator.log, translator-<worker_id>.log, and their rotated copies (.log.1 ...)
LOG_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
_LOG_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.log(\.[0-9]+)?")
FIRST_LOG = "coordinator.log"


class JobEvent(BaseModel):
    id: int = Field(description="Grows with each event: ask for those after the last you saw.")
    at: float = Field(description="When, in UTC epoch seconds.")
    kind: str = Field(description="submitted, paused, resumed, cancelled, succeeded, failed, ...")
    actor: str | None = Field(description="Who asked for it; null for what the cluster did.")
    message: str


class EventPage(BaseModel):
    job_id: str
    events: list[JobEvent] = Field(description="Oldest first, after `after`.")
    next_after: int | None = Field(description="`after` of the next page; null on the last.")


class LogFile(BaseModel):
    name: str
    bytes: int


class LogPage(BaseModel):
    job_id: str
    files: list[LogFile] = Field(description="The job's log files, its coordinator's first.")
    file: str | None = Field(description="The file these lines are of; null when it has none.")
    lines: list[str]
    offset: int = Field(description="Where in the file the first line starts, in bytes.")
    next_offset: int = Field(
        description="`offset` to ask for next: the following lines, or those written since."
    )
    size: int = Field(description="The file's size in bytes now.")


def history_routes(service: JobService) -> APIRouter:
    """GET /jobs/{id}/events and /jobs/{id}/logs, for the authorized /v1 router."""
    router = APIRouter()

    @router.get("/jobs/{job_id}/events", summary="The job's history: who did what, and when")
    def events(
        job_id: JobId,
        after: Annotated[
            int, Query(ge=0, le=2**62, description="The last event id seen; 0 for the first.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=EVENTS_MAX)] = EVENTS_DEFAULT,
    ) -> EventPage:
        found = service.events(job_id, after=after, limit=limit + 1)
        return EventPage(
            job_id=job_id,
            events=[
                JobEvent(
                    id=event.id,
                    at=event.at,
                    kind=event.kind,
                    actor=event.actor,
                    message=service.root.relative(event.message),
                )
                for event in found[:limit]
            ],
            next_after=found[limit - 1].id if len(found) > limit else None,
        )

    @router.get("/jobs/{job_id}/logs", summary="Lines of the job's coordinator or translator logs")
    def logs(
        job_id: JobId,
        file: Annotated[
            str | None,
            Query(
                pattern=LOG_NAME,
                description=f"A file name as `files` lists it (default {FIRST_LOG}).",
            ),
        ] = None,
        tail: Annotated[
            int, Query(ge=1, le=TAIL_MAX, description="Without `offset`: the last lines.")
        ] = TAIL_DEFAULT,
        offset: Annotated[
            int | None,
            Query(
                ge=0,
                le=2**62,
                description="The lines from this byte on (next_offset of the last answer: "
                "follow the file).",
            ),
        ] = None,
    ) -> LogPage:
        service.job_exists(job_id)
        return read_logs(service.work_dir(job_id) / "logs", job_id, file, tail, offset)

    return router


def log_files(folder: Path) -> list[LogFile]:
    """The log files in `folder`: regular files only, the coordinator's first, then by name."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [
        LogFile(name=entry.name, bytes=entry.stat(follow_symlinks=False).st_size)
        for entry in entries
        if _LOG_FILE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)
    ]
    return sorted(found, key=lambda log: (not log.name.startswith("coordinator"), log.name))


def read_logs(
    folder: Path, job_id: str, name: str | None, tail: int, offset: int | None
) -> LogPage:
    """The lines of one log file of `folder`: from `offset` on (a page of at most
    LOG_PAGE_BYTES, whole lines), or its last `tail` lines."""
    files = log_files(folder)
    if name is None:
        name = FIRST_LOG if any(f.name == FIRST_LOG for f in files) else None
        name = name or (files[0].name if files else None)
        if name is None:
            return LogPage(
                job_id=job_id, files=[], file=None, lines=[], offset=0, next_offset=0, size=0
            )
    elif not any(f.name == name for f in files):
        listed = ", ".join(f.name for f in files) or "none yet"
        raise ApiError(f"Job {job_id} has no log file {name}; its logs: {listed}.", 404)
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise ApiError(f"The log file {name} of job {job_id} cannot be read now.", 404) from None
    with open(fd, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        # an offset past the end: the file was rotated since, and is read from its start
        start = offset if offset is not None and offset <= size else 0
        begin = max(0, size - LOG_PAGE_BYTES) if offset is None else start
        stream.seek(begin)
        chunk = stream.read(LOG_PAGE_BYTES)
    lines = _whole_lines(chunk, begin)
    end = begin + chunk.rfind(b"\n") + 1
    if offset is None:
        if begin > 0:
            lines = lines[1:]  # the window's first line may be cut
        lines = lines[-tail:]
    elif not lines and len(chunk) == LOG_PAGE_BYTES:
        # a line longer than a page is given cut rather than never
        lines, end = [(begin, chunk)], begin + len(chunk)
    return LogPage(
        job_id=job_id,
        files=files,
        file=name,
        lines=[line.decode("utf-8", "replace") for _, line in lines],
        offset=lines[0][0] if lines else end,
        next_offset=end,
        size=size,
    )


def _whole_lines(chunk: bytes, base: int) -> list[tuple[int, bytes]]:
    """The lines of `chunk` (read from byte `base`) that end in a newline, each with where it
    starts: a line still being written is left for the next read."""
    lines = []
    start = 0
    while (newline := chunk.find(b"\n", start)) != -1:
        lines.append((base + start, chunk[start:newline]))
        start = newline + 1
    return lines
