"""The admin console: `mtfleet serve`, and the commands that submit, watch and steer jobs over it.

Every command but `serve` talks to the API at --api (or MTFLEET_API) with the token in
MTFLEET_API_TOKEN; `register(app)` adds them to the `mtfleet` command.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Column, Table
from rich.text import Text

from mtfleet.api.client import Client, Job
from mtfleet.cli import options
from mtfleet.cli.output import console, fail, out
from mtfleet.errors import MtfleetError
from mtfleet.spec import DEFAULT_KEEP_WARM_S, DEFAULT_STATE_DIR
from mtfleet.store.states import TERMINAL, JobState

Api = Annotated[
    str,
    typer.Option("--api", envvar="MTFLEET_API", help="The mtfleet API; token: MTFLEET_API_TOKEN."),
]
JobId = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]
Poll = Annotated[float, typer.Option(help="Seconds between two looks at the job.")]


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputFormat = Annotated[
    Format, typer.Option("--output", help="table for people; json (the API's answer) for scripts.")
]
DEFAULT_API = "http://127.0.0.1:8000"
STATE_STYLES = {
    JobState.PLANNING: "cyan",
    JobState.QUEUED: "cyan",
    JobState.RUNNING: "blue",
    JobState.PAUSED: "yellow",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
}


jobs_app = typer.Typer(
    help="List the jobs, oldest first; `mtfleet jobs rm JOB...` deletes finished ones.",
    rich_markup_mode=None,
)


def register(app: typer.Typer) -> None:
    for command in (serve, submit, status, pause, resume, cancel, retry, nodes, prune):
        app.command()(command)
    app.add_typer(jobs_app, name="jobs")


def serve(
    data_root: Annotated[
        Path, typer.Option(help="Every dataset, model and output a job names must lie under it.")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    state_dir: options.StateDir = DEFAULT_STATE_DIR,
    store: options.Store = None,
    address: options.Address = None,
    allow_remote_code: Annotated[
        bool,
        typer.Option(
            "--allow-remote-code",
            help="Accept jobs with trust_remote_code: models that run code of their own.",
        ),
    ] = False,
    allow_hardlinks: Annotated[
        bool,
        typer.Option(
            "--allow-hardlinks",
            help="Accept inputs with other hard links, which may be files outside the data root.",
        ),
    ] = False,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="Serve without a token, on 127.0.0.1 only.")
    ] = False,
    max_body_bytes: Annotated[
        int, typer.Option(help="Larger request bodies are refused (413) unread.")
    ] = 1024 * 1024,
    max_jobs: Annotated[
        int, typer.Option(help="Most active (planning, queued, running, paused) jobs; 429 beyond.")
    ] = 16,
    max_gpus: Annotated[
        int, typer.Option(help="Most GPUs one job may ask the autoscaler for.")
    ] = 64,
    keep_warm: Annotated[
        float,
        typer.Option(
            "--keep-warm",
            help="Seconds idle translators keep their engine loaded for the next job of the same "
            "model, for jobs that do not say.",
        ),
    ] = DEFAULT_KEEP_WARM_S,
    retain: Annotated[
        str | None,
        typer.Option(
            help="Delete finished jobs (work files and records, never outputs) that have not "
            "changed for this long, such as 30d; checked every 5 minutes, or every --retain where "
            "shorter. (default: kept)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the REST API (token: MTFLEET_API_TOKEN, 32 characters or more; one is generated and
    printed when unset) for the jobs of a Ray cluster."""
    from mtfleet.api.server import LOOPBACK, ServerSettings
    from mtfleet.api.server import serve as serve_api

    retain_s = _retain_s(retain)
    settings = ServerSettings(
        data_root=data_root,
        token=_api_token(insecure_no_auth),
        state_dir=state_dir,
        store_url=store,
        address=address,
        allow_remote_code=allow_remote_code,
        allow_hardlinks=allow_hardlinks,
        insecure_no_auth=insecure_no_auth,
        max_body_bytes=max_body_bytes,
        max_jobs=max_jobs,
        max_gpus=max_gpus,
        keep_warm_s=keep_warm,
        retain_s=retain_s,
    )
    if insecure_no_auth and host != LOOPBACK:
        console.print(f"note: without a token the API listens on {LOOPBACK} only, not {host}.")
    try:
        serve_api(settings, host=host, port=port)
    except MtfleetError as error:
        raise fail(error) from None


