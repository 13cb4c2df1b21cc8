"""translate_texts: texts segmented, deduplicated, translated in one engine call and reassembled.

The reverse engine is the oracle: every text must come back as its pieces, each piece sent to the
model reversed in place and every other piece untouched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from mtfleet.data import (
    UnitKind,
    apply_translations,
    extract_units,
    parse_field_paths,
    read_dataset,
    segment,
    write_dataset,
)
from mtfleet.errors import ModelError
from mtfleet.pipeline import translate_texts
from mtfleet.testing.engines import ReverseEngine

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"


def reversed_pieces(text: str, engine: ReverseEngine) -> str:
    """What the reverse engine must make of `text`: each piece sent reversed, the rest kept."""
    pieces = segment(text, engine.max_input_tokens, engine.count_tokens)
    return "".join(piece.text[::-1] if piece.translate else piece.text for piece in pieces)


def alpaca_texts() -> list[str]:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))
    return [row[field] for row in rows for field in ("instruction", "input", "output")]


def test_each_text_comes_back_as_its_pieces_translated_in_place() -> None:
    engine = ReverseEngine(max_input_tokens=12)
    texts = alpaca_texts()
    outcome = translate_texts(texts, engine)
    assert outcome.translations == [reversed_pieces(text, engine) for text in texts]


def test_identical_segments_across_texts_reach_the_engine_once_in_one_call() -> None:
    engine = ReverseEngine()
    outcome = translate_texts(["Hello. World.", "World. Again!", "Hello."], engine)
    assert engine.calls == [["Hello.", "World.", "Again!"]]
    assert (outcome.segments, outcome.segments_unique) == (5, 3)
    assert outcome.translations == [".olleH .dlroW", ".dlroW !niagA", ".olleH"]


def test_source_tokens_count_the_distinct_segments_sent() -> None:
    outcome = translate_texts(["One two. Three.", "One two."], ReverseEngine())
    assert outcome.source_tokens == 3 + 2


def test_empty_blank_and_letterless_texts_come_back_unchanged_and_never_reach_the_model() -> None:
    engine = ReverseEngine()
    texts = ["", "   ", "\n\n", "42", "```\ncode()\n```"]
    outcome = translate_texts(texts, engine)
    assert outcome.translations == texts
    assert engine.calls == []
    assert (outcome.segments, outcome.segments_unique, outcome.source_tokens) == (0, 0, 0)


def test_a_5000_token_field_is_translated_whole() -> None:
    engine = ReverseEngine(max_input_tokens=128)
    sentences = [
        f"Sentence {index} has a few words, some of them more than once." for index in range(400)
    ]
    long_field = " ".join(sentences) + "\n\n" + " ".join(f"run{index}" for index in range(1000))
    assert engine.count_tokens([long_field])[0] > 5000
    outcome = translate_texts([long_field], engine)
    (translation,) = outcome.translations
    assert translation == reversed_pieces(long_field, engine)
    assert len(translation) == len(long_field)
    sent = engine.calls[0]
    assert all(tokens <= 128 for tokens in engine.count_tokens(sent))
    assert outcome.segments == len(sent) == outcome.segments_unique
    assert outcome.source_tokens == sum(engine.count_tokens(sent))


def test_thousands_of_texts_reach_the_engine_in_one_call_and_are_counted_in_a_few_batches() -> None:
    class CountingEngine(ReverseEngine):
        count_calls = 0

        def count_tokens(self, texts: Sequence[str]) -> list[int]:
            self.count_calls += 1
            return super().count_tokens(texts)

    engine = CountingEngine(max_input_tokens=32)
    texts = [f"Row {index}: {text}" for index, text in enumerate(alpaca_texts() * 30)]
    outcome = translate_texts(texts, engine)
    assert len(outcome.translations) == len(texts)
    assert len(engine.calls) == 1
    assert engine.count_calls < 0.1 * len(texts)


def test_an_engine_that_loses_a_translation_is_a_model_error() -> None:
    class LossyEngine(ReverseEngine):
        def translate(self, segments: Sequence[str]) -> list[str]:
            return super().translate(segments)[:-1]

    with pytest.raises(ModelError, match="returned 1 translations for 2 segments"):
        translate_texts(["One. Two."], LossyEngine())


def test_the_alpaca_sample_is_translated_row_for_row(tmp_path: Path) -> None:
    dataset = read_dataset(ALPACA)
    original = json.loads(ALPACA.read_text(encoding="utf-8"))
    units = extract_units(dataset.rows, parse_field_paths("instruction,input,output"))
    text_units = [unit for unit in units if unit.kind is UnitKind.TEXT]
    engine = ReverseEngine()
    outcome = translate_texts([unit.text or "" for unit in text_units], engine)
    apply_translations(dataset.rows, units, outcome.translations)
    write_dataset(dataset, dataset.rows, tmp_path / "out.json")

    written = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert len(written) == len(original) == 102
    assert [list(row) for row in written] == [list(row) for row in original]
    assert sum(row["input"] == "" for row in written) == 54
    for before, after in zip(original, written, strict=True):
        for field in ("instruction", "input", "output"):
            assert after[field] == reversed_pieces(before[field], engine)
            assert (after[field] != before[field]) == any(c.isalpha() for c in before[field])
    assert all("" not in call for call in engine.calls)
