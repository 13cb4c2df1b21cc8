"""What the API answers with: jobs, their progress and fleets, the cluster's nodes, errors."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mtfleet.spec import JobSpec
from mtfleet.store.states import JobState

# A job id names a directory and a Ray actor: no separators, no leading dot.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class JobRequest(JobSpec):
    """A job spec as POSTed, and optionally the job's id (default: derived from spec and input)."""

    job_id: str | None = Field(None, pattern=JOB_ID_PATTERN, description="Letters, digits, . _ -")

    def spec(self) -> JobSpec:
        return JobSpec(**self.model_dump(exclude={"job_id"}))


class Failure(BaseModel):
    row_start: int
    row_end: int
    error: str | None


class Translator(BaseModel):
    model_config = ConfigDict(extra="ignore")

    worker_id: str
    node_id: str
    device: str
    gpu_ids: list[int] = []
    job_id: str | None = None


class JobNode(BaseModel):
    """One node's share of a job: its translators now, and what its translators have done."""

    node_id: str
    translators: list[str]
    shards_done: int
    segments_done: int
    segments_per_s: float | None = Field(
        description="Sum over its translators of segments per busy second."
    )


class RelativePaths(BaseModel):
    """A job's paths as its submitter wrote them: relative to the server's data root."""

    input: str
    output: str
    model: str


class JobSummary(BaseModel):
    id: str
    state: JobState
    error: str | None
    created_at: float
    updated_at: float
    input: str
    output: str
    model: str
    relative: RelativePaths = Field(
        description="input, output and model, relative to the data root."
    )
    tgt_lang: list[str] = Field(
        description="Its target languages; empty for a model with one (a Marian pair)."
    )
    rows_total: int
    rows_done: int
    segments_done: int
    work_bytes: int = Field(
        description="The size of its work files on the server (units, parts, logs); a "
        "succeeded job keeps its logs and plan only, unless it was run with keep_work."
    )


class JobHealth(BaseModel):
    """What the health checks flagged (the manifest's `health`, without its list of units)."""

    model_config = ConfigDict(extra="ignore")

    checks: str = Field("on", description="on, or off for a job run with its checks off.")
    on_flag: str
    units_checked: int
    units_flagged: int
    rows_dropped: int
    per_check: dict[str, int] = Field(description="Flagged units per check.")
    per_field: dict[str, dict[str, int]] = Field(description="Flagged units per field and check.")


class TargetProgress(BaseModel):
    """One target language of a job: its output, and what is translated into it (one lease covers
    every language of a shard, so a done shard is done in each)."""

    tgt_lang: str | None
    output: str
    units_total: int
    units_done: int
    segments_done: int


class JobView(JobSummary):
    spec: dict[str, Any]
    units_total: int
    units_done: int
    shards: dict[str, int] = Field(description="Shards per state: pending, leased, done, failed.")
    segments_per_s: float | None = Field(
        description="Recent rate while active; the average once finished."
    )
    rows_per_s: float | None
    eta_s: float | None = Field(
        description="Seconds to the end at the recent rate; null when unknown, or while planning."
    )
    planning: bool = Field(
        False,
        description="Its input is still read while translators lease its first shards: its "
        "shards and rows are those cut so far.",
    )
    failures: list[Failure] = Field(description="The first 100 failed shards, in row order.")
    failures_total: int = Field(0, description="How many shards failed in all.")
    counters: dict[str, int] = Field(
        description="lease_expiries, translator_deaths, shards_reused, ..."
    )
    translators: list[Translator]
    nodes: list[JobNode]
    targets: list[TargetProgress] = Field(
        description="Each target language: its output and progress (one entry for one target)."
    )
    health: JobHealth | None = Field(
        None, description="The health checks' counts, from the manifest once the job is done."
    )


class Node(BaseModel):
    node_id: str
    address: str
    state: Literal["alive", "dead"]
    head: bool
    cpus: float
    gpus: float
    memory_bytes: int
    translators: list[Translator]


class Health(BaseModel):
    status: Literal["ok"]
    jobs_running: int
    nodes_alive: int


class Problem(BaseModel):
    field: str | None = Field(description="The job request's field at fault; null: the whole.")
    message: str = Field(description="One sentence saying what is wrong with it.")


class ErrorBody(BaseModel):
    error: str = Field(description="One sentence saying what is wrong.")
    field: str | None = Field(
        None, description="A refused submission: the field at fault, as its first problem's."
    )
    problems: list[Problem] | None = Field(
        None, description="A refused submission: each problem, at its field."
    )
    detail: list[dict[str, Any]] | None = Field(
        None, description="Every validation error, for a 422."
    )