def _retain_s(retain: str | None) -> float | None:
    """--retain in seconds; None when finished jobs are kept."""
    from mtfleet.cluster.retention import parse_age

    try:
        return None if retain is None else parse_age(retain, "--retain")
    except MtfleetError as error:
        raise fail(error) from None


def _api_token(insecure_no_auth: bool) -> str | None:
    """MTFLEET_API_TOKEN, or a new token printed for the user; None with --insecure-no-auth."""
    from mtfleet.api.server import generate_token

    # Out of the environment before Ray starts: no worker this process starts inherits it.
    token = os.environ.pop("MTFLEET_API_TOKEN", None) or None
    if token is None and not insecure_no_auth:
        token = generate_token()
        console.print(
            f"MTFLEET_API_TOKEN is not set; this server's token is {token}", soft_wrap=True
        )
    return token


def submit(
    input: Annotated[str, typer.Argument(help="Dataset, under the server's data root.")],
    model: options.Model,
    fields: options.Fields,
    output: Annotated[
        str,
        typer.Option(
            "--output", "-o", help="Output, under the data root; its extension picks the format."
        ),
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
    protect: options.Protect = None,
    glossary: options.Glossary = None,
    on_flag: options.OnFlag = None,
    checks: options.Checks = None,
    trust_remote_code: options.TrustRemoteCode = None,
    preprocessor: options.Preprocessor = None,
    job_id: options.JobId = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Follow the job live until it ends.")
    ] = False,
    poll: Poll = 1.0,
    api: Api = DEFAULT_API,
) -> None:
    """Submit a job to translate FIELDS of INPUT with MODEL into OUTPUT; prints its id.

    Settings left out take the server's defaults, those of `mtfleet translate`; a --glossary file
    is read here and sent with the job.
    """
    from mtfleet.health import read_glossary

    try:
        terms = read_glossary(glossary) if glossary else None
    except MtfleetError as error:
        raise fail(error) from None
    settings = options.job_settings(
        input=input, model=model, fields=fields, output=output, src_lang=src_lang,
        tgt_lang=tgt_lang, engine=engine, beam=beam, max_batch_tokens=max_batch_tokens,
        max_length_factor=max_length_factor, max_length_offset=max_length_offset,
        compute_type=compute_type, shard_tokens=shard_tokens, on_error=on_error,
        cpu_translators_per_node=cpu_translators_per_node, gpus=gpus, threads=threads,
        gpus_per_translator=gpus_per_translator, keep_warm_s=keep_warm,
        lease_ttl_s=lease_ttl, speculative_tail=speculative_tail, overwrite=overwrite, keep_work=keep_work,
        memory=memory, memory_max_gb=tm_max_gb,
        protect=protect, glossary=terms, on_flag=on_flag, checks=checks, job_id=job_id,
        trust_remote_code=trust_remote_code,
        preprocessor=preprocessor,
    )  # fmt: skip
    with _api(api) as client:
        job = client.submit(**settings)
        out.print(job.id, highlight=False)
        if watch:
            _watch_to_end(job, poll)


@jobs_app.callback(invoke_without_command=True)
def jobs(ctx: typer.Context, api: Api = DEFAULT_API, output: OutputFormat = Format.TABLE) -> None:
    """List the jobs, oldest first; `mtfleet jobs rm JOB...` deletes finished ones."""
    from mtfleet.cluster.retention import format_bytes

    if ctx.invoked_subcommand is not None:
        return
    with _api(api) as client:
        found = client.jobs()
    if output is Format.JSON:
        _print_json([job.last for job in found])
        return
    # Ids are pasted into other commands, so they are never cut: the other columns give way.
    table = Table(
        Column("job", no_wrap=True),
        Column("state", no_wrap=True),
        Column("rows", overflow="fold"),
        Column("segments", overflow="fold"),
        Column("input", overflow="fold"),
        Column("output", overflow="fold"),
        Column("work", overflow="fold"),
        Column("updated", overflow="fold"),
        box=None,
    )
    for job in found:
        view = job.last
        table.add_row(
            view["id"],
            _state(view["state"]),
            f"{view['rows_done']}/{view['rows_total']}",
            str(view["segments_done"]),
            _shown_path(view["input"], view["relative"]["input"]),
            _shown_path(view["output"], view["relative"]["output"]),
            format_bytes(view["work_bytes"]),
            f"{_duration(time.time() - view['updated_at'])} ago",
        )
    out.print(table if found else "no jobs")


