"""Engine parity per model family (issue 12): does each engine generate what the model's own
`generate` does?

For each family's tiny random-weight model (`mtfleet.random_models`, built here), the same
varied segments go through (1) the model card's own call of `generate`, one segment at a time,
(2) mtfleet's HF engine, greedy, in length-sorted token-budget batches, and (3) the ct2 engine in
float32, where CTranslate2 converts the family. A segment counts as identical when its token ids
are. IndicTrans2's stand-in is compared on the text IndicProcessor prepares. Writes
bench/results/families.json and prints the README's table.

    .venv/bin/python bench/families.py [--segments 200] [--d-model 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from mtfleet.engines import inspect_model, load_engine
from mtfleet.engines.ct2 import CT2Engine
from mtfleet.engines.hf import HFEngine
from mtfleet.engines.indictrans import indic_processor
from mtfleet.errors import ModelError
from mtfleet.manifest import versions
from mtfleet.random_models import build_tiny_model, varied_segments
from mtfleet.testing.families import FAMILIES, generate_alone

RESULTS = Path(__file__).resolve().parent / "results" / "families.json"
FACTOR, OFFSET, BUDGET = 1.0, 8, 512


def measure(family: str, model_dir: Path, segments: list[str]) -> dict[str, Any]:
    spec = FAMILIES[family]
    settings: dict[str, Any] = {
        "src_lang": spec.src_lang,
        "tgt_lang": spec.tgt_lang,
        "max_batch_tokens": BUDGET,
        "max_length_factor": FACTOR,
        "max_length_offset": OFFSET,
        "threads": 1,
        **dict(spec.settings),
    }
    engine = load_engine("hf", str(model_dir), **settings)
    hf: HFEngine = getattr(engine, "engine", engine)  # the model under IndicProcessor
    sources = segments
    if spec.settings:
        sources = indic_processor().preprocess_batch(
            segments, src_lang=spec.src_lang, tgt_lang=spec.tgt_lang
        )
    started = time.perf_counter()
    hf_ids = hf.generate_token_ids(sources)
    hf_s = time.perf_counter() - started
    started = time.perf_counter()
    reference = generate_alone(
        model_dir, family, sources, max_length_factor=FACTOR, max_length_offset=OFFSET
    )
    alone_s = time.perf_counter() - started
    row: dict[str, Any] = {
        "family": family,
        "tokenizer_class": type(hf.tokenizer).__name__,
        "languages": len(hf.tokens.languages.codes),
        "src_lang": spec.src_lang,
        "tgt_lang": spec.tgt_lang,
        "segments": len(segments),
        "hf_identical_to_generate": sum(a == b for a, b in zip(hf_ids, reference, strict=True)),
        "hf_s": round(hf_s, 2),
        "generate_alone_s": round(alone_s, 2),
        "engines": inspect_model(str(model_dir), trust_remote_code=bool(spec.settings))["engines"],
    }
    try:
        # the model alone: its sources are already what IndicProcessor prepares
        model_settings = {k: v for k, v in settings.items() if k != "preprocessor"}
        ct2 = CT2Engine(str(model_dir), compute_type="float32", **model_settings)
    except ModelError as error:
        row["ct2"] = str(error).split(" (")[0]
        return row
    started = time.perf_counter()
    ct2_ids = ct2.generate_token_ids(sources)
    row["ct2_s"] = round(time.perf_counter() - started, 2)
    row["ct2_float32_identical_to_hf"] = sum(a == b for a, b in zip(ct2_ids, hf_ids, strict=True))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| family | tokenizer | languages | hf = generate, per segment | ct2 float32 = hf |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ct2 = (
            f"{row['ct2_float32_identical_to_hf']}/{row['segments']}"
            if "ct2_float32_identical_to_hf" in row
            else "not converted (CTranslate2 has no loader for it)"
        )
        lines.append(
            f"| {row['family']} | {row['tokenizer_class']} | {row['languages']} "
            f"| {row['hf_identical_to_generate']}/{row['segments']} | {ct2} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=200)
    parser.add_argument("--d-model", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    segments = varied_segments(args.segments, seed=12)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        os.environ.setdefault("MTFLEET_CACHE", str(Path(scratch) / "cache"))
        for family in FAMILIES:
            model_dir = build_tiny_model(
                family, Path(scratch) / family, d_model=args.d_model, heads=4, ffn=4 * args.d_model
            )
            rows.append(measure(family, model_dir, segments))
            print(json.dumps(rows[-1]), file=sys.stderr)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_average": os.getloadavg(),
        "settings": {"d_model": args.d_model, "factor": FACTOR, "offset": OFFSET, "budget": BUDGET},
        "versions": versions(),
        "families": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(table(rows))


if __name__ == "__main__":
    main()
