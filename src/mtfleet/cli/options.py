"""Options shared by the commands that describe a job (`translate`, `submit`) or reach a cluster.

A job setting left out is None here, so its default lives in one place: `JobSpec`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mtfleet.spec import FLEET_MOST_TOKENS, JobSpec


def _default(name: str) -> str:
    return f"(default: {JobSpec.model_fields[name].default})"


Model = Annotated[
    str, typer.Option("--model", "-m", help="Model directory or Hugging Face hub id.")
]
Fields = Annotated[
    str, typer.Option("--fields", "-f", help="Comma-separated field paths: a, a.b, a[].b")
]
SrcLang = Annotated[
    str | None,
    typer.Option(
        help="Source language code (M2M100, NLLB, mBART, MADLAD): the model's own (eng_Latn) or "
        "ISO 639 (en, eng), which is mapped to it; or auto: each unit's is detected, and units "
        "already in --tgt-lang are copied."
    ),
]
TgtLang = Annotated[
    str | None,
    typer.Option(
        help="Target language code (M2M100, NLLB, mBART, MADLAD, multi-target Marian): the "
        "model's own (mar_Deva) or ISO 639 (mr, mar), which is mapped to it; or several, "
        "comma-separated, in one job: the output path then holds {tgt_lang} "
        "(out/data.{tgt_lang}.jsonl), one output and manifest per language."
    ),
]
Engine = Annotated[
    str | None,
    typer.Option(
        help=f"hf (transformers), ct2 (CTranslate2) or reverse (a model-free dry run). {_default('engine')}"
    ),
]
Beam = Annotated[int | None, typer.Option(help=f"Beam size; 1 is greedy. {_default('beam')}")]
MaxBatchTokens = Annotated[
    int | None, typer.Option(help=f"Padded source tokens per batch. {_default('max_batch_tokens')}")
]
MaxLengthFactor = Annotated[
    float | None,
    typer.Option(
        help=f"Decode cap: factor x source tokens + offset. {_default('max_length_factor')}"
    ),
]
MaxLengthOffset = Annotated[
    int | None, typer.Option(help=f"Decode cap offset, in tokens. {_default('max_length_offset')}")
]
ComputeType = Annotated[
    str | None,
    typer.Option(
        help=f"ct2: auto, int8, int8_float16, float16, float32. {_default('compute_type')}"
    ),
]
ShardTokens = Annotated[
    int | None,
    typer.Option(
        help="Most estimated source tokens per shard (the unit of leasing, retry and resume); "
        "shards shrink toward the end of a job. Default: sized when the job is planned to the "
        "translators it has then, as large as they can share evenly (one translator: shards "
        f"of the most, the last two halves of the rest), at most {FLEET_MOST_TOKENS:,}."
    ),
]
OnError = Annotated[
    str | None,
    typer.Option(
        help=f"keep-source or fail, for a row that cannot be translated. {_default('on_error')}"
    ),
]
CpuTranslators = Annotated[
    int | None,
    typer.Option(
        help="CPU translators per node; on a GPU node, on the cores its GPU translators leave. "
        f"{_default('cpu_translators_per_node')}"
    ),
]
GpusPerTranslator = Annotated[
    int | None,
    typer.Option(
        help="GPUs of one node each GPU translator splits its model over (a model larger than "
        f"one GPU). {_default('gpus_per_translator')}"
    ),
]
KeepWarm = Annotated[
    float | None,
    typer.Option(
        "--keep-warm",
        help="Seconds idle translators keep their engine loaded for the next job of the same "
        "model. (default: 300 with --address, 0 on a local cluster)",
        show_default=False,
    ),
]
Gpus = Annotated[
    int | None,
    typer.Option(
        help=f"GPUs to ask Ray's autoscaler for while work is left (KubeRay). {_default('gpus')}"
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(help="Torch threads per CPU translator. (default: its share of the node's cores)"),
]
LeaseTtl = Annotated[
    float | None,
    typer.Option(
        help=f"Seconds a shard lease lives without a heartbeat. {_default('lease_ttl_s')}"
    ),
]
SpeculativeTail = Annotated[
    bool | None,
    typer.Option(
        "--speculative-tail/--no-speculative-tail",
        help="Once no shard is pending, let an idle translator back up the shard of a slower one "
        "(the first to complete wins; the output is the same). (default: on)",
        show_default=False,
    ),
]
Overwrite = Annotated[
    bool | None,
    typer.Option(
        "--overwrite",
        help="Replace an existing output that is not this job's own earlier output.",
        show_default=False,
    ),
]
KeepWork = Annotated[
    bool | None,
    typer.Option(
        "--keep-work",
        help="Keep the job's units and parts once it has succeeded (removed by default; the "
        "output, manifest and job record stay).",
        show_default=False,
    ),
]
TrustRemoteCode = Annotated[
    bool | None,
    typer.Option(
        "--trust-remote-code",
        help="Load a model that brings code of its own (auto_map), such as IndicTrans2; "
        "only a model you trust.",
        show_default=False,
    ),
]
Preprocessor = Annotated[
    str | None,
    typer.Option(
        help="indictrans: IndicTrans2's IndicProcessor before and after the model "
        "(pip install indictranstoolkit; FLORES codes such as eng_Latn, mar_Deva)."
    ),
]
JobId = Annotated[
    str | None,
    typer.Option(
        help="Job id. (default: derived from the settings and the input, so a rerun resumes)"
    ),
]
StateDir = Annotated[Path, typer.Option(help="Job store (SQLite) and work files.")]
Store = Annotated[str | None, typer.Option(help="Job store URL, e.g. postgresql://user@host/db.")]
Address = Annotated[
    str | None, typer.Option(help="Ray cluster: auto or ray://host:10001. (default: a local one)")
]


def job_settings(**values: Any) -> dict[str, Any]:
    """The settings the user gave; the rest keep JobSpec's defaults."""
    return {name: value for name, value in values.items() if value is not None}


Protect = Annotated[
    list[str] | None,
    typer.Option(
        "--protect",
        help="Regular expression whose matches are kept verbatim (repeatable); "
        "<dnt>...</dnt> spans always are, without their tags.",
        show_default=False,
    ),
]
Glossary = Annotated[
    Path | None,
    typer.Option(help="TSV of 'source term<TAB>target term': terms the output must hold."),
]
Checks = Annotated[
    bool | None,
    typer.Option(
        "--checks/--no-checks",
        help="Check every translation and translate a flagged unit once more; --no-checks runs "
        "the model alone, faster, and the manifest says nothing was checked. (default: on)",
        show_default=False,
    ),
]
Memory = Annotated[
    bool | None,
    typer.Option(
        "--memory/--no-memory",
        help="Take the segments the translation memory holds for this model and settings from "
        "it and keep the others' translations there. (default: on)",
        show_default=False,
    ),
]
MemoryMaxGb = Annotated[
    float | None,
    typer.Option(
        "--tm-max-gb",
        help="The translation memory's size in GB; past it, the least recently used segments "
        "are forgotten when a job ends. (default: 10)",
        show_default=False,
    ),
]
OnFlag = Annotated[
    str | None,
    typer.Option(
        help="keep, source or drop-row: what the output holds for a unit still flagged after "
        f"its retry (reported in the manifest either way). {_default('on_flag')}"
    ),
]
