"""A job's specification: what to translate, with what, and how. Shared by the CLI, the REST API and the cluster."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from mtfleet.data.patterns import MAX_PATTERNS, check_glossary, compile_patterns

EngineName = Literal["hf", "ct2", "reverse"]
# Where jobs keep their store and work files unless told otherwise (a folder of the working dir).
DEFAULT_STATE_DIR = Path(".mtfleet")
Preprocessor = Literal["indictrans"]
OnError = Literal["keep-source", "fail"]
OnFlag = Literal["keep", "source", "drop-row"]
ComputeType = Literal["auto", "int8", "int8_float16", "int8_float32", "float16", "float32"]
# Bounds on what a client may send: long enough for any real job, short enough to store and log.
PATH_CHARS = 4096
LANGUAGE_CHARS = 32
FIELDS = 256
FIELD_CHARS = 1024
MAX_GPUS = 64
MAX_THREADS = 1024
MIN_LEASE_TTL_S = 5.0
MAX_LENGTH_FACTOR = 16.0
MAX_LENGTH_OFFSET = 1024
MAX_TARGETS = 64
MAX_BATCH_TOKENS = 1 << 20
MAX_SHARD_TOKENS = 1 << 24
# The most estimated tokens of a shard sized to the fleet (`plan.ShardSizing`): a translator holds
# its segments, assembly its translations, and a lost lease loses its work.
FLEET_MOST_TOKENS = 256_000
MAX_ATTEMPTS = 100
# A target's code goes into its output path: letters, then parts of letters and digits after _ or -
# (de, eng_Latn, zh-Hans, de_DE), never a separator or a dot.
LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,8}(?:[_-][A-Za-z0-9]{1,8}){0,3}")
# Where each target language's code goes in the output path of a job with several targets.
TARGET_PLACEHOLDER = "{tgt_lang}"
FieldPath = Annotated[str, StringConstraints(max_length=FIELD_CHARS)]
LanguageCode = Annotated[str, StringConstraints(min_length=1, max_length=LANGUAGE_CHARS)]
# Settings that decide how a job runs, not what it writes: a job resumes with other values of them.
RUN_SETTINGS = frozenset(
    {
        "cpu_translators_per_node",
        "gpus",
        "gpus_per_translator",
        "threads",
        "lease_ttl_s",
        "speculative_tail",
        "overwrite",
        "keep_warm_s",
        "keep_work",
        "memory",
        "memory_max_gb",
    }
)
# How long a long-lived cluster (`--address`, `mtfleet serve`) keeps an idle translator's engine
# loaded for the next job of the same model; a local cluster ends with its command, so 0 there.
DEFAULT_KEEP_WARM_S = 300.0
# Settings that came after jobs were first stored: at their defaults they are no part of a job's
# identity, so a job stored before them keeps its id, resumes, and may replace its own output.
LATER_SETTINGS = {"trust_remote_code": False, "preprocessor": None, "checks": True}
# Shards sized to the fleet (shard_tokens None) came after jobs stored with the fixed default of
# 32,000: a job's identity names it so, and a job stored before resumes with its own shards.
FIXED_SHARD_TOKENS = 32000


class JobSpec(BaseModel):
    """Everything that decides a job's output; two equal specs over the same input make the same bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str = Field(
        min_length=1,
        max_length=PATH_CHARS,
        description="Dataset path: .json, .jsonl, .csv or .parquet.",
    )
    output: str = Field(
        min_length=1,
        max_length=PATH_CHARS,
        description="Output path; its extension picks the format.",
    )
    model: str = Field(
        min_length=1, max_length=PATH_CHARS, description="Hugging Face model directory or hub id."
    )
    fields: list[FieldPath] = Field(
        min_length=1, max_length=FIELDS, description="Field paths: name, a.b, list[].name."
    )
    src_lang: str | None = Field(
        None, max_length=LANGUAGE_CHARS, description="Source language code (M2M100, NLLB, mBART)."
    )
    # One target is a string, as jobs stored before several targets have it (their ids stay).
    tgt_lang: LanguageCode | list[LanguageCode] | None = Field(
        None,
        description="Target language code (M2M100, NLLB, mBART), or several (a list or a comma "
        "string) translated in one job: the output path then holds {tgt_lang}.",
    )
    engine: EngineName = "hf"
    beam: int = Field(1, ge=1, le=16, description="1 is greedy decoding.")
    max_batch_tokens: int = Field(
        4096, ge=64, le=MAX_BATCH_TOKENS, description="Padded source tokens per batch."
    )
    max_length_factor: float = Field(
        2.0, gt=0, le=MAX_LENGTH_FACTOR, description="Decode cap: factor * source tokens."
    )
    max_length_offset: int = Field(
        10, ge=0, le=MAX_LENGTH_OFFSET, description="Decode cap: + offset tokens."
    )
    compute_type: ComputeType = "auto"
    # A shard is the unit of leasing, retry and resume, and the pool its translator sorts into
    # batches: HF generate on a CPU ran the bench's alpaca shards 1.9x slower than one call at
    # 4,000 tokens and 1.18x at 32,000 (ct2, which drops finished rows, barely cares). None: the
    # planner sizes them to the translators the job has when it is planned (`plan.ShardSizing`).
    shard_tokens: int | None = Field(
        None,
        ge=16,
        le=MAX_SHARD_TOKENS,
        description="Most estimated source tokens per shard; the last are smaller. By default "
        "sized to the fleet when the job is planned: as large as its translators can share "
        f"evenly (one translator: no small ones at the end), at most {FLEET_MOST_TOKENS:,}.",
    )
    on_error: OnError = "keep-source"
    protect: list[str] = Field(
        default_factory=list,
        max_length=MAX_PATTERNS,
        description="Regular expressions (RE2 syntax: no lookarounds or backreferences) whose "
        "matches are kept verbatim.",
    )
    glossary: dict[str, str] = Field(
        default_factory=dict, description="Source term -> the target term the output must hold."
    )
    on_flag: OnFlag = Field(
        "keep", description="A unit still flagged after its retry: keep it, its source, or no row."
    )
    checks: bool = Field(
        True,
        description="Check every translation and translate a flagged unit once more; off, "
        "nothing is checked or retried (faster, as the model alone) and the manifest says so.",
    )
    cpu_translators_per_node: int = Field(
        1,
        ge=0,
        le=64,
        description="CPU translators per node, on GPU nodes with the cores GPU translators leave.",
    )
    gpus: int = Field(
        0, ge=0, le=MAX_GPUS, description="GPUs to ask Ray's autoscaler for while work is left."
    )
    gpus_per_translator: int = Field(
        1,
        ge=1,
        le=MAX_GPUS,
        description="GPUs of one node each GPU translator splits its model over.",
    )
    keep_warm_s: float | None = Field(
        None,
        ge=0,
        le=24 * 3600,
        description="Seconds an idle translator keeps its engine loaded for the next job of the "
        f"same model; default {DEFAULT_KEEP_WARM_S:.0f} on a long-lived cluster, 0 on a local one.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=MAX_THREADS,
        description="Torch threads per CPU translator; at most the CPUs of the largest node.",
    )
    # A lease renewed every ttl/3 needs a few seconds: shorter ones expire while a shard runs.
    lease_ttl_s: float = Field(60.0, ge=MIN_LEASE_TTL_S, le=24 * 3600)
    speculative_tail: bool = Field(
        True,
        description="Once no shard is pending, an idle translator backs up the oldest leased "
        "shard whose translator is expected to finish later; the first to complete wins.",
    )
    max_attempts: int = Field(
        3, ge=1, le=MAX_ATTEMPTS, description="Failed attempts before a shard is bisected."
    )
    overwrite: bool = Field(
        False, description="Replace an existing output that is not this job's own earlier output."
    )
    keep_work: bool = Field(
        False,
        description="Keep the job's units and parts once it has succeeded (they are removed "
        "by default; its output, manifest and record stay).",
    )
    memory: bool = Field(
        True,
        description="Take the segments the store's translation memory holds for this model and "
        "settings from it, translate only the others, and keep their translations there.",
    )
    memory_max_gb: float = Field(
        10.0,
        gt=0,
        le=1024,
        description="The translation memory's size (GB): past it, once the job ends, the least "
        "recently used segments are forgotten.",
    )
    trust_remote_code: bool = Field(
        False,
        description="Load a model that brings code of its own (auto_map in its config.json), "
        "such as IndicTrans2; only for a model you trust.",
    )
    preprocessor: Preprocessor | None = Field(
        None,
        description="Text processing around the model: indictrans, IndicTrans2's IndicProcessor "
        "(IndicTransToolkit), with FLORES codes such as eng_Latn and mar_Deva.",
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
        return value

    @field_validator("tgt_lang", mode="before")
    @classmethod
    def _split_targets(cls, value: object) -> object:
        if isinstance(value, str) and "," in value:
            value = value.split(",")
        if isinstance(value, list):
            codes = [str(code).strip() for code in value if str(code).strip()]
            if len(codes) > MAX_TARGETS:
                raise ValueError(f"at most {MAX_TARGETS} target languages, not {len(codes)}")
            return codes[0] if len(codes) == 1 else codes or None
        return value

    @field_validator("tgt_lang")
    @classmethod
    def _check_targets(cls, value: object, info: ValidationInfo) -> object:
        targets = value if isinstance(value, list) else [value]
        for code in targets:
            if code is not None and not LANGUAGE_CODE.fullmatch(code):
                raise ValueError(
                    f"{code!r} is not a language code (letters, then letters and digits after _ "
                    "or -, such as de, eng_Latn or zh-Hans)"
                )
        repeated = sorted({code for code in targets if targets.count(code) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} is given more than once")
        source = info.data.get("src_lang")
        if source is not None and source in targets:
            raise ValueError(f"{source} is also the source language (src_lang)")
        output = info.data.get("output", "")
        if len(targets) > 1 and TARGET_PLACEHOLDER not in output:
            raise ValueError(
                f"several target languages need {TARGET_PLACEHOLDER} in the output path "
                f"(such as out/data.{{tgt_lang}}.jsonl), and {output} has none"
            )
        return value

    @field_validator("checks")
    @classmethod
    def _checks_for_on_flag(cls, value: bool, info: ValidationInfo) -> bool:
        on_flag = info.data.get("on_flag", "keep")
        if not value and on_flag != "keep":
            raise ValueError(
                f"on_flag {on_flag} acts on what the health checks flag, so they cannot be off"
            )
        return value

    @field_validator("protect")
    @classmethod
    def _compile_protect(cls, patterns: list[str]) -> list[str]:
        compile_patterns(patterns)
        return patterns

    @field_validator("glossary")
    @classmethod
    def _check_glossary(cls, glossary: dict[str, str]) -> dict[str, str]:
        check_glossary(glossary)
        return glossary

    def targets(self) -> list[str | None]:
        """The target languages, in the order given: [None] for a model that takes none."""
        if isinstance(self.tgt_lang, list):
            return list(self.tgt_lang)
        return [self.tgt_lang]

    def output_for(self, tgt_lang: str | None) -> str:
        """The output path of one target language: {tgt_lang} in the path replaced by it."""
        return self.output.replace(TARGET_PLACEHOLDER, tgt_lang or "")

    def for_target(self, tgt_lang: str | None) -> JobSpec:
        """The spec of one target language of this job: its output, its manifest, its checks."""
        return self.model_copy(update={"tgt_lang": tgt_lang, "output": self.output_for(tgt_lang)})

    def settings(self) -> dict[str, object]:
        """The decoding and scheduling settings, for the manifest."""
        return self.model_dump(exclude={"input", "output", "model", "fields"})

    def identity(self) -> dict[str, object]:
        """What makes a job the job it is: every setting that changes its output."""
        return _without_later_defaults(self.model_dump(exclude=set(RUN_SETTINGS)))

    def default_job_id(self, input_key: str) -> str:
        """A job id derived from the spec's identity and the input, so rerunning a command resumes it."""
        canonical = json.dumps(self.identity(), sort_keys=True) + input_key
        return "job-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]


def memory_settings(spec: JobSpec) -> dict[str, object]:
    """The job's settings that change a segment's translation beside its engine's own: the
    languages, what is protected or fixed by the glossary, and whether flagged segments were
    translated again (the translation memory keys on them with the engine's signature)."""
    return {
        "src_lang": spec.src_lang,
        "tgt_lang": spec.tgt_lang,
        "protect": spec.protect,
        "glossary": spec.glossary,
        "checks": spec.checks,
        "preprocessor": spec.preprocessor,
    }


def input_key(paths: list[Path]) -> str:
    """Names the input's content without reading it: each file's path, size and modification time.

    The bytes themselves are hashed once, in the planning pass, and checked again by assembly.
    """
    digest = hashlib.sha256()
    for path in paths:
        status = path.stat()
        digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def fingerprint(path: str | Path) -> str:
    """sha256 of a file's bytes: a job is resumed only over the same input."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# What a stored spec holds beside the user's spec (see `stored_spec`); views leave them out.
STORED_ONLY = ("input_key", "data_root")


def stored_spec(spec: JobSpec, input_key: str, data_root: Path | None = None) -> dict[str, object]:
    """The spec as the job store keeps it: with the input's key, so a resume checks it, and the
    data root the API confined its paths to (None from the CLI), so the output is checked again
    when it is written."""
    return {
        **spec.model_dump(),
        "input_key": input_key,
        "data_root": None if data_root is None else str(data_root),
    }


def stored_identity(stored: Mapping[str, object]) -> dict[str, object]:
    """The identity of a stored spec: two submissions are one job when theirs are equal."""
    return _without_later_defaults(
        {
            key: value
            for key, value in stored.items()
            if key not in RUN_SETTINGS and key != "data_root"
        }
    )


def _without_later_defaults(settings: dict[str, object]) -> dict[str, object]:
    kept = {
        key: value
        for key, value in settings.items()
        if key not in LATER_SETTINGS or value != LATER_SETTINGS[key]
    }
    # a later default too, though it replaced a value: named as the one it replaced
    if kept.get("shard_tokens", FIXED_SHARD_TOKENS) is None:
        kept["shard_tokens"] = FIXED_SHARD_TOKENS
    return kept


def spec_from_store(stored: Mapping[str, object]) -> tuple[JobSpec, str, Path | None]:
    """The spec, the input's key and the data root (None: not submitted over the API)."""
    fields = dict(stored)
    key = str(fields.pop("input_key", ""))
    root = fields.pop("data_root", None)
    return JobSpec(**fields), key, None if root is None else Path(str(root))
