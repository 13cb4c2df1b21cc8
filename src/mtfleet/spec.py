"""A job's specification: what to translate, with what, and how. Shared by the CLI, the REST API and the cluster."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EngineName = Literal["hf", "ct2", "reverse"]
OnError = Literal["keep-source", "fail"]
ComputeType = Literal["auto", "int8", "int8_float16", "int8_float32", "float16", "float32"]


class JobSpec(BaseModel):
    """Everything that decides a job's output; two equal specs over the same input make the same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(description="Dataset path: .json, .jsonl, .csv or .parquet.")
    output: str = Field(description="Output path; its extension picks the format.")
    model: str = Field(description="Hugging Face model directory or hub id.")
    fields: list[str] = Field(min_length=1, description="Field paths: name, a.b, list[].name.")
    src_lang: str | None = Field(None, description="Source language code (M2M100, NLLB, mBART).")
    tgt_lang: str | None = Field(None, description="Target language code (M2M100, NLLB, mBART).")
    engine: EngineName = "hf"
    beam: int = Field(1, ge=1, le=16, description="1 is greedy decoding.")
    max_batch_tokens: int = Field(4096, ge=64, description="Padded source tokens per batch.")
    max_length_factor: float = Field(2.0, gt=0, description="Decode cap: factor * source tokens.")
    max_length_offset: int = Field(10, ge=0, description="Decode cap: + offset tokens.")
    compute_type: ComputeType = "auto"
    # A shard is the unit of leasing, retry and resume, and the pool its translator sorts into
    # batches: HF generate on a CPU ran the bench's alpaca shards 1.9x slower than one call at
    # 4,000 tokens and 1.18x at 32,000 (ct2, which drops finished rows, barely cares).
    shard_tokens: int = Field(
        32000, ge=16, description="Most estimated source tokens per shard; the last are smaller."
    )
    on_error: OnError = "keep-source"
    cpu_translators_per_node: int = Field(1, ge=0, le=64)
    gpus: int = Field(0, ge=0, description="GPUs to ask Ray's autoscaler for while work is left.")
    threads: int | None = Field(None, ge=1, description="Torch threads per CPU translator.")
    lease_ttl_s: float = Field(60.0, gt=0)
    max_attempts: int = Field(3, ge=1, description="Failed attempts before a shard is bisected.")

    @field_validator("fields", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
        return value

    def settings(self) -> dict[str, object]:
        """The decoding and scheduling settings, for the manifest."""
        return self.model_dump(exclude={"input", "output", "model", "fields"})

    def default_job_id(self, input_fingerprint: str) -> str:
        """A job id derived from the spec and the input's content, so rerunning a command resumes it."""
        canonical = json.dumps(self.model_dump(), sort_keys=True) + input_fingerprint
        return "job-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes: a job is resumed only over the same input."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stored_spec(spec: JobSpec, input_sha256: str) -> dict[str, object]:
    """The spec as the job store keeps it: with the input's fingerprint, so a resume checks it."""
    return {**spec.model_dump(), "input_sha256": input_sha256}


def spec_from_store(stored: dict[str, object]) -> tuple[JobSpec, str]:
    fields = dict(stored)
    input_sha256 = str(fields.pop("input_sha256", ""))
    return JobSpec(**fields), input_sha256