@jobs_app.command("rm")
def remove(
    job_ids: Annotated[
        list[str], typer.Argument(help="The finished jobs to delete.", show_default=False)
    ],
    api: Api = DEFAULT_API,
) -> None:
    """Delete finished jobs: their work files and records on the server, never their outputs.

    An active job is refused: cancel it first.
    """
    from mtfleet.cluster.retention import format_bytes

    with _api(api) as client:
        for job_id in job_ids:
            deleted = client.job(job_id).delete()
            out.print(
                f"{deleted['id']} deleted ({format_bytes(deleted['work_bytes'])} freed)",
                highlight=False,
            )


def prune(
    older_than: Annotated[
        str,
        typer.Option(
            help="Delete finished jobs that have not changed for this long: 90m, 12h, 7d, 2w.",
            show_default=False,
        ),
    ],
    state: Annotated[
        str,
        typer.Option(help="Only jobs in these finished states, such as failed,cancelled."),
    ] = "succeeded,failed,cancelled",
    state_dir: options.StateDir = DEFAULT_STATE_DIR,
    store: options.Store = None,
) -> None:
    """Delete the finished jobs of a state dir (work files and records, never outputs) older
    than --older-than; active jobs are never touched. `mtfleet serve --retain` does it on its
    own."""
    from mtfleet.cluster.job import store_url_for
    from mtfleet.cluster.retention import (
        format_bytes,
        parse_age,
        parse_states,
        prune_jobs,
        work_bytes,
    )
    from mtfleet.store import JobStore

    try:
        older_than_s = parse_age(older_than)
        states = parse_states(state)
        state_dir = state_dir.expanduser().resolve()
        with JobStore(store_url_for(state_dir, store)) as jobs_store:
            sizes = {r.id: work_bytes(state_dir / "jobs" / r.id) for r in jobs_store.jobs.all()}
            deleted = prune_jobs(jobs_store, state_dir, older_than_s, states)
    except MtfleetError as error:
        raise fail(error) from None
    for record in deleted:
        out.print(f"{record.id} {record.state} deleted", highlight=False)
    freed = sum(sizes.get(record.id, 0) for record in deleted)
    jobs_deleted = f"{len(deleted)} job" + ("" if len(deleted) == 1 else "s")
    out.print(f"{jobs_deleted} deleted, {format_bytes(freed)} freed", highlight=False)


def status(
    job_id: JobId,
    watch: Annotated[bool, typer.Option("--watch", help="A live view until the job ends.")] = False,
    events: Annotated[
        bool, typer.Option("--events", help="Its history: who did what to it, and when.")
    ] = False,
    poll: Poll = 1.0,
    api: Api = DEFAULT_API,
    output: OutputFormat = Format.TABLE,
) -> None:
    """Show a job: progress, rate, ETA, translators and throughput per node, failures.

    With --output json, one JSON document; with --watch too, one line of JSON per look.
    """
    with _api(api) as client:
        job = client.job(job_id)
        if events:
            history = job.events()
            if output is Format.JSON:
                _print_json(history)
            else:
                out.print(render_events(history))
        elif output is Format.JSON and watch:
            _stream_to_end(job, poll)
        elif output is Format.JSON:
            _print_json(job.last)
        elif watch:
            _watch_to_end(job, poll)
        else:
            out.print(render_job(job.last))


def pause(job_id: JobId, api: Api = DEFAULT_API) -> None:
    """Pause a job: no new leases; leased shards finish."""
    _steer(api, job_id, Job.pause)


