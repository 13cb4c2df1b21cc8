"""Assembly: the source dataset with the accepted parts applied, streamed in row order, and its manifest.

The input is read again a row at a time and each output is written as it goes, holding at most one
shard's translations: memory does not grow with the dataset. Every part line names its row and
field, and a part that does not fit its shard fails the job loudly instead of misplacing text.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtfleet.cluster.parts import read_part
from mtfleet.cluster.plan import UnitLine, read_plan_facts
from mtfleet.cluster.protocol import ShardStats
from mtfleet.data import (
    DatasetReader,
    DatasetWriter,
    FieldPath,
    UnitKind,
    extract_units,
    format_location,
    mirrored_output,
    parse_field_paths,
    set_value,
    style_from_json,
)
from mtfleet.errors import DatasetError, JobError, OutputError
from mtfleet.health import HealthReport
from mtfleet.manifest import manifest_path, versions, write_job_manifest, write_manifest
from mtfleet.spec import JobSpec, fingerprint, spec_from_store
from mtfleet.store import JobStore, ShardRecord, ShardState

# Shards read from the store at a time, in row order.
_SHARD_PAGE = 512

# Failed rows the manifest lists (the first, in row order); `rows_failed` counts them all.
LISTED_FAILURES = 100


def assemble(store: JobStore, job_id: str, work_dir: Path) -> dict[str, Any]:
    """Writes the output (one file, or a folder mirroring a sharded input) and its manifest; with
    several target languages, those of each language and a job manifest listing them."""
    job = store.jobs.get(job_id)
    # confined to the API's data root again now that it writes: a folder may have become a symlink
    spec, _, confine_to = spec_from_store(job.spec)
    facts = read_plan_facts(work_dir)
    manifests = {
        target: _assemble_target(store, job, spec.for_target(target), facts, confine_to)
        for target in spec.targets()
    }
    if len(manifests) == 1:
        return next(iter(manifests.values()))
    manifest = _job_manifest(spec, manifests)
    write_job_manifest(spec.output, manifest, confine_to=confine_to)
    return manifest


def _assemble_target(
    store: JobStore, job: Any, spec: JobSpec, facts: dict[str, Any], confine_to: Path | None
) -> dict[str, Any]:
    """The output and manifest of one target language (`spec` is that language's own)."""
    applier = PartApplier(store, job.id, parse_field_paths(spec.fields), target=spec.tgt_lang)
    applier.health = HealthReport(
        spec.output, spec.on_flag, checks=spec.checks, confine_to=confine_to
    )
    try:
        files = _write_files(spec, facts, applier, confine_to)
    except BaseException:
        applier.health.discard()
        raise
    applier.health.close()
    manifest = _manifest(job.id, job, spec, facts, files, applier)
    manifest["health"] = applier.health.to_json()
    write_manifest(spec.output, manifest, confine_to=confine_to)
    return manifest


def _job_manifest(spec: JobSpec, manifests: dict[str | None, dict[str, Any]]) -> dict[str, Any]:
    """What a job with several target languages wrote: each language's output and manifest (as a
    job with that language alone would have written them), and every file for `outputs_intact`."""
    first = next(iter(manifests.values()))
    files = [entry for manifest in manifests.values() for entry in manifest["files"]]
    languages = {
        str(target): {
            "output": manifest["output"],
            "output_sha256": manifest["output_sha256"],
            "manifest": str(manifest_path(manifest["output"])),
            **{key: manifest[key] for key in TARGET_COUNTS},
            "health": manifest["health"],
        }
        for target, manifest in manifests.items()
    }
    return {
        **{key: value for key, value in first.items() if key != "health"},
        "output": spec.output,
        "output_sha256": _combined_sha256(files, "output_sha256"),
        "tgt_lang": spec.targets(),
        "settings": spec.settings(),
        "targets": languages,
        "files": files,
    }


# What a job manifest tells of each target language, from that language's manifest
TARGET_COUNTS = (
    "units_translated",
    "units_failed",
    "units_skipped_target_language",
    "segments",
    "segments_unique",
    "segments_from_memory",
    "units_from_memory",
    "source_tokens",
)


def _write_files(
    spec: JobSpec, facts: dict[str, Any], applier: PartApplier, confine_to: Path | None
) -> list[dict[str, Any]]:
    files = []
    for described in facts["files"]:
        output = output_for(spec, facts, Path(described["path"]))
        _write_file(spec, described, output, applier, confine_to)
        files.append(
            {
                "input": described["path"],
                "input_sha256": described["sha256"],
                "output": str(output),
                "output_sha256": fingerprint(output),
                "rows": described["rows"],
            }
        )
    applier.finish()
    return files


def output_for(spec: JobSpec, facts: dict[str, Any], input_file: Path) -> Path:
    """Where the output of one input file goes: OUTPUT itself, or its mirror under OUTPUT."""
    if not facts.get("sharded"):
        return Path(spec.output)
    return mirrored_output(Path(facts["root"]), input_file, Path(spec.output))


def outputs_intact(manifest: dict[str, Any]) -> bool:
    """Every output file a manifest lists is there, byte for byte as it was written."""
    files = manifest.get("files") or []
    return bool(files) and all(
        Path(entry["output"]).is_file() and fingerprint(entry["output"]) == entry["output_sha256"]
        for entry in files
    )


def _write_file(
    spec: JobSpec,
    described: dict[str, Any],
    output: Path,
    applier: PartApplier,
    confine_to: Path | None,
) -> None:
    path = Path(described["path"])
    reader = DatasetReader(path)
    try:
        writer = DatasetWriter(
            output,
            source_format=described["format"],
            style=style_from_json(described["style"], path),
            columns=described["columns"],
            confine_to=confine_to,
        )
    except OSError as error:
        raise OutputError(f"Cannot write {output}: {error.strerror or error}.") from error
    changed = JobError(f"{path} changed while job {applier.job_id} ran; run it again as a new job.")
    with writer:
        rows = reader.rows()
        row_index = described["first_row"]
        try:
            for row in rows:
                if applier.apply(row, row_index):
                    writer.write(row)
                row_index += 1
        except (JobError, DatasetError):
            # A part that does not fit its row, or a row that does not parse, may only mean that
            # the input changed: read on to its end and say so when its bytes are not the planned ones.
            if not _reads_as_planned(reader, rows, described):
                raise changed from None
            raise
        if (
            reader.sha256 != described["sha256"]
            or row_index != described["first_row"] + described["rows"]
        ):
            raise changed


def _reads_as_planned(
    reader: DatasetReader, rows: Iterator[dict[str, Any]], described: dict[str, Any]
) -> bool:
    try:
        for _ in rows:
            pass
    except DatasetError:
        return False
    return reader.sha256 == described["sha256"]


@dataclass
class Tally:
    """What assembly counted: every unit of every row, by what became of it."""

    units_total: int = 0
    translated: int = 0
    failed: int = 0
    skipped_empty: int = 0
    skipped_non_text: int = 0
    segments: int = 0
    segments_unique: int = 0
    segments_from_memory: int = 0
    units_from_memory: int = 0
    skipped_target_language: int = 0
    source_tokens: int = 0
    per_node: Counter[str] = field(default_factory=Counter)
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    rows_failed: int = 0
    shards: int = 0


class PartApplier:
    """Walks the job's shards in row order beside the rows and puts each part's text in place,
    holding one shard's translations at a time."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        paths: Sequence[FieldPath],
        *,
        target: str | None = None,
    ) -> None:
        """`target`: the language whose texts are applied, of parts holding several."""
        self.target = target
        self.store = store
        self.job_id = job_id
        self.paths = paths
        self.tally = Tally()
        self._next_unit = 0
        self._page: list[ShardRecord] = []
        self._shard: ShardRecord | None = None
        self._translations: dict[int, UnitLine] = {}
        self._applied = 0
        self.health: HealthReport | None = None

    def apply(self, row: dict[str, Any], row_index: int) -> bool:
        """Puts the row's translations in place; False when the row is to be left out."""
        shard = self._shard_of(row_index)
        # read once a row, not once a unit: assembly walks every unit of every row
        tally, health, translations = self.tally, self.health, self._translations
        failed = shard.state is ShardState.FAILED
        keep_row = True
        for unit in extract_units([row], self.paths, row_offset=row_index):
            tally.units_total += 1
            if unit.kind is UnitKind.EMPTY:
                tally.skipped_empty += 1
                continue
            if unit.kind is UnitKind.NON_TEXT:
                tally.skipped_non_text += 1
                continue
            index = self._next_unit
            self._next_unit += 1
            if failed:
                tally.failed += 1
                continue
            line = translations.get(index)
            location = format_location(unit.location)
            if line is None or line.row != row_index or line.location != location:
                raise JobError(
                    f"The part of shard {shard.index} (rows {shard.row_start}-{shard.row_end - 1}) "
                    f"of job {self.job_id} does not hold unit {index} at row {row_index}, field "
                    f"{location}; its parts do not match its plan, so nothing was written."
                )
            if health is not None:
                health.add(row_index, location, line.flags, unit.text or "", line.text)
            if not line.flags or health is None or health.on_flag == "keep":
                set_value(row, unit.location, line.text)
            elif health.on_flag == "drop-row":
                keep_row = False
            self._applied += 1
            tally.translated += 1
        if failed:
            tally.rows_failed += 1
            if len(tally.failures) < LISTED_FAILURES:
                tally.failures.append({"row": row_index, "error": shard.error})
        if not keep_row and health is not None:
            health.rows_dropped += 1
        return keep_row

    def finish(self) -> None:
        """Checks that the last shard's part was used up and that no shard is left over."""
        self._close_shard()
        if self._page or self.store.shards.page(self.job_id, self._row_after(), 1):
            raise JobError(f"Job {self.job_id} has shards past the end of its input.")

    def _row_after(self) -> int:
        return self._shard.row_end if self._shard else 0

    def _shard_of(self, row_index: int) -> ShardRecord:
        while self._shard is None or row_index >= self._shard.row_end:
            self._close_shard()
            if not self._page:
                self._page = self.store.shards.page(self.job_id, self._row_after(), _SHARD_PAGE)
            if not self._page or self._page[0].row_start != self._row_after():
                raise JobError(f"Job {self.job_id} has no shard for row {row_index}.")
            self._open_shard(self._page.pop(0))
        return self._shard

    def _open_shard(self, shard: ShardRecord) -> None:
        if shard.state not in (ShardState.DONE, ShardState.FAILED):
            raise JobError(f"Shard {shard.index} of job {self.job_id} is {shard.state}, not done.")
        self._shard = shard
        self._applied = 0
        self._translations = {}
        self.tally.shards += 1
        if shard.state is ShardState.FAILED:
            return
        for found in read_part(Path(shard.part_path or "")):
            line = found.for_target(self.target)
            if line is None:
                raise JobError(
                    f"The part of shard {shard.index} of job {self.job_id} holds no {self.target} "
                    f"text for unit {found.unit} at row {found.row}; nothing was written."
                )
            if not shard.row_start <= line.row < shard.row_end:
                raise JobError(
                    f"The part of shard {shard.index} of job {self.job_id} holds row {line.row}, "
                    f"outside its rows {shard.row_start}-{shard.row_end - 1}; nothing was written."
                )
            self._translations[line.unit] = line
        stats = ShardStats.from_json(shard.stats)
        counts = stats.counts_for(self.target)
        self.tally.segments += counts.segments
        self.tally.segments_unique += counts.segments_unique
        self.tally.segments_from_memory += counts.segments_from_memory
        self.tally.units_from_memory += stats.units_from_memory
        self.tally.skipped_target_language += counts.units_skipped_target_language
        self.tally.source_tokens += counts.source_tokens
        if counts.segments:
            self.tally.per_node[stats.node_id or "?"] += counts.segments
        signature = stats.engine
        # a shard filled from the translation memory at planning ran no engine
        if signature is not None:
            self.tally.signatures.setdefault(json.dumps(signature, sort_keys=True), signature)

    def _close_shard(self) -> None:
        shard = self._shard
        if shard is not None and self._applied != len(self._translations):
            raise JobError(
                f"The part of shard {shard.index} of job {self.job_id} holds "
                f"{len(self._translations)} translations but its rows have {self._applied} "
                "text fields; nothing was written."
            )


def _combined_sha256(files: list[dict[str, Any]], key: str) -> str:
    if len(files) == 1:
        return files[0][key]
    digest = hashlib.sha256()
    for entry in files:
        digest.update(f"{entry[key]}\n".encode())
    return digest.hexdigest()


def _manifest(
    job_id: str,
    job: Any,
    spec: JobSpec,
    facts: dict[str, Any],
    files: list[dict[str, Any]],
    applier: PartApplier,
) -> dict[str, Any]:
    tally = applier.tally
    counters = job.counters
    signatures = list(tally.signatures.values())
    return {
        "job_id": job_id,
        "input": str(spec.input),
        "input_sha256": _combined_sha256(files, "input_sha256"),
        "output": str(spec.output),
        "output_sha256": _combined_sha256(files, "output_sha256"),
        "model": spec.model,
        "engine": spec.engine,
        "engine_signature": signatures[0] if signatures else {},
        "engine_signatures": signatures,
        "fields": spec.fields,
        "src_lang": spec.src_lang,
        "tgt_lang": spec.tgt_lang,
        "settings": spec.settings(),
        "rows": facts["rows"],
        "units_total": tally.units_total,
        "units_translated": tally.translated,
        "units_failed": tally.failed,
        "units_skipped_empty": tally.skipped_empty,
        "units_skipped_non_text": tally.skipped_non_text,
        "segments": tally.segments,
        "segments_unique": tally.segments_unique,
        "segments_from_memory": tally.segments_from_memory,
        "units_from_memory": tally.units_from_memory,
        "units_skipped_target_language": tally.skipped_target_language,
        "source_tokens": tally.source_tokens,
        "failures": tally.failures,
        "rows_failed": tally.rows_failed,
        "files": files,
        "shards": tally.shards,
        "shards_reused": counters.get("shards_reused", 0),
        "lease_expiries": counters.get("lease_expiries", 0),
        "translator_deaths": counters.get("translator_deaths", 0),
        "coordinator_restarts": counters.get("coordinator_restarts", 0),
        "segments_per_node": dict(sorted(tally.per_node.items())),
        "elapsed_s": round(time.time() - job.created_at, 3),
        "versions": versions(),
    }
