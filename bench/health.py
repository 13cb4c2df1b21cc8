"""Health of the demo model's translations, and the share of injected faults the checks catch.

Three tables (`make quality` prints them after the BLEU table; this script alone prints only them):
- Multi30k test_2016_flickr through an mtfleet job (hf, greedy): the share of sentences each check
  flags, and BLEU of the flagged against the unflagged sentences.
- examples/alpaca_sample.json through the same model: the share of fields each check flags.
- Faults injected by the reverse engine (MTFLEET_REVERSE_FAULTS) into a job over the German
  Multi30k references and templated rows with numbers and placeholders: for each fault, how many
  were injected and how many the checks caught (flagged, or flagged and cured by the retry).

    .venv/bin/python bench/health.py [--model models/multi30k-en-de] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sacrebleu

from mtfleet.cluster import run_job
from mtfleet.data.segment import segment
from mtfleet.engines.faulty import CAUGHT_AS, FAULTS, FaultInjector
from mtfleet.health import CHECKS, flags_path
from mtfleet.spec import JobSpec
from mtfleet.testing.engines import FAULT_EVERY_VARIABLE, FAULTS_VARIABLE, ReverseEngine
from mtfleet.training import read_lines

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "multi30k-en-de"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"
ALPACA = ROOT / "examples" / "alpaca_sample.json"
TEST_SET = "test_2016_flickr"
FAULT_EVERY = 10


def run(input_path: Path, work: Path, fields: list[str], **settings: Any) -> tuple[Path, dict]:
    """One mtfleet job; its output and manifest."""
    output = work / ("out" + input_path.suffix)
    spec = JobSpec(
        input=str(input_path), output=str(output), fields=fields, overwrite=True, **settings
    )
    result = run_job(spec, state_dir=work / "state")
    if result.state != "succeeded":
        raise SystemExit(f"health job {result.job_id} {result.state}: {result.error}")
    return output, result.manifest or {}


def flagged_rows(output: Path) -> dict[int, list[str]]:
    path = flags_path(output)
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as stream:
        return {entry["row"]: entry["checks"] for entry in map(json.loads, stream)}


def write_jsonl(path: Path, texts: Sequence[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    return path


def multi30k(model: Path, data: Path, limit: int | None) -> dict[str, Any]:
    sources = read_lines(data / f"{TEST_SET}.en.gz")[:limit]
    references = read_lines(data / f"{TEST_SET}.de.gz")[:limit]
    with tempfile.TemporaryDirectory(prefix="mtfleet-health-") as work:
        output, _ = run(
            write_jsonl(Path(work) / "test.jsonl", sources), Path(work), ["text"],
            model=str(model), tgt_lang="de",
        )  # fmt: skip
        hypotheses = [json.loads(line)["text"] for line in output.read_text().splitlines()]
        flagged = flagged_rows(output)
    bleu = sacrebleu.BLEU()

    def score(rows: list[int]) -> float | None:
        if not rows:
            return None
        return round(
            bleu.corpus_score([hypotheses[i] for i in rows], [[references[i] for i in rows]]).score,
            2,
        )

    clean = [i for i in range(len(sources)) if i not in flagged]
    return {
        "sentences": len(sources),
        "flagged": len(flagged),
        "per_check": _per_check(flagged.values()),
        "bleu_flagged": score(sorted(flagged)),
        "bleu_unflagged": score(clean),
        "bleu_all": score(list(range(len(sources)))),
        "flagged_examples": [
            {"source": sources[i], "translation": hypotheses[i], "checks": checks}
            for i, checks in sorted(flagged.items())[:10]
        ],
    }


def alpaca(model: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mtfleet-health-") as work:
        _, manifest = run(
            ALPACA, Path(work), ["instruction", "input", "output"], model=str(model), tgt_lang="de"
        )
    health = manifest["health"]
    return {
        "fields": health["units_checked"],
        "flagged": health["units_flagged"],
        "per_check": health["per_check"],
    }


def fault_texts(data: Path, limit: int | None) -> list[str]:
    """German sentences (word-reversed German is still German) and rows with numbers and
    placeholders."""
    texts = read_lines(data / f"{TEST_SET}.de.gz")[:limit]
    texts += [f"Hallo {{name}}, du hast {n} neue Nachrichten im Postfach." for n in range(50)]
    texts += [f"Der Zug nach %s fährt um {n}:30 Uhr ab." for n in range(50)]
    return texts


def faults(data: Path, limit: int | None) -> dict[str, Any]:
    texts = fault_texts(data, limit)
    injector = FaultInjector(FAULTS, FAULT_EVERY)
    count_tokens = ReverseEngine().count_tokens
    injected: dict[int, list[str]] = {}
    for row, text in enumerate(texts):
        for piece in segment(text, 128, count_tokens):
            fault = injector.fault_of(piece.text) if piece.translate else None
            if fault:
                injected.setdefault(row, []).append(fault)
    os.environ[FAULTS_VARIABLE] = ",".join(FAULTS)
    os.environ[FAULT_EVERY_VARIABLE] = str(FAULT_EVERY)
    try:
        with tempfile.TemporaryDirectory(prefix="mtfleet-health-") as work:
            output, _ = run(
                write_jsonl(Path(work) / "faulty.jsonl", texts), Path(work), ["text"],
                model="none", engine="reverse", tgt_lang="de",
            )  # fmt: skip
            outputs = [json.loads(line)["text"] for line in output.read_text().splitlines()]
            flagged = flagged_rows(output)
    finally:
        del os.environ[FAULTS_VARIABLE], os.environ[FAULT_EVERY_VARIABLE]
    per_fault: dict[str, dict[str, int]] = {
        fault: {"injected": 0, "flagged": 0, "cured": 0} for fault in FAULTS
    }
    for row, row_faults in injected.items():
        # a segment is retried only when flagged: an output that is not the faulty one was caught
        cured = outputs[row] != injector.translate(texts[row])
        for fault in row_faults:
            counts = per_fault[fault]
            counts["injected"] += 1
            if CAUGHT_AS[fault] in flagged.get(row, []):
                counts["flagged"] += 1
            elif cured:
                counts["cured"] += 1
    clean = [row for row in range(len(texts)) if row not in injected]
    return {
        "rows": len(texts),
        "every": FAULT_EVERY,
        "per_fault": per_fault,
        "clean_rows": len(clean),
        "clean_rows_flagged": sum(row in flagged for row in clean),
    }


def _per_check(flag_lists: Any) -> dict[str, int]:
    counts = Counter(check for checks in flag_lists for check in checks)
    return {check: counts[check] for check in CHECKS if counts[check]}


def measure(model: Path, data: Path, limit: int | None = None) -> dict[str, Any]:
    report = {"model": os.path.relpath(model.resolve(), ROOT), "limit": limit}
    print("  health: Multi30k", file=sys.stderr)
    report["multi30k"] = multi30k(model, data, limit)
    print("  health: alpaca sample", file=sys.stderr)
    report["alpaca"] = alpaca(model)
    print("  health: injected faults", file=sys.stderr)
    report["faults"] = faults(data, limit)
    return report


def print_tables(report: dict[str, Any]) -> None:
    m = report["multi30k"]
    print(f"\nhealth, {TEST_SET} ({m['sentences']} sentences, hf greedy, --tgt-lang de)")
    print(f"  flagged: {m['flagged']} ({100 * m['flagged'] / m['sentences']:.1f}%)")
    for check, count in m["per_check"].items():
        print(f"    {check:14} {count:5} ({100 * count / m['sentences']:.1f}%)")
    print(
        f"  BLEU flagged {m['bleu_flagged']}, unflagged {m['bleu_unflagged']}, all {m['bleu_all']}"
    )
    a = report["alpaca"]
    print(f"\nhealth, alpaca sample ({a['fields']} fields)")
    print(f"  flagged: {a['flagged']} ({100 * a['flagged'] / max(a['fields'], 1):.1f}%)")
    for check, count in a["per_check"].items():
        print(f"    {check:14} {count:5} ({100 * count / a['fields']:.1f}%)")
    f = report["faults"]
    print(f"\ninjected faults (reverse engine, 1 segment in {f['every']}, {f['rows']} rows)")
    print(f"  {'fault':14} {'injected':>8} {'flagged':>8} {'cured':>6} {'caught':>7}")
    for fault, counts in f["per_fault"].items():
        caught = counts["flagged"] + counts["cured"]
        share = f"{100 * caught / counts['injected']:.0f}%" if counts["injected"] else "-"
        print(
            f"  {fault:14} {counts['injected']:8} {counts['flagged']:8} {counts['cured']:6} "
            f"{share:>7}"
        )
    print(f"  clean rows flagged: {f['clean_rows_flagged']} of {f['clean_rows']}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "health.json")
    parser.add_argument("--limit", type=int, help="only the first N sentences of the test set")
    args = parser.parse_args(argv)
    report = measure(args.model, args.data, args.limit)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_tables(report)


if __name__ == "__main__":
    main()
