"""Translation quality of the demo model: sacrebleu BLEU and chrF on the Multi30k test sets.

Each row is a way of translating (a function from source texts to translations) applied either to
every test sentence or to paragraphs of PARAGRAPH_SENTENCES consecutive sentences joined with a
space, scored against the references joined the same way. Adding a row (an mtfleet job, the
pipeline, CTranslate2) means adding one entry to `rows()`.

    .venv/bin/python bench/quality.py [--model models/multi30k-en-de] [--update-card]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sacrebleu
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import health
from mtfleet.cluster import run_job
from mtfleet.spec import JobSpec
from mtfleet.training import read_lines, record_test_scores

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "multi30k-en-de"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "quality.json"
TEST_SETS = ("test_2016_flickr", "test_2017_flickr")
PARAGRAPH_SENTENCES = 5
REFERENCE_ROW = "generate, sentence alone"

Translate = Callable[[Sequence[str]], list[str]]


@dataclass(frozen=True)
class Row:
    """One way of translating, and whether it sees single sentences or joined paragraphs."""

    name: str
    unit: str  # "sentence" or "paragraph"
    translate: Translate


def generate_alone(model_dir: Path, beam: int = 1) -> Translate:
    """`model.generate` on each text by itself: no batching, no padding, nothing shared."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).eval()

    def translate(texts: Sequence[str]) -> list[str]:
        translations = []
        with torch.inference_mode():
            for text in texts:
                inputs = tokenizer(text, return_tensors="pt")
                # Same output budget as the HF engine: twice the input length plus ten.
                limit = 2 * inputs["input_ids"].shape[1] + 10
                output = model.generate(**inputs, num_beams=beam, max_new_tokens=limit)
                translations.append(tokenizer.decode(output[0], skip_special_tokens=True))
        return translations

    return translate


def mtfleet_job(model_dir: Path, **settings: object) -> Translate:
    """A whole `mtfleet translate` job (local Ray cluster, one translator) over the texts as JSONL rows."""

    def translate(texts: Sequence[str]) -> list[str]:
        with tempfile.TemporaryDirectory(prefix="mtfleet-quality-") as work:
            source, output = Path(work) / "texts.jsonl", Path(work) / "out.jsonl"
            source.write_text(
                "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
            )
            spec = JobSpec(
                input=str(source),
                output=str(output),
                model=str(model_dir),
                fields=["text"],
                **settings,
            )
            result = run_job(spec, state_dir=Path(work) / "state")
            if result.state != "succeeded":
                raise SystemExit(f"quality job {result.job_id} {result.state}: {result.error}")
            return [json.loads(line)["text"] for line in output.read_text().splitlines()]

    return translate


def rows(model_dir: Path) -> list[Row]:
    """The rows of the quality table, the reference row first."""
    generate = generate_alone(model_dir)
    job = mtfleet_job(model_dir)
    return [
        Row(REFERENCE_ROW, "sentence", generate),
        Row("mtfleet job, hf greedy", "sentence", job),
        Row("mtfleet job, hf beam 5", "sentence", mtfleet_job(model_dir, beam=5)),
        Row(
            "mtfleet job, ct2 float32",
            "sentence",
            mtfleet_job(model_dir, engine="ct2", compute_type="float32"),
        ),
        Row(
            "mtfleet job, ct2 int8",
            "sentence",
            mtfleet_job(model_dir, engine="ct2", compute_type="int8"),
        ),
        Row("generate, whole paragraph", "paragraph", generate),
        Row("mtfleet job, hf greedy, paragraph", "paragraph", job),
    ]


def paragraphs(sentences: Sequence[str]) -> list[str]:
    """Every PARAGRAPH_SENTENCES consecutive sentences joined with a space."""
    return [
        " ".join(sentences[start : start + PARAGRAPH_SENTENCES])
        for start in range(0, len(sentences), PARAGRAPH_SENTENCES)
    ]


