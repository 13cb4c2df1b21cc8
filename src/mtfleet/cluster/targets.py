"""A job's progress in each of its target languages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtfleet.spec import JobSpec


def target_progress(spec: JobSpec, progress: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target language of a job's spec, its output and what is translated into it.

    One lease covers every language of a shard and a shard is done once all are written, so each
    language has the units and segments of the done shards (a unit already in a language, with
    `--src-lang auto`, is copied and counted in its manifest).
    """
    return [
        {
            "tgt_lang": target,
            "output": spec.output_for(target),
            "units_total": progress["units_total"],
            "units_done": progress["units_done"],
            "segments_done": progress["segments_done"],
        }
        for target in spec.targets()
    ]
