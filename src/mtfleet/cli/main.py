"""The `mtfleet` command: a thin shell over the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mtfleet.cli import console as admin_console
from mtfleet.cli import inspect as inspector
from mtfleet.cli import memory as memory_commands
from mtfleet.cli import models as model_commands
from mtfleet.cli import options
from mtfleet.cli import train as trainer
from mtfleet.cli.output import console, fail, out
from mtfleet.engines.languages import CodeMapping
from mtfleet.errors import Interrupted, MtfleetError
from mtfleet.spec import DEFAULT_STATE_DIR
from mtfleet.store.states import JobState
from mtfleet.verbosity import set_verbose
from mtfleet.wording import option_name

if TYPE_CHECKING:
    from mtfleet.spec import JobSpec

app = typer.Typer(
    name="mtfleet",
    help="Translate whole datasets with neural MT models on every GPU (or CPU) of a Ray cluster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # click's plain help: Rich's tables cut long option names at 80 columns (--max-batch-tok…)
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from mtfleet.manifest import versions

        out.print(versions()["mtfleet"])
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Show Ray's and the Hugging Face Hub's logs (and transformers'), which only "
            "show their errors otherwise.",
        ),
    ] = False,
) -> None:
    """Translate whole datasets with neural MT models on every GPU (or CPU) of a Ray cluster."""
    set_verbose(verbose)


@app.command()
def translate(
    input: Annotated[
        Path, typer.Argument(help="Dataset: .json, .jsonl, .csv or .parquet.", show_default=False)
    ],
    model: options.Model,
    fields: options.Fields,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output path; its extension picks the format.")
    ],
    src_lang: options.SrcLang = None,
    tgt_lang: options.TgtLang = None,
    engine: options.Engine = None,
    beam: options.Beam = None,
    max_batch_tokens: options.MaxBatchTokens = None,
    max_length_factor: options.MaxLengthFactor = None,
    max_length_offset: options.MaxLengthOffset = None,
    compute_type: options.ComputeType = None,
    shard_tokens: options.ShardTokens = None,
    on_error: options.OnError = None,
    protect: options.Protect = None,
    glossary: options.Glossary = None,
    on_flag: options.OnFlag = None,
    checks: options.Checks = None,
    cpu_translators_per_node: options.CpuTranslators = None,
    gpus: options.Gpus = None,
    gpus_per_translator: options.GpusPerTranslator = None,
    keep_warm: options.KeepWarm = None,
    threads: options.Threads = None,
    lease_ttl: options.LeaseTtl = None,
    speculative_tail: options.SpeculativeTail = None,
    overwrite: options.Overwrite = None,
    keep_work: options.KeepWork = None,
    memory: options.Memory = None,
    tm_max_gb: options.MemoryMaxGb = None,
    trust_remote_code: options.TrustRemoteCode = None,
    preprocessor: options.Preprocessor = None,
    job_id: options.JobId = None,
    state_dir: options.StateDir = DEFAULT_STATE_DIR,
    store: options.Store = None,
    address: options.Address = None,
    detach: Annotated[
        bool, typer.Option(help="Start the job on --address and return its id.")
    ] = False,
) -> None:
    """Translate FIELDS of INPUT with MODEL and write the same dataset to OUTPUT, with a manifest."""
    spec = _job_spec(
        input, output, model, fields, glossary,
        src_lang=src_lang, tgt_lang=tgt_lang, engine=engine, beam=beam,
        max_batch_tokens=max_batch_tokens, max_length_factor=max_length_factor,
        max_length_offset=max_length_offset, compute_type=compute_type,
        shard_tokens=shard_tokens, on_error=on_error,
        cpu_translators_per_node=cpu_translators_per_node, gpus=gpus, threads=threads,
        gpus_per_translator=gpus_per_translator, keep_warm_s=keep_warm,
        lease_ttl_s=lease_ttl, speculative_tail=speculative_tail, overwrite=overwrite, keep_work=keep_work,
        memory=memory, memory_max_gb=tm_max_gb,
        protect=protect, on_flag=on_flag, checks=checks,
        trust_remote_code=trust_remote_code, preprocessor=preprocessor,
    )  # fmt: skip
    _run_translation(
        spec, state_dir=state_dir, store_url=store, job_id=job_id, address=address, detach=detach
    )


def _job_spec(
    input: Path, output: Path, model: str, fields: str, glossary: Path | None, **settings: Any
) -> JobSpec:
    """The job the command line describes; a setting it refuses ends the command with one
    sentence naming the option."""
    from pydantic import ValidationError

    from mtfleet.health import read_glossary
    from mtfleet.spec import JobSpec

    try:
        return JobSpec(
            input=str(input),
            output=str(output),
            model=model,
            fields=[fields],
            **options.job_settings(
                **settings, glossary=read_glossary(glossary) if glossary else None
            ),
        )
    except ValidationError as error:
        raise fail(_first_validation_error(error)) from None
    except MtfleetError as error:
        raise fail(error) from None


def _run_translation(
    spec: JobSpec,
    *,
    state_dir: Path,
    store_url: str | None,
    job_id: str | None,
    address: str | None,
    detach: bool,
) -> None:
    """Runs the job with a progress bar and prints its summary (or, detached, its id); a job that
    does not succeed, or Ctrl-C, ends the command with a non-zero exit."""
    from mtfleet.cli.progress import JobProgress
    from mtfleet.cluster.job import run_job

    try:
        with JobProgress(console) as progress:
            result = run_job(
                spec,
                state_dir=state_dir,
                store_url=store_url,
                job_id=job_id,
                address=address,
                detach=detach,
                on_progress=progress.update,
                on_languages=_print_languages,
            )
    except Interrupted as error:
        console.print(f"interrupted: {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=130) from None
    except MtfleetError as error:
        raise fail(error) from None
    if detach:
        out.print(result.job_id)
        return
    if result.state != JobState.SUCCEEDED:
        raise fail(f"Job {result.job_id} {result.state}: {result.error}")
    _print_summary(result.manifest or {})


def _print_languages(mappings: list[CodeMapping]) -> None:
    for mapping in mappings:
        console.print(
            f"{option_name(mapping.field)} {mapping.given} means {mapping.code} for this model",
            highlight=False,
            soft_wrap=True,
        )


def _print_summary(manifest: dict[str, Any]) -> None:
    from mtfleet.manifest import job_manifest_path, manifest_path

    failed = manifest.get("rows_failed", len(manifest["failures"]))
    out.print(
        f"[green]done[/] {manifest['rows']} rows, {manifest['units_translated']} fields translated, "
        f"{manifest['units_skipped_empty']} empty kept, {failed} rows failed, "
        f"{manifest['segments']} segments ({manifest['segments_unique']} unique) in {manifest['elapsed_s']:.1f} s",
        highlight=False,
        soft_wrap=True,
    )
    for target, language in manifest.get("targets", {}).items():
        out.print(f"{target}: {language['output']}", highlight=False, soft_wrap=True)
    if "targets" in manifest:
        path = job_manifest_path(manifest["output"])
    else:
        out.print(f"output:   {manifest['output']}", highlight=False, soft_wrap=True)
        path = manifest_path(manifest["output"])
    out.print(f"manifest: {path}", highlight=False, soft_wrap=True)
    health = manifest.get("health")
    if health is not None:
        out.print(f"checks:   {_checked(health)}", highlight=False, soft_wrap=True)


def _checked(health: dict[str, Any]) -> str:
    if health.get("checks") == "off":
        return "off (--no-checks): nothing was checked or retried"
    return (
        f"{health['units_flagged']} of {health['units_checked']} units flagged "
        f"(mtfleet inspect OUTPUT lists them)"
    )


def _first_validation_error(error: Any) -> str:
    """A setting's problem as one sentence naming its option: `--tgt-lang: 'x y' is not...`."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    message = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not field:
        return f"{message}."
    return f"{option_name(field)}: {message}."


admin_console.register(app)
trainer.register(app)
inspector.register(app)
model_commands.register(app)
memory_commands.register(app)


def main() -> None:
    app(prog_name="mtfleet")


if __name__ == "__main__":
    sys.exit(main())