def resume(job_id: JobId, api: Api = DEFAULT_API) -> None:
    """Resume a paused job."""
    _steer(api, job_id, Job.resume)


def cancel(job_id: JobId, api: Api = DEFAULT_API) -> None:
    """Cancel a job; its finished parts are kept, so submitting it again goes on from them."""
    _steer(api, job_id, Job.cancel)


def retry(job_id: JobId, api: Api = DEFAULT_API) -> None:
    """Translate the failed rows of a succeeded job again, into the same output.

    Only those rows run; the output is assembled again from every shard's part, so the job must
    have been submitted with --keep-work (its parts are removed when it succeeds otherwise).
    """
    _steer(api, job_id, Job.retry)


def nodes(api: Api = DEFAULT_API, output: OutputFormat = Format.TABLE) -> None:
    """List the cluster's nodes: state, devices, and the translators on each."""
    with _api(api) as client:
        found = client.nodes()
    if output is Format.JSON:
        _print_json(found)
        return
    # node ids are shown short, as Ray's dashboard does; --output json has them whole
    table = Table(
        Column("node", no_wrap=True),
        "address",
        Column("state", no_wrap=True),
        "cpus",
        "gpus",
        Column("translators", overflow="fold"),
        box=None,
    )
    for node in found:
        table.add_row(
            node["node_id"][:12] + (" (head)" if node["head"] else ""),
            node["address"],
            _state(node["state"]),
            f"{node['cpus']:g}",
            f"{node['gpus']:g}",
            ", ".join(f"{t['device']} ({t['job_id']})" for t in node["translators"]) or "-",
        )
    out.print(table)


def _eta(eta_s: float | None, planning: bool) -> str:
    """`ETA 0:05:02`, or `planning` while the job's input is still planned: the rows cut so far
    are not the job's."""
    if planning:
        return "planning"
    return f"ETA {_duration(eta_s)}" if eta_s is not None else "ETA -"


def render_job(view: dict[str, Any]) -> RenderableType:
    """One job as the console shows it, once or live."""
    from mtfleet.cluster.retention import format_bytes

    title = Text.assemble((view["id"], "bold"), "  ", _state(view["state"]))
    title.append(f"  {view['model']}  {view['input']} -> {view['output']}")
    rate, eta = view["segments_per_s"], view["eta_s"]
    bar = Table.grid(padding=(0, 2))
    bar.add_row(
        ProgressBar(total=max(view["rows_total"], 1), completed=view["rows_done"], width=40),
        f"{view['rows_done']}/{view['rows_total']} rows",
        f"{view['segments_done']} segments",
        f"{rate:.1f} seg/s" if rate is not None else "- seg/s",
        _eta(eta, view.get("planning", False)),
    )
    shards = ", ".join(f"{count} {state}" for state, count in view["shards"].items())
    counters = "".join(f"   {name} {value}" for name, value in sorted(view["counters"].items()))
    parts: list[RenderableType] = [
        title,
        bar,
        Text(f"shards: {shards}{counters}", style="dim"),
        Text(f"work files: {format_bytes(view['work_bytes'])}", style="dim"),
    ]
    if len(view.get("targets", [])) > 1:
        parts.append(_target_table(view))
    if view["nodes"]:
        parts.append(_node_table(view))
    if view["failures"]:
        failures = Table("failed rows", "error", box=None, style="red")
        for failure in view["failures"]:
            first, last = failure["row_start"], failure["row_end"] - 1
            failures.add_row(
                str(first) if first == last else f"{first}-{last}", failure["error"] or ""
            )
        parts.append(failures)
    health = view.get("health")
    if health is not None:
        parts.append(
            Text(
                f"checks: {_flagged(health)}", style="yellow" if health["units_flagged"] else "dim"
            )
        )
    if view["error"]:
        parts.append(Text(f"error: {view['error']}", style="bold red"))
    return Group(*parts)


