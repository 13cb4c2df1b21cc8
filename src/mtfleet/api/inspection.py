"""What `mtfleet models inspect` says of a model, over the API: the console fills its language
pickers from it. A model directory must lie under the data root, as a job's does; a hub id is read
from this machine's Hugging Face cache only, and refused at once when it is not there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from mtfleet.api.jobs import JobService
from mtfleet.api.paths import check_printable, not_found_locally
from mtfleet.engines import inspect_model
from mtfleet.engines.hub import hub_offline, in_hub_cache
from mtfleet.errors import ApiError
from mtfleet.spec import PATH_CHARS
from mtfleet.wording import api_wording

REMOTE_CODE_REFUSED = (
    "This server runs no model's own code (trust_remote_code); start it with mtfleet serve "
    "--allow-remote-code to allow it."
)


class Iso639(BaseModel):
    iso639_3: str | None = Field(description="The language's ISO 639-3 code: mar for mar_Deva.")
    iso639_1: str | None = Field(
        description="The ISO 639-1 code a user types for it (mr), where there is one."
    )
    script: str | None = Field(description="The ISO 15924 script the code names: Deva.")


class ModelLanguages(BaseModel):
    count: int
    codes: list[str] = Field(description="The model's own codes, sorted; empty for one pair.")
    given_as: str = Field(description="How a job gives the model its languages.")
    iso639: dict[str, Iso639] = Field(description="What each of the model's codes is in ISO 639.")


class ModelReport(BaseModel):
    model: str = Field(description="The model as given: a path under the data root or a hub id.")
    model_type: str
    architecture: str
    family: str
    tokenizer_class: str
    languages: ModelLanguages
    max_input_tokens: int = Field(description="The longest segment it takes, in tokens.")
    remote_code: bool = Field(description="Whether it brings code of its own (auto_map).")
    engines: list[str] = Field(description="The engines that can run it.")


def inspection_routes(service: JobService, *, allow_remote_code: bool) -> APIRouter:
    router = APIRouter()

    @router.get(
        "/models/inspect",
        summary="A model's family, language codes (with ISO 639), input limit and engines",
    )
    def inspect(
        model: Annotated[
            str,
            Query(
                min_length=1,
                max_length=PATH_CHARS,
                description="A model directory under the data root, or a hub id in the cache.",
            ),
        ],
        trust_remote_code: bool = False,
    ) -> ModelReport:
        if trust_remote_code and not allow_remote_code:
            raise ApiError(REMOTE_CODE_REFUSED, 400, field="trust_remote_code")
        report = _inspect(service, model, trust_remote_code)
        report["languages"]["given_as"] = api_wording(report["languages"]["given_as"])
        return ModelReport.model_validate({**report, "model": model})

    return router


def _inspect(service: JobService, model: str, trust_remote_code: bool) -> dict[str, Any]:
    check_printable("model", model)
    source = service.root.model(model)
    if Path(source).is_absolute():
        return inspect_model(source, trust_remote_code=trust_remote_code)
    if not in_hub_cache(source):
        raise not_found_locally(source)
    # offline mode is the process's own: switched only while no submission checks a model
    with service.submitting, hub_offline():
        return inspect_model(source, trust_remote_code=trust_remote_code)
