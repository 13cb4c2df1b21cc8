"""Spans in chat data through the demo model: kept verbatim, and the sentence around them intact.

Each Multi30k test_2016 sentence is also given one span of each kind chat data has (emoji, URL,
placeholder, inline code, bold, list marker, a Markdown table row) and translated with and
without it. Per kind: the share of spans kept verbatim (target 100 %), and invariance BLEU: the
span variant's translation with the span taken out again, against the translation without it
(target >= 90; 100: the span changed nothing around it). Two segmentations run in the same
process: today's holes (the sentence sent whole without its spans, which are put back after) and
the cut they replaced (the sentence translated in pieces around each span), as the baseline.

    .venv/bin/python bench/fidelity.py [--model models/multi30k-en-de] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import sacrebleu

from mtfleet.data.segment import Piece, cut_at_holes, reassemble, segment_texts
from mtfleet.engines import load_engine
from mtfleet.training import read_lines

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "multi30k-en-de"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "multi30k"
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "fidelity.json"
TEST_SET = "test_2016_flickr"


def middle(sentence: str, span: str) -> str:
    words = sentence.split()
    return " ".join([*words[: len(words) // 2], span, *words[len(words) // 2 :]])


def bold(sentence: str) -> str:
    words = sentence.split()
    words[len(words) // 2] = f"**{words[len(words) // 2]}**"
    return " ".join(words)


# kind -> (the sentence with its span, whether a translation kept the span, the span taken out)
Kind = tuple[Callable[[str], str], Callable[[str], bool], Callable[[str], str]]
URL = "https://example.com/docs?id=7"
KINDS: dict[str, Kind] = {
    "emoji": (
        lambda s: middle(s, "🐶"),
        lambda t: t.count("🐶") == 1,
        lambda t: t.replace("🐶", " "),
    ),
    "url": (lambda s: middle(s, URL), lambda t: t.count(URL) == 1, lambda t: t.replace(URL, " ")),
    "placeholder": (
        lambda s: middle(s, "{user_name}"),
        lambda t: t.count("{user_name}") == 1,
        lambda t: t.replace("{user_name}", " "),
    ),
    "inline code": (
        lambda s: middle(s, "`print()`"),
        lambda t: t.count("`print()`") == 1,
        lambda t: t.replace("`print()`", " "),
    ),
    "bold": (
        bold,
        lambda t: re.search(r"\*\*\S[^*]*\*\*", t) is not None,
        lambda t: t.replace("**", ""),
    ),
    "list marker": (
        lambda s: "- " + s,
        lambda t: t.startswith("- "),
        lambda t: t.removeprefix("- "),
    ),
    "table row": (
        lambda s: f"| {s} | 42 |",
        lambda t: t.startswith("| ") and t.endswith(" | 42 |"),
        lambda t: t.removeprefix("| ").removesuffix(" | 42 |"),
    ),
}


def translate(engine: object, texts: Sequence[str], *, cut: bool) -> list[str]:
    """Texts through segmentation, one engine call over the distinct pieces, and reassembly; with
    `cut`, every sentence with spans is cut at them, as before holes."""
    pieces_per_text: list[list[Piece]] = segment_texts(
        texts,
        engine.max_input_tokens,
        engine.count_tokens,  # type: ignore[attr-defined]
    )
    if cut:
        pieces_per_text = [
            [p for piece in pieces for p in (cut_at_holes(piece) if piece.holes else [piece])]
            for pieces in pieces_per_text
        ]
    unique = list(
        dict.fromkeys(p.text for pieces in pieces_per_text for p in pieces if p.translate)
    )
    translation_of = dict(zip(unique, engine.translate(unique), strict=True))  # type: ignore[attr-defined]
    return [
        reassemble(pieces, [translation_of[p.text] for p in pieces if p.translate])
        for pieces in pieces_per_text
    ]


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def measure(engine: object, sentences: list[str], *, cut: bool) -> dict[str, dict[str, float]]:
    plain = translate(engine, sentences, cut=cut)
    results = {}
    for kind, (with_span, kept, without) in KINDS.items():
        outputs = translate(engine, [with_span(s) for s in sentences], cut=cut)
        around = [normalized(without(output)) for output in outputs]
        results[kind] = {
            "kept": round(100 * sum(map(kept, outputs)) / len(outputs), 1),
            "invariance_bleu": round(sacrebleu.corpus_bleu(around, [plain]).score, 1),
        }
        print(f"  {'cut' if cut else 'holes'} {kind}: {results[kind]}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    sentences = read_lines(args.data / f"{TEST_SET}.en.gz")[: args.limit]
    engine = load_engine("hf", str(args.model), beam=1)
    results = {
        "model": str(
            args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model
        ),
        "test_set": TEST_SET,
        "sentences": len(sentences),
        "holes": measure(engine, sentences, cut=False),
        "cut (before)": measure(engine, sentences, cut=True),
    }
    args.output.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"\nspans in {len(sentences)} {TEST_SET} sentences, {results['model']} (hf, greedy)")
    print(
        f"  {'kind':12s} {'kept (holes)':>13s} {'kept (cut)':>11s} {'inv. BLEU (holes)':>18s} {'(cut)':>7s}"
    )
    for kind in KINDS:
        new, old = results["holes"][kind], results["cut (before)"][kind]
        print(
            f"  {kind:12s} {new['kept']:12.1f}% {old['kept']:10.1f}%"
            f" {new['invariance_bleu']:18.1f} {old['invariance_bleu']:7.1f}"
        )


if __name__ == "__main__":
    main()