def render_events(history: list[dict[str, Any]]) -> RenderableType:
    """A job's history: when, what, who, and what it says."""
    if not history:
        return Text("no events")
    table = Table(
        Column("when", no_wrap=True),
        Column("event", no_wrap=True),
        Column("by", overflow="fold"),
        Column("", overflow="fold"),
        box=None,
    )
    for event in history:
        table.add_row(
            datetime.fromtimestamp(event["at"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
            event["kind"],
            event["actor"] or "-",
            event["message"],
        )
    return table


def _flagged(health: dict[str, Any]) -> str:
    """What the health checks found, in one line."""
    if health.get("checks") == "off":
        return "off"
    counts = ", ".join(f"{check} {count}" for check, count in health["per_check"].items())
    return (
        f"{health['units_flagged']} of {health['units_checked']} units flagged"
        + (f" ({counts})" if counts else "")
        + " - mtfleet inspect OUT, or GET /v1/jobs/ID/flags"
    )


def _target_table(view: dict[str, Any]) -> Table:
    """Per target language: its output and what is translated into it."""
    table = Table("language", "units", "segments", "output", box=None)
    for target in view["targets"]:
        table.add_row(
            str(target["tgt_lang"]),
            f"{target['units_done']}/{target['units_total']}",
            str(target["segments_done"]),
            _short_path(target["output"]),
        )
    return table


def _node_table(view: dict[str, Any]) -> Table:
    """Per node: its translators' devices now, and the shards, segments and rate they delivered."""
    devices: dict[str, list[str]] = {}
    for translator in view["translators"]:
        devices.setdefault(translator["node_id"], []).append(translator["device"])
    table = Table("node", "translators", "shards done", "segments", "seg/s", box=None)
    for node in view["nodes"]:
        throughput = node["segments_per_s"]
        table.add_row(
            node["node_id"][:12],
            ", ".join(devices.get(node["node_id"], [])) or "-",
            str(node["shards_done"]),
            str(node["segments_done"]),
            f"{throughput:.1f}" if throughput is not None else "-",
        )
    return table


@contextmanager
def _api(url: str) -> Iterator[Client]:
    """A client of the API; any error it raises ends the command with its one sentence."""
    try:
        with Client(url, name="cli") as client:
            yield client
    except MtfleetError as error:
        raise fail(error) from None


def _steer(api: str, job_id: str, action: Any) -> None:
    with _api(api) as client:
        view = action(client.job(job_id))
    out.print(Text.assemble(view["id"], " ", _state(view["state"])))


def _watch_to_end(job: Job, poll_s: float) -> None:
    """A live view of the job until it ends; exits with 2 unless it succeeded."""
    view = job.last
    with Live(render_job(view), console=out, refresh_per_second=4) as live:
        while view["state"] not in TERMINAL:
            time.sleep(poll_s)
            view = job.status()
            live.update(render_job(view))
    _end(view)


def _stream_to_end(job: Job, poll_s: float) -> None:
    """One line of JSON per look at the job until it ends; exits like `_watch_to_end`."""
    view = job.last
    typer.echo(json.dumps(view))
    while view["state"] not in TERMINAL:
        time.sleep(poll_s)
        view = job.status()
        typer.echo(json.dumps(view))
    _end(view)


def _end(view: dict[str, Any]) -> None:
    """A job that did not succeed ends the command with exit code 2."""
    if view["state"] != JobState.SUCCEEDED:
        raise fail(
            f"Job {view['id']} {view['state']}" + (f": {view['error']}" if view["error"] else ".")
        )


def _print_json(answer: Any) -> None:
    # not through rich, which would wrap long lines at the terminal's width
    typer.echo(json.dumps(answer, indent=2))


def _short_path(path: str, keep: int = 2) -> str:
    """The path's last `keep` parts (the file and its folder), which tell jobs apart in a table."""
    parts = path.split("/")
    return path if len(parts) <= keep + 1 else "…/" + "/".join(parts[-keep:])


def _shown_path(path: str, under_root: str) -> str:
    """A job's path whole and short: relative to this directory where it lies under it (the CLI
    beside the server), else to the server's data root (`under_root`), as the web console has it."""
    here, given = Path.cwd(), Path(path)
    if here != Path(here.anchor) and given.is_relative_to(here):
        return str(given.relative_to(here))
    return under_root


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, "white"))


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(max(seconds, 0))))
