"""The driver side of a job: check and submit it, then start its coordinator and follow it to the
end (`control.py` reaches the coordinator); the CLI's run and the API submit through here."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from mtfleet.cluster import tasks
from mtfleet.cluster.assemble import outputs_intact
from mtfleet.cluster.control import (
    JobHandle,
    handle_for,
    report,
    start_coordinator,
    start_job,
    steer,
    stop_coordinator,
    store_url_for,
)
from mtfleet.cluster.plan import UnitReader, check_fields
from mtfleet.cluster.retention import delete_job, parts_missing, retire
from mtfleet.cluster.runtime import connect
from mtfleet.data import check_output_writable as check_file_writable
from mtfleet.data import dataset_files, mirrored_output
from mtfleet.engines import check_model
from mtfleet.engines.languages import CodeMapping, code_mappings
from mtfleet.errors import Interrupted, JobError, OutputError
from mtfleet.manifest import job_manifest_path, manifest_path
from mtfleet.spec import (
    DEFAULT_KEEP_WARM_S,
    DEFAULT_STATE_DIR,
    JobSpec,
    fingerprint,
    input_key,
    spec_from_store,
    stored_identity,
    stored_spec,
)
from mtfleet.store import ACTIVE, TERMINAL, JobState, JobStore

POLL_S = 0.5
# who did it, in a job's history, when it was done by `mtfleet translate` on this machine
CLI_ACTOR = "cli"
Progress = Callable[[dict[str, Any]], None]
# Told the language codes a job takes as the model's own (`mr` as mar_Deva)
LanguagesNote = Callable[[list[CodeMapping]], None]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    job_id: str
    state: str
    error: str | None
    manifest: dict[str, Any] | None


def resolve_spec(spec: JobSpec, base: Path | None = None) -> JobSpec:
    """The spec with absolute paths: actors on other processes and nodes read them. A relative
    model directory is looked up under `base` (the API's data root), else the working directory."""
    model = Path(spec.model).expanduser()
    if base is not None and not model.is_absolute():
        model = base / model
    return spec.model_copy(
        update={
            "input": str(Path(spec.input).expanduser().resolve()),
            "output": str(Path(spec.output).expanduser().resolve()),
            "model": str(model.resolve()) if model.exists() else spec.model,
        }
    )


def prepare_job(
    spec: JobSpec,
    *,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    store_url: str | None = None,
    job_id: str | None = None,
    on_languages: LanguagesNote | None = None,
) -> JobHandle:
    """Checks the spec against the input, output and model, then creates the job (its coordinator
    plans it) or finds it to resume it; see `submit_job`."""
    return submit_job(
        spec, state_dir=state_dir, store_url=store_url, job_id=job_id, on_languages=on_languages
    )[0]


def submit_job(
    spec: JobSpec,
    *,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    store_url: str | None = None,
    job_id: str | None = None,
    data_root: Path | None = None,
    actor: str = CLI_ACTOR,
    on_languages: LanguagesNote | None = None,
) -> tuple[JobHandle, bool]:
    """The job's handle, and True when this call created it (False: it existed, and resumes).

    A language code given as ISO 639 (`mr`) is the model's own (`mar_Deva`) from here on: in the
    job's id, its outputs and its manifest; `on_languages` is told each such code.

    Nothing here reads the whole input: the input, the first rows' fields, the output and the model
    are checked, so a user's mistake is one sentence before anything runs; the coordinator plans.
    `data_root` (the API's) is stored with the spec, so the output is confined to it again when
    it is written. The job's history says `actor` submitted it.
    """
    spec = resolve_spec(spec, data_root)
    _, files = dataset_files(spec.input)
    check_fields(spec)
    src_lang, tgt_lang = check_model(
        spec.engine,
        spec.model,
        src_lang=spec.src_lang,
        tgt_lang=spec.tgt_lang,
        trust_remote_code=spec.trust_remote_code,
        preprocessor=spec.preprocessor,
    )
    # the model's own codes, before the job's id and outputs are derived from them
    mappings = code_mappings(
        {"src_lang": spec.src_lang, "tgt_lang": spec.tgt_lang},
        {"src_lang": src_lang, "tgt_lang": tgt_lang},
    )
    if mappings:
        spec = spec.model_copy(update={"src_lang": src_lang, "tgt_lang": tgt_lang})
        if on_languages is not None:
            on_languages(mappings)
    key = input_key(files)
    job_id = job_id or spec.default_job_id(key)
    # before the state dir is made, which may be a folder the output names
    for output in spec_outputs(spec):
        check_output_writable(output, sharded=not Path(spec.input).is_file())
    state_dir = Path(state_dir).expanduser().resolve()
    url = store_url_for(state_dir, store_url)
    handle = handle_for(job_id, state_dir, url)
    store = JobStore(url)
    check_output(spec, job_id, store, state_dir)
    stored = stored_spec(spec, key, data_root)
    record, created = store.jobs.create_or_find(job_id, stored, None, identity=stored_identity)
    if created:
        store.events.add(job_id, "submitted", "Submitted.", actor=actor)
        return handle, True
    if record.spec != stored:
        # Same output, other fleet: translators, threads, GPUs and lease TTL may change on resume.
        store.jobs.update_spec(job_id, stored)
    if record.state in (JobState.FAILED, JobState.CANCELLED):
        # Rerunning a failed or cancelled job goes on from its finished shards, or plans it again.
        planned = store.shards.exist(job_id)
        store.jobs.set_state(job_id, JobState.QUEUED if planned else JobState.PLANNING)
        store.events.add(
            job_id,
            "resubmitted",
            f"Submitted again after it {record.state.value}; its done shards are kept.",
            actor=actor,
        )
    elif record.state is JobState.PAUSED and record.error:
        # Paused by its coordinator on a fault that persisted (a full disk...): rerunning resumes.
        store.jobs.set_state(job_id, JobState.RUNNING)
        store.events.add(job_id, "resumed", "Resumed by submitting it again.", actor=actor)
    return handle, False


def with_keep_warm(spec: JobSpec, default_s: float) -> JobSpec:
    """The spec with its keep-warm time: its own, or `default_s` (the cluster's kind decides)."""
    if spec.keep_warm_s is not None:
        return spec
    return spec.model_copy(update={"keep_warm_s": default_s})


def check_output_writable(output: str, *, sharded: bool) -> None:
    """A file output can be written; a sharded job's output is a folder (made at assembly)."""
    if not sharded:
        check_file_writable(output)
        return
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise OutputError(f"Cannot write {path}: a sharded dataset's output is a folder.")
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write {path}: folder {path.parent} does not exist.")


def spec_outputs(spec: JobSpec) -> list[str]:
    """The output path of each target language: one, or one per language."""
    return [spec.output_for(target) for target in spec.targets()]


def written_paths(spec: JobSpec) -> list[Path]:
    """Every file the job writes: each target language's outputs (one, or one per input file)
    and manifest, and with several languages the job manifest."""
    root, files = dataset_files(spec.input)
    written = []
    for output in spec_outputs(spec):
        if Path(spec.input).is_file():
            written.append(Path(output))
        else:
            written += [mirrored_output(root, file, Path(output)) for file in files]
        written.append(manifest_path(output))
    if len(spec.targets()) > 1:
        written.append(job_manifest_path(spec.output))
    return written


def _stored_outputs(stored: dict[str, Any]) -> tuple[list[Path], list[Path]]:
    """The outputs and the manifests of a stored job's spec, one each per target language."""
    try:
        outputs = spec_outputs(spec_from_store(stored)[0])
    except ValueError:  # a spec stored by another version: its output as it is written
        outputs = [str(stored["output"])]
    return [Path(output) for output in outputs], [manifest_path(output) for output in outputs]


def check_output(spec: JobSpec, job_id: str, store: JobStore, state_dir: Path) -> None:
    """Refuses an output that would destroy data: the input, the job store, another active job's
    files, or an existing file that is not this job's own earlier output (unless --overwrite)."""
    written = written_paths(spec)
    root, inputs = dataset_files(spec.input)
    protected = [(file, "the job's own input") for file in inputs]
    if not Path(spec.input).is_file() and any(
        Path(output).resolve().is_relative_to(root.resolve())
        or root.resolve().is_relative_to(Path(output).resolve())
        for output in spec_outputs(spec)
    ):
        raise OutputError(
            f"Field output: {spec.output} and the input folder {root} lie inside one another; "
            "choose an output folder beside the input."
        )
    for record in store.jobs.all():
        if record.id == job_id or record.state not in ACTIVE:
            continue
        try:
            outputs, manifests = _stored_outputs(record.spec)
            protected.append(
                (Path(str(record.spec["input"])), f"the input of active job {record.id}")
            )
        except (KeyError, TypeError, ValueError):
            log.warning(
                "job %s cannot be read back; no submission is checked against it", record.id
            )
            continue
        protected += [(path, f"the output of active job {record.id}") for path in outputs]
        protected += [(path, f"a file of active job {record.id}") for path in manifests]
    store_dir = store.directory()
    for path in written:
        for other, what in protected:
            if _same_file(path, other) or path.resolve().is_relative_to(other.resolve()):
                raise OutputError(
                    f"Field output: {spec.output} is {what}; choose another output path."
                )
        for folder, what in (
            (state_dir, "the state directory"),
            (store_dir, "the job store's folder"),
        ):
            if folder is not None and path.resolve().is_relative_to(folder):
                raise OutputError(
                    f"Field output: {spec.output} lies in {what} {folder}; "
                    "choose another output path."
                )
    manifests = {manifest_path(output) for output in spec_outputs(spec)}
    for target in spec.targets():
        one = spec.for_target(target)
        existing = [path for path in written_paths(one) if path not in manifests and path.exists()]
        if existing and not spec.overwrite and not _own_outputs(one.output, job_id, existing):
            raise OutputError(
                f"Field output: {existing[0]} exists and is not this job's earlier output; "
                "pass --overwrite to replace it."
            )


def _same_file(path: Path, other: Path) -> bool:
    """The same file, also through a symlink or a hard link."""
    if path.resolve() == other.resolve():
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def _own_outputs(output: str, job_id: str, existing: list[Path]) -> bool:
    """Each of `existing` is what job `job_id` wrote, unchanged since: its manifest says so."""
    try:
        manifest = json.loads(manifest_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("job_id") != job_id:
        return False
    written = {
        entry.get("output"): entry.get("output_sha256")
        for entry in manifest.get("files") or [manifest]
        if isinstance(entry, dict)
    }
    return all(written.get(str(path)) == fingerprint(path) for path in existing)


def follow(handle: JobHandle, on_progress: Progress | None = None) -> JobResult:
    """Follows the job to its end, starting its coordinator again whenever it dies. A job its
    coordinator paused on a fault (a paused job with an error) ends the run too."""
    store = JobStore(handle.store_url)
    coordinator = start_job(store, handle)
    while True:
        asked = time.monotonic()
        # the coordinator answers at once when the job ends, else after POLL_S
        progress = report(coordinator, POLL_S)
        if progress is None:
            coordinator = start_coordinator(handle)
            continue
        if on_progress is not None:
            on_progress(progress)
        state = JobState(progress["state"])
        if state in TERMINAL or (state is JobState.PAUSED and progress["error"]):
            stop_coordinator(store, handle.job_id, free_name=False)
            retire(store, handle.job_id, handle.work_dir)
            job = store.jobs.get(handle.job_id)
            return JobResult(handle.job_id, job.state.value, job.error, job.manifest)
        # a coordinator whose loop has already ended answers at once: never ask faster than this
        time.sleep(max(0.0, POLL_S - (time.monotonic() - asked)))


def finished_result(handle: JobHandle) -> JobResult | None:
    """The result of a job that already succeeded and whose output is still as it wrote it."""
    job = JobStore(handle.store_url).jobs.get(handle.job_id)
    if job.state is not JobState.SUCCEEDED or not outputs_intact(job.manifest or {}):
        return None
    return JobResult(handle.job_id, job.state.value, None, job.manifest)


def forget_unassemblable(handle: JobHandle) -> bool:
    """A succeeded job whose output must be written again but whose parts were removed (once it
    succeeded) is deleted, record and work dir, so that submitting it again plans and translates
    it anew; True when it was."""
    store = JobStore(handle.store_url)
    if store.jobs.get(handle.job_id).state is not JobState.SUCCEEDED:
        return False
    if not parts_missing(store, handle.job_id):
        return False
    delete_job(store, handle.work_dir.parent.parent, handle.job_id)
    log.info("job %s: its output changed and its parts are gone; planned anew", handle.job_id)
    return True


REPLANNED = (
    "Its output had to be written again but its parts were removed when it succeeded; it is "
    "planned and translated anew."
)


def reassemble(handle: JobHandle) -> JobResult:
    """Writes a succeeded job's output again from its parts (it went missing or was changed), in a
    Ray task that asks for the memory assembly needs, never in the caller's process."""
    manifest = tasks.assemble(handle.store_url, handle.job_id, handle.work_dir)
    JobStore(handle.store_url).jobs.set_manifest(handle.job_id, manifest)
    return JobResult(handle.job_id, JobState.SUCCEEDED.value, None, manifest)


@dataclass(frozen=True)
class Submission:
    """A job as submitted: its handle, whether this submission created it, and what is left."""

    handle: JobHandle
    created: bool
    # a job that succeeded and whose output is still as it wrote it: nothing to run
    finished: JobResult | None = None
    # a job that succeeded and whose output went missing or changed: assembled again (`reassemble`)
    reassemble: bool = False


def submit(
    spec: JobSpec,
    *,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    store_url: str | None = None,
    job_id: str | None = None,
    data_root: Path | None = None,
    actor: str = CLI_ACTOR,
    on_languages: LanguagesNote | None = None,
) -> Submission:
    """Submits the job (`submit_job`) for the CLI and the API alike. A succeeded job is not run
    again: its output is assembled again if it went missing, from its parts, or, its parts
    removed, it is planned and translated anew."""

    def again() -> tuple[JobHandle, bool]:
        return submit_job(
            spec,
            state_dir=state_dir,
            store_url=store_url,
            job_id=job_id,
            data_root=data_root,
            actor=actor,
            on_languages=on_languages,
        )

    handle, created = again()
    finished = finished_result(handle)
    if finished is not None:
        return Submission(handle, created, finished=finished)
    if forget_unassemblable(handle):
        handle, created = again()
        JobStore(handle.store_url).events.add(handle.job_id, "replanned", REPLANNED)
        return Submission(handle, created)
    succeeded = JobStore(handle.store_url).jobs.get(handle.job_id).state is JobState.SUCCEEDED
    return Submission(handle, created, reassemble=succeeded)


def run_job(
    spec: JobSpec,
    *,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    store_url: str | None = None,
    job_id: str | None = None,
    address: str | None = None,
    detach: bool = False,
    on_progress: Progress | None = None,
    on_languages: LanguagesNote | None = None,
) -> JobResult:
    """Runs a job to its end (or, detached, starts it and returns); the CLI calls this."""
    if detach and not address:
        raise JobError("--detach needs --address: a local cluster ends with this command.")
    spec = with_keep_warm(spec, DEFAULT_KEEP_WARM_S if address else 0.0)
    submission = submit(
        spec, state_dir=state_dir, store_url=store_url, job_id=job_id, on_languages=on_languages
    )
    if submission.finished is not None:
        return submission.finished
    handle = submission.handle
    with _on_cluster(handle, address):
        if submission.reassemble:
            return reassemble(handle)
        if detach:
            start_job(JobStore(handle.store_url), handle)
            return JobResult(handle.job_id, JobState.RUNNING.value, None, None)
        return follow(handle, on_progress)


@contextmanager
def _on_cluster(handle: JobHandle, address: str | None) -> Iterator[None]:
    """Runs the block on the cluster at `address`, or on a local one that ends with it; Ctrl-C
    pauses the job and says so (Interrupted)."""
    started_here = False
    try:
        started_here = connect(address)
        yield
    except KeyboardInterrupt:
        raise Interrupted(pause_interrupted(handle)) from None
    finally:
        if started_here:
            ray.shutdown()


def retry_failed(handle: JobHandle, actor: str = CLI_ACTOR) -> list[int]:
    """Queues a succeeded job again to translate only its failed rows: its failed shards go back
    to pending and its coordinator, started next, translates them and assembles the whole output
    again from every shard's part, into the same files. The shards retried. A job that did not
    succeed, has no failed row, or whose units and parts were removed when it succeeded (without
    `keep_work`) is a JobError, one sentence."""
    store = JobStore(handle.store_url)
    job = store.jobs.get(handle.job_id)
    failed = store.shards.failed(handle.job_id)
    kept = UnitReader.exists(handle.work_dir) and not parts_missing(store, handle.job_id)
    if job.state is JobState.SUCCEEDED and failed and not kept:
        raise JobError(
            f"Job {handle.job_id}'s units and parts were removed when it succeeded, so its "
            "failed rows cannot be retried into its output; submit it with --keep-work "
            "(keep_work: true over the API) to retry failed rows later."
        )
    retried = store.jobs.retry_failed(handle.job_id)
    rows = sum(shard.row_end - shard.row_start for shard in failed if shard.index in retried)
    store.events.add(
        handle.job_id,
        "retried",
        f"Retrying its {rows} failed row(s) ({len(retried)} shard(s)); the output is assembled "
        "again from every shard.",
        actor=actor,
    )
    return retried


def retry_job(
    job_id: str,
    *,
    state_dir: str | Path = DEFAULT_STATE_DIR,
    store_url: str | None = None,
    address: str | None = None,
    on_progress: Progress | None = None,
) -> JobResult:
    """Retries the failed rows of a succeeded job (see `retry_failed`) and follows it to its
    end, on the cluster at `address` or a local one."""
    state_dir = Path(state_dir).expanduser().resolve()
    handle = handle_for(job_id, state_dir, store_url_for(state_dir, store_url))
    retry_failed(handle)
    with _on_cluster(handle, address):
        return follow(handle, on_progress)


INTERRUPTED = "Interrupted (Ctrl-C); rerun the same command to resume."


def pause_interrupted(handle: JobHandle) -> str:
    """Pauses a job whose command was interrupted, so that nothing goes on with it until the
    command is run again; one sentence saying where it stands."""
    store = JobStore(handle.store_url)
    if store.jobs.get(handle.job_id).state in (JobState.PLANNING, JobState.RUNNING):
        with contextlib.suppress(JobError):  # it ended or moved meanwhile: said below as it is
            steer(
                store,
                handle.job_id,
                JobState.PAUSED,
                CLI_ACTOR,
                message=INTERRUPTED,
                error=INTERRUPTED,
            )
    progress = store.counters.progress(handle.job_id)
    return (
        f"job {handle.job_id} paused after {progress['rows_done']} of {progress['rows_total']} "
        "rows; rerun the same command to resume"
    )
