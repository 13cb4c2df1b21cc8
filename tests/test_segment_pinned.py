"""Segmentation pinned: the pieces of a varied corpus are those the segmenter gave when this file
was written, so that making segmentation faster never changes what a model is sent.

tests/data/segmentation_pinned.json.gz holds, for each text of `corpus()` (URLs, code,
placeholders, emoji, Markdown, abbreviations, Indic scripts, CJK; the examples, the bench's
labelled translations, the sample corpus, Multi30k's English validation captions and
combinations of all these), a digest of its pieces at two token limits, with and without
protected spans. It was written by the segmenter of commit db3e6fd
(`python tests/test_segment_pinned.py`); write it again only for a change of segmentation that
is meant, and say why in its commit. A text whose pieces differ is named with its pieces now;
its pieces then are those the segmenter of that commit gives it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from mtfleet.data.segment import Piece, Protection, segment_texts

ROOT = Path(__file__).resolve().parents[1]
PINNED = ROOT / "tests" / "data" / "segmentation_pinned.json.gz"
MULTI30K_VAL = ROOT.parent / "shared" / "data" / "multi30k" / "val.en.gz"

VARIED = [
    # URLs, e-mails and the brackets and punctuation around them
    "Read https://docs.ray.io/en/latest/index.html. Then run it.",
    "See (https://example.com/a_(b)) and [www.example.org/path?x=1&y=2], or http://x.io/.",
    "Links: https://a.org/x, ftp://files.example.com/pub/f.txt; www.b.com! Done? Yes.",
    'He wrote "https://quoted.example.com" and left. Mail ops+alerts@example.co.uk today.',
    "Visit https://example.com/über?q=naïve#frag… then stop.",
    # code, fenced and inline
    "Use `pip install mtfleet` first. Then call `run()`.",
    "```python\ndef f(x):\n    return x * 2  # doubles. Really.\n```\nThat doubles x. Try it.",
    "~~~\nraw text. Not translated\n~~~\nAfter the tilde fence.",
    "Inline ``a ` b`` and ```c``` and `d`. End.",
    "  ```\n  indented fence\n  ```\nAfter. And then `x = {'a': 1}` in a sentence.",
    "```\nunclosed fence. It runs to the end.\nStill code.",
    "Call foo(bar) with **kwargs and *args. x_y_z is a name; __init__ too.",
    # placeholders and markup
    "Hello {name}, you have {count} new messages. {{ user.email }} is yours.",
    "Saved %s of %(total)d files (%.2f%%). Press $HOME or ${PATH} now.",
    "Click <b>Save</b> then <a href='x'>here</a>. <br/> New line <img src=a.png />.",
    "This is **bold**, this is *italic*, this is _also italic_ and ~~struck~~. __Strong__ too.",
    "Keep ACME-1234 and ACME-99 as they are. The Ray cluster uses machine translation.",
    "Do not touch <dnt>mtfleet run</dnt> or <dnt>Ray</dnt>. Translate the rest.",
    "{0} and {1} were {2}. {x!r:>10} formats.",
    # emoji and symbols
    "I love it 😀! Family: 👨‍👩‍👧‍👦. Thumbs 👍🏽 up. Flags 🇫🇷🇩🇪 wave.",
    "Keycap 1️⃣ and ✔️ done ✅. Arrows → ← ↔ and ★ stars. ™ and © marks.",
    "🙂🙂🙂",
    "Weather: ☀️ sunny, ☔ rainy. Next: ⚡!",
    # Markdown
    "# Title\n\nSome text. More text!\n\n## Section 2\n- item one. Still one.\n- item two\n  "
    "* nested\n1. first\n2) second\n(3) third\niv. roman\n> quoted line. Another.\n",
    "| Name | Value |\n|---|---|\n| alpha. beta | 1.5 |\n| gamma | x |",
    "Col A\tCol B\tCol C\nvalue one. two\tvalue two\t3",
    "[link text](https://example.com/page) and ![alt](img.png). Footnote[^1].",
    "***\n---\n___",
    # abbreviations, initials, numbers, quotes
    "Dr. Smith met Mr. Jones at 5 p.m. on Jan. 3. They discussed e.g. costs, i.e. money.",
    "The U.S. and the U.K. signed. J. R. R. Tolkien wrote it. Approx. 3.5 km vs. 2 mi.",
    "Chapter 12. Introduction. It costs $3.50. Version 2.0.1 is out. No. 5 wins.",
    "He said, 'Stop.' She said \"Go!\" (Really?) Then [nothing]. «Fin.» “Done.” ‘Ok.’",
    "Wait... what?! Yes!!! No?? Maybe… Sure.",
    "St. Louis and Mt. Everest; Prof. X, Sr. and Jr. met. Fig. 3 shows it. cf. above.",
    "a. first b. second. A. Third. i) fourth",
    # Indic scripts
    "यह एक वाक्य है। यह दूसरा वाक्य है॥ और तीसरा?",
    "আমি বাংলায় গান গাই। তুমি কি শুনবে?",
    "இது ஒரு வாக்கியம். இது இன்னொன்று!",
    "ఇది ఒక వాక్యం. https://te.wikipedia.org చూడండి.",
    "ਇਹ ਪੰਜਾਬੀ ਹੈ। ਹੋਰ ਵੀ।",
    "नमस्ते {name}, आपके पास {count} संदेश हैं। 😀 धन्यवाद।",
    # CJK and other scripts
    "你好。我很好！谢谢？今天天气很好。",
    "これは日本語です。「こんにちは。」と言った。次の文！",
    "한국어 문장입니다. 두 번째 문장!",
    "中文句子，没有句号结尾",
    "混合 English 和中文。Then English. 然后中文！",
    "مرحبا بك. كيف حالك؟ أنا بخير!",
    "Привет. Как дела? Всё хорошо!",
    "สวัสดีครับ นี่คือประโยค",
    "Ελληνικά. Δεύτερη πρόταση;",
    # whitespace and edges
    "",
    " ",
    "\n",
    "\r\n\r\n",
    "  padded sentence.  ",
    "Line one.\nLine two.\r\nWindows.\rOld Mac.\n",
    "no\u00a0break\u00a0space. And\u2028a line separator. Then\u3000ideographic space.",
    "12345",
    "... !!! ???",
    "(",
    ")(",
    "x",
    "A sentence, with clauses; and more: and a dash — and more, " * 6,
    "word " * 150,
    "Antidisestablishmentarianism" * 12,
]

PROTECTION = Protection(
    patterns=(r"ACME-\d+", r"\bx_y_z\b"),
    glossary={"Ray": "Ray", "machine translation": "MT", "Tolkien": "Tolkien"},
)
# 8: most sentences are over it and are cut (at holes, clauses, words, characters)
TOKEN_LIMITS = (128, 8)


def count_words(texts: Sequence[str]) -> list[int]:
    """Tokens as the reverse engine counts them: words plus an end-of-sentence token."""
    return [len(text.split()) + 1 for text in texts]


def corpus() -> list[str]:
    """The texts pinned: the varied ones, the repository's corpora and combinations of them."""
    texts = list(VARIED)
    rows = json.loads((ROOT / "examples" / "alpaca_sample.json").read_text(encoding="utf-8"))
    texts += [value for row in rows for value in row.values()]
    for line in (ROOT / "examples" / "multi30k_captions.jsonl").read_text("utf-8").splitlines():
        texts.append(json.loads(line)["caption"])
    for line in (ROOT / "bench" / "data" / "stutter_labels.jsonl").read_text("utf-8").splitlines():
        labelled = json.loads(line)
        texts += [labelled["source"], labelled["translation"]]
    texts += (ROOT / "src" / "mtfleet" / "sample_corpus.txt").read_text("utf-8").splitlines()
    with gzip.open(MULTI30K_VAL, "rt", encoding="utf-8") as captions:
        texts += captions.read().splitlines()
    return texts + combinations(texts, 3000)


