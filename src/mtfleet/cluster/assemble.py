"""Assembly: the source dataset with the accepted parts applied, in shard order, and its manifest."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from mtfleet.cluster.parts import read_part
from mtfleet.cluster.plan import load_units, read_plan_facts
from mtfleet.data import UnitKind, set_value, write_dataset
from mtfleet.errors import JobError, OutputError
from mtfleet.manifest import versions, write_manifest
from mtfleet.spec import fingerprint, spec_from_store
from mtfleet.store import JobStore, ShardState


def assemble(store: JobStore, job_id: str, work_dir: Path) -> dict[str, Any]:
    """Writes the output and OUT.manifest.json; returns the manifest."""
    job = store.get_job(job_id)
    spec, _, _ = spec_from_store(job.spec)
    input_sha256 = read_plan_facts(work_dir)["input_sha256"]
    dataset, units = load_units(spec)
    if fingerprint(spec.input) != input_sha256:
        raise JobError(f"{spec.input} changed while job {job_id} ran; run it again as a new job.")
    text_units = [unit for unit in units if unit.kind is UnitKind.TEXT]
    shards = store.shards(job_id)
    translated = 0
    segments = segments_unique = source_tokens = 0
    per_node: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    engine_signature: dict[str, Any] = {}
    for shard in shards:
        if shard.state is ShardState.FAILED:
            for row in range(shard.row_start, shard.row_end):
                failures.append({"row": row, "error": shard.error})
            continue
        for unit_index, text in read_part(Path(shard.part_path)):
            unit = text_units[unit_index]
            set_value(dataset.rows[unit.row], unit.location, text)
            translated += 1
        stats = shard.stats
        segments += stats.get("segments", 0)
        segments_unique += stats.get("segments_unique", 0)
        source_tokens += stats.get("source_tokens", 0)
        per_node[stats.get("node_id", "?")] += stats.get("segments", 0)
        engine_signature = engine_signature or stats.get("engine", {})
    try:
        write_dataset(dataset, dataset.rows, spec.output)
    except OSError as error:
        raise OutputError(f"Cannot write {spec.output}: {error.strerror or error}.") from error
    counters = job.counters
    manifest = {
        "job_id": job_id,
        "input": str(spec.input),
        "input_sha256": input_sha256,
        "output": str(spec.output),
        "output_sha256": fingerprint(spec.output),
        "model": spec.model,
        "engine": spec.engine,
        "engine_signature": engine_signature,
        "fields": spec.fields,
        "src_lang": spec.src_lang,
        "tgt_lang": spec.tgt_lang,
        "settings": spec.settings(),
        "rows": len(dataset.rows),
        "units_total": len(units),
        "units_translated": translated,
        "units_failed": len(text_units) - translated,
        "units_skipped_empty": sum(unit.kind is UnitKind.EMPTY for unit in units),
        "units_skipped_non_text": sum(unit.kind is UnitKind.NON_TEXT for unit in units),
        "segments": segments,
        "segments_unique": segments_unique,
        "source_tokens": source_tokens,
        "failures": failures,
        "shards": len(shards),
        "shards_reused": counters.get("shards_reused", 0),
        "lease_expiries": counters.get("lease_expiries", 0),
        "translator_deaths": counters.get("translator_deaths", 0),
        "coordinator_restarts": counters.get("coordinator_restarts", 0),
        "segments_per_node": dict(sorted(per_node.items())),
        "elapsed_s": round(time.time() - job.created_at, 3),
        "versions": versions(),
    }
    write_manifest(spec.output, manifest)
    return manifest