def measure(
    model_dir: Path, data_dir: Path, table_rows: Sequence[Row], limit: int | None = None
) -> dict:
    """Score every row on every test set; sentence rows also count agreement with the reference."""
    bleu_metric, chrf_metric = sacrebleu.BLEU(), sacrebleu.CHRF()
    results = []
    for test_set in TEST_SETS:
        sources = read_lines(data_dir / f"{test_set}.en.gz")[:limit]
        references = read_lines(data_dir / f"{test_set}.de.gz")[:limit]
        reference_output: list[str] | None = None
        for row in table_rows:
            texts, targets = (
                (sources, references)
                if row.unit == "sentence"
                else (paragraphs(sources), paragraphs(references))
            )
            started = time.perf_counter()
            hypotheses = row.translate(texts)
            seconds = time.perf_counter() - started
            bleu = bleu_metric.corpus_score(hypotheses, [targets])
            chrf = chrf_metric.corpus_score(hypotheses, [targets])
            entry = {
                "row": row.name,
                "test_set": test_set,
                "unit": row.unit,
                "texts": len(texts),
                "bleu": round(bleu.score, 2),
                "chrf": round(chrf.score, 2),
                "seconds": round(seconds, 1),
            }
            if row.name == REFERENCE_ROW:
                reference_output = hypotheses
                # The sentence-by-sentence output joined like the paragraphs: what a paragraph row
                # is compared with (BLEU over 5-sentence texts is not sentence-level BLEU).
                joined = paragraphs(hypotheses)
                entry["bleu_joined"] = round(
                    bleu_metric.corpus_score(joined, [paragraphs(targets)]).score, 2
                )
            elif reference_output is not None:
                compared = (
                    reference_output if row.unit == "sentence" else paragraphs(reference_output)
                )
                entry["identical_to_generate"] = sum(
                    a == b for a, b in zip(hypotheses, compared, strict=True)
                )
            results.append(entry)
            print(f"  {test_set:18} {row.name:32} BLEU {entry['bleu']:6.2f}", file=sys.stderr)
    return {
        "model": os.path.relpath(model_dir.resolve(), ROOT),
        "sacrebleu": {
            "version": sacrebleu.__version__,
            "bleu_signature": str(bleu_metric.get_signature()),
            "chrf_signature": str(chrf_metric.get_signature()),
        },
        "paragraph_sentences": PARAGRAPH_SENTENCES,
        "limit": limit,
        "rows": results,
    }


def print_table(report: dict) -> None:
    """One line per row and test set."""
    print(f"{'row':34} {'test set':18} {'unit':9} {'BLEU':>6} {'chrF':>6} {'same':>5} {'sec':>6}")
    for entry in report["rows"]:
        same = entry.get("identical_to_generate", "")
        print(
            f"{entry['row']:34} {entry['test_set']:18} {entry['unit']:9} "
            f"{entry['bleu']:6.2f} {entry['chrf']:6.2f} {same!s:>5} {entry['seconds']:6.1f}"
        )
        if "bleu_joined" in entry:
            print(
                f"{'  ... joined into paragraphs':34} {entry['test_set']:18} {'paragraph':9} "
                f"{entry['bleu_joined']:6.2f}"
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--limit", type=int, help="only the first N sentences of each test set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--update-card", action="store_true", help="write the reference scores into the model card"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = measure(args.model, args.data, rows(args.model), args.limit)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    health_report = health.measure(args.model, args.data, args.limit)
    args.output.with_name("health.json").write_text(
        json.dumps(health_report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    health.print_tables(health_report)
    if args.update_card and args.limit is None:
        record_test_scores(
            args.model,
            {
                f"{entry['test_set']}, {entry['row']}": {
                    "bleu": entry["bleu"],
                    "chrf": entry["chrf"],
                }
                for entry in report["rows"]
            },
        )


if __name__ == "__main__":
    main()