def combinations(texts: Sequence[str], count: int) -> list[str]:
    """`count` texts each made of a few of `texts`' pieces joined by separators that cut or
    touch sentences, spans and lines (seeded: the same every run)."""
    chooser = random.Random(26)
    separators = [" ", "  ", "\n", "\n\n", "\t", ". ", "! ", "。", "| ", " (", ") ", "\r\n", ""]
    made = []
    for _ in range(count):
        parts = []
        for _ in range(chooser.randint(2, 5)):
            text = chooser.choice(texts)
            start = chooser.randint(0, len(text))
            parts.append(text[start : start + chooser.randint(1, 200)])
            parts.append(chooser.choice(separators))
        made.append("".join(parts))
    return made


SETTINGS = [f"{name} {limit}" for limit in TOKEN_LIMITS for name in ("plain", "protected")]


def segmentation(texts: Sequence[str], setting: str) -> list[list[list[Any]]]:
    """The pieces of each text in `setting` (`plain 128`: no protected spans, 128 tokens)."""
    name, max_tokens = setting.split()
    protection = PROTECTION if name == "protected" else Protection()
    return [
        [_piece_json(piece) for piece in pieces]
        for pieces in segment_texts(texts, int(max_tokens), count_words, protection)
    ]


def digest(pieces: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(pieces).encode()).hexdigest()[:10]


def _piece_json(piece: Piece) -> list[Any]:
    holes = [
        [h.start, h.end, h.output, h.words_before, h.glue_before, h.glue_after] for h in piece.holes
    ]
    return [piece.text, piece.translate, piece.output, holes, piece.source]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


@pytest.fixture(scope="module")
def pinned() -> dict[str, Any]:
    with gzip.open(PINNED, "rt", encoding="utf-8") as stream:
        return json.load(stream)


def test_the_pinned_corpus_is_the_one_segmented_here(
    texts: list[str], pinned: dict[str, Any]
) -> None:
    assert pinned["corpus"] == hashlib.sha256(json.dumps(texts).encode()).hexdigest()


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_text_is_cut_into_the_pieces_pinned(
    texts: list[str], pinned: dict[str, Any], setting: str
) -> None:
    found = segmentation(texts, setting)
    for text, pieces, expected in zip(texts, found, pinned[setting], strict=True):
        assert digest(pieces) == expected, f"{setting}: {text!r} is now cut into {pieces}"


def test_the_corpus_holds_every_kind_of_text_named(texts: list[str]) -> None:
    joined = "\n".join(texts)
    for sample in ("https://", "```", "{name}", "%s", "<b>", "**", "👍🏽", "| ", "Dr.", "।", "。"):
        assert sample in joined
    assert len(texts) > 4000


if __name__ == "__main__":
    corpus_texts = corpus()
    PINNED.parent.mkdir(exist_ok=True)
    with gzip.open(PINNED, "wt", encoding="utf-8") as stream:
        pins = {s: [digest(p) for p in segmentation(corpus_texts, s)] for s in SETTINGS}
        json.dump(
            {"corpus": hashlib.sha256(json.dumps(corpus_texts).encode()).hexdigest(), **pins},
            stream,
        )
    sys.exit(0)
