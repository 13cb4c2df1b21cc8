"""A job's shards as the console draws them, and a finished shard's translations beside their
sources. Read-only: rows from the job store, text from the job's unit file and parts, and never a
path of the server's disk in an answer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParameter
from pydantic import BaseModel, Field

from mtfleet.api.jobs import JobService
from mtfleet.api.views import JOB_ID_PATTERN
from mtfleet.cluster.job import handle_for
from mtfleet.cluster.parts import read_part
from mtfleet.cluster.plan import UnitLine, UnitReader
from mtfleet.errors import ApiError
from mtfleet.health import ordered
from mtfleet.store import JobStore, ShardState

SHARD_PAGE_DEFAULT = 2000
SHARD_PAGE_MAX = 10_000
SAMPLE_DEFAULT = 20
SAMPLE_MAX = 50
# a sample shows what was translated, not whole documents
TEXT_LIMIT = 2000


class ShardEntry(BaseModel):
    index: int
    row_start: int
    row_end: int = Field(description="One past the shard's last row.")
    state: Literal["pending", "leased", "done", "failed"]
    lease_owner: str | None = Field(description="The translator (worker_id) holding the lease.")


class ShardPage(BaseModel):
    job_id: str
    shards_total: int = Field(description="How many shards the job has, on every page.")
    shards: list[ShardEntry] = Field(description="In row order, from row_start on.")
    next_row_start: int | None = Field(description="row_start of the next page; null on the last.")


class SampleUnit(BaseModel):
    unit: int
    row: int
    loc: str = Field(description="Where in the row: file, field path and list positions.")
    source: str
    translation: str | None = Field(description="Null when the shard's part has no line for it.")
    checks: list[str] = Field(
        default_factory=list, description="What the health checks flagged in its translation."
    )


class Sample(BaseModel):
    job_id: str
    shard_index: int
    shard_row_start: int
    shard_row_end: int
    units: list[SampleUnit]
    next_row_start: int | None = Field(
        description="The row to ask for next within the shard; null when the shard is all shown."
    )
    text_limit: int = Field(description="Longer sources and translations are cut to this.")


JobId = Annotated[str, PathParameter(pattern=JOB_ID_PATTERN)]
# rows are numbered in a 32-bit column (PostgreSQL's integer)
MAX_ROW = 2**31 - 1


def shard_routes(service: JobService) -> APIRouter:
    """GET /jobs/{id}/shards and /jobs/{id}/sample, for the authorized /v1 router."""
    router = APIRouter()

    @router.get("/jobs/{job_id}/shards", summary="A page of the job's shards: rows, state, lease")
    def shards(
        job_id: JobId,
        row_start: Annotated[
            int, Query(ge=0, le=MAX_ROW, description="The first page starts at 0.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=SHARD_PAGE_MAX)] = SHARD_PAGE_DEFAULT,
    ) -> ShardPage:
        return shard_page(service.store, job_id, row_start, limit)

    @router.get("/jobs/{job_id}/sample", summary="Sources beside translations, from a done shard")
    def sample_rows(
        job_id: JobId,
        row_start: Annotated[int, Query(ge=0, le=MAX_ROW, description="Any row of a done shard.")],
        limit: Annotated[int, Query(ge=1, le=SAMPLE_MAX, description="Text units.")] = (
            SAMPLE_DEFAULT
        ),
    ) -> Sample:
        work_dir = handle_for(job_id, service.state_dir, service.store_url).work_dir
        return sample(service.store, work_dir, job_id, row_start, limit)

    return router


def shard_page(store: JobStore, job_id: str, row_start: int, limit: int) -> ShardPage:
    """Up to `limit` of the job's shards from `row_start` on, and how many it has in all."""
    _check_job(store, job_id)
    shards_total = sum(store.counters.progress(job_id)["shards"].values())
    found = store.shards.page(job_id, row_start, limit + 1)
    return ShardPage(
        job_id=job_id,
        shards_total=shards_total,
        shards=[
            ShardEntry(
                index=shard.index,
                row_start=shard.row_start,
                row_end=shard.row_end,
                state=shard.state.value,
                lease_owner=shard.lease_owner if shard.state is ShardState.LEASED else None,
            )
            for shard in found[:limit]
        ],
        next_row_start=found[limit].row_start if len(found) > limit else None,
    )


def sample(store: JobStore, work_dir: Path, job_id: str, row_start: int, limit: int) -> Sample:
    """Up to `limit` text units of the done shard holding `row_start`, from that row on: each
    source from the job's unit file beside its translation from the shard's part."""
    _check_job(store, job_id)
    shard = store.shards.at_row(job_id, row_start)
    if shard is None:
        raise ApiError(f"Job {job_id} has no shard holding row {row_start}.", 404)
    if shard.state is not ShardState.DONE or shard.part_path is None:
        raise ApiError(
            f"Row {row_start} of job {job_id} is in shard {shard.index}, which is {shard.state}; "
            "a sample needs a done shard.",
            409,
        )
    if not UnitReader.exists(work_dir):
        raise ApiError(
            f"The units and parts of job {job_id} are gone (a succeeded job's are removed "
            "unless it runs with keep_work), so it has no sample to show.",
            409,
        )
    units = UnitReader(work_dir).read(row_start, shard.row_end)
    shown, rest = units[:limit], units[limit:]
    wanted = {unit.unit for unit in shown}
    lines = {line.unit: line for line in read_part(Path(shard.part_path)) if line.unit in wanted}
    return Sample(
        job_id=job_id,
        shard_index=shard.index,
        shard_row_start=shard.row_start,
        shard_row_end=shard.row_end,
        units=[
            SampleUnit(
                unit=unit.unit,
                row=unit.row,
                loc=unit.location,
                source=unit.text[:TEXT_LIMIT],
                translation=_cut(_translation(lines[unit.unit]) if unit.unit in lines else None),
                checks=_checks(lines[unit.unit]) if unit.unit in lines else [],
            )
            for unit in shown
        ],
        next_row_start=_next_row(row_start, rest[0].row, shard.row_end) if rest else None,
        text_limit=TEXT_LIMIT,
    )


def _check_job(store: JobStore, job_id: str) -> None:
    if store.jobs.find(job_id) is None:
        raise ApiError(f"There is no job {job_id}.", 404)


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:TEXT_LIMIT]


def _next_row(row_start: int, first_unshown: int, shard_end: int) -> int | None:
    # a row with more units than a sample holds is shown in part, then skipped
    following = first_unshown if first_unshown > row_start else row_start + 1
    return following if following < shard_end else None


def _checks(line: UnitLine) -> list[str]:
    """A part line's flags; with several target languages, those of any of them."""
    if line.targets is None:
        return list(line.flags)
    return ordered(flag for _, flags in line.targets.values() for flag in flags)


def _translation(line: UnitLine) -> str:
    """A part line's translation; with several target languages, one line per language."""
    if line.targets is None:
        return line.text
    return "\n".join(f"{target}: {text}" for target, (text, _) in line.targets.items())
