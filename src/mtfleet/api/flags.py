"""A finished job's flagged units, a page at a time: OUT.flags.jsonl through the API, so the
console and scripts can answer "which outputs are bad?" without the server's disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from mtfleet.api.jobs import JobService
from mtfleet.api.shards import TEXT_LIMIT, JobId
from mtfleet.errors import ApiError
from mtfleet.health import CHECKS, flags_path

FLAGS_DEFAULT = 50
FLAGS_MAX = 500


class FlaggedUnit(BaseModel):
    row: int
    field: str = Field(description="The unit's whole field path, e.g. conversations[3].value.")
    checks: list[str]
    source: str
    translation: str


class FlagPage(BaseModel):
    job_id: str
    tgt_lang: str | None = Field(description="The target language these flags are of.")
    units_checked: int
    units_flagged: int
    per_check: dict[str, int]
    units: list[FlaggedUnit] = Field(description="In row order, from `cursor` on.")
    next_cursor: int | None = Field(description="`cursor` of the next page; null on the last.")
    text_limit: int = Field(description="Longer sources and translations are cut to this.")


def flag_routes(service: JobService) -> APIRouter:
    """GET /jobs/{id}/flags, for the authorized /v1 router."""
    router = APIRouter()

    @router.get("/jobs/{job_id}/flags", summary="A page of a finished job's flagged units")
    def flags(
        job_id: JobId,
        cursor: Annotated[int, Query(ge=0, le=2**31 - 1, description="0 for the first page.")] = 0,
        limit: Annotated[int, Query(ge=1, le=FLAGS_MAX)] = FLAGS_DEFAULT,
        check: Annotated[str | None, Query(description="Only units flagged by this check.")] = None,
        tgt_lang: Annotated[
            str | None,
            Query(max_length=32, description="A job with several targets: which one's flags."),
        ] = None,
    ) -> FlagPage:
        if check is not None and check not in CHECKS:
            raise ApiError(
                f"Check {check!r} does not exist; the checks are {', '.join(CHECKS)}.", 422
            )
        language, health, output = _target_health(service.manifest(job_id), job_id, tgt_lang)
        if health.get("checks") == "off":
            raise ApiError(f"Job {job_id} ran with its health checks off.", 409)
        units, next_cursor = _page(flags_path(output), cursor, limit, check)
        return FlagPage(
            job_id=job_id,
            tgt_lang=language,
            units_checked=health["units_checked"],
            units_flagged=health["units_flagged"],
            per_check=health["per_check"],
            units=units,
            next_cursor=next_cursor,
            text_limit=TEXT_LIMIT,
        )

    return router


def _target_health(
    manifest: dict[str, Any], job_id: str, tgt_lang: str | None
) -> tuple[str | None, dict[str, Any], str]:
    """The target language, health and output path of a job's manifest (of `tgt_lang` in a job
    with several targets, the first one's when not named)."""
    targets = manifest.get("targets")
    if isinstance(targets, dict) and targets:
        language = tgt_lang if tgt_lang is not None else next(iter(targets))
        if language not in targets:
            raise ApiError(
                f"Job {job_id} has no target {language!r}; it has {', '.join(targets)}.", 404
            )
        entry = targets[language]
        return language, entry["health"], entry["output"]
    if manifest.get("health") is None:
        raise ApiError(f"Job {job_id} has no health report (it ran before the checks).", 409)
    return manifest.get("tgt_lang"), manifest["health"], manifest["output"]


def _page(
    path: Path, cursor: int, limit: int, check: str | None
) -> tuple[list[FlaggedUnit], int | None]:
    """Up to `limit` flagged units (of `check`) after the first `cursor` of them."""
    units: list[FlaggedUnit] = []
    if not path.is_file():
        return units, None
    seen = 0
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            entry = json.loads(line)
            if check is not None and check not in entry["checks"]:
                continue
            seen += 1
            if seen <= cursor:
                continue
            if len(units) == limit:
                return units, cursor + limit
            units.append(
                FlaggedUnit(
                    row=entry["row"],
                    field=entry["field"],
                    checks=entry["checks"],
                    source=entry["source"][:TEXT_LIMIT],
                    translation=entry["translation"][:TEXT_LIMIT],
                )
            )
    return units, None
