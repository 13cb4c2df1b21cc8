"""Segmentation and reassembly: what a model is sent, and how its translations are put back."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from mtfleet.data import Piece, reassemble, segment, segment_texts
from mtfleet.data.segment import WHITESPACE

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"


def count_words(texts: Sequence[str]) -> list[int]:
    """Tokens as the reverse engine counts them: words plus an end-of-sentence token."""
    return [len(text.split()) + 1 for text in texts]


def sent(text: str, max_tokens: int = 128) -> list[str]:
    """The pieces of `text` a model would be sent."""
    return [piece.text for piece in segment(text, max_tokens, count_words) if piece.translate]


NASTY = [
    "",
    "   ",
    "\n\n",
    "Hello",
    "  Leading and trailing spaces.  ",
    "Line one.\nLine two.\r\nWindows line.\rOld Mac line.\n",
    "\n\nBlank lines around.\n\n\n",
    "1. First item.\n2. Second item.\n\n- bullet\n* star\n(3) third\na) letter\n# Heading\n> quote",
    "```python\nprint('hi. There')\n```\nAfter the code.",
    "Before.\n    ```\n    indented fence. Still code\n    ```\nAfter.",
    "```\nan unclosed fence runs to the end. Really.",
    "Inline ```triple``` and ``double ` tick`` and `single` code.",
    "See https://example.com/a_(b). Then (https://x.org/p?q=1&r=2) and www.example.org, ok?",
    "Mail me at first.last+tag@example.co.uk. Thanks!",
    "Dr. Smith met Mr. Jones e.g. yesterday in the U.S. It rained! J. R. R. Tolkien wrote.",
    'Wait... What?! Yes. "Quoted." (Bracketed.) Next one.',
    "你好。我很好！谢谢？",
    "यह एक वाक्य है। दूसरा वाक्य।",
    "3.14159 + 2 = 5.14159",
    "\t\tindented\twith\ttabs\t",
    "🙂 smile 🙂",
    "non\u00a0breaking\u00a0space. And\u2028line separator.",
    "A sentence, with clauses; and more: and a dash — and more, " * 12,
    "word " * 300,
    "Supercalifragilistic" * 40,
    "x",
    " . ",
]


def alpaca_values() -> list[str]:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))
    return [value for row in rows for value in row.values() if value]


CASES = NASTY + alpaca_values()


def short(text: str) -> str:
    return repr(text[:24])


@pytest.mark.parametrize("max_tokens", [6, 128])
@pytest.mark.parametrize("text", CASES, ids=short)
def test_pieces_join_back_to_the_text_exactly(text: str, max_tokens: int) -> None:
    pieces = segment(text, max_tokens, count_words)
    assert "".join(piece.original for piece in pieces) == text
    assert reassemble(pieces, [piece.text for piece in pieces if piece.translate]) == text


@pytest.mark.parametrize("text", CASES, ids=short)
def test_pieces_sent_are_stripped_hold_a_letter_and_fit_the_token_limit(text: str) -> None:
    for piece in segment(text, 6, count_words):
        assert piece.text
        if piece.translate:
            assert piece.text == piece.text.strip()
            assert any(character.isalpha() for character in piece.text)
            assert count_words([piece.text])[0] <= 6


def test_the_whitespace_around_a_sentence_is_what_str_strip_takes_off() -> None:
    every_character = map(chr, range(sys.maxunicode + 1))
    assert set(WHITESPACE) == {character for character in every_character if character.isspace()}


def test_equal_texts_are_segmented_once_and_given_the_same_pieces() -> None:
    counted: list[str] = []

    def counting(texts: Sequence[str]) -> list[int]:
        counted.extend(texts)
        return count_words(texts)

    first, again = segment_texts(["One. Two.", "One. Two."], 128, counting)
    assert first == again == [Piece("One.", True), Piece(" ", False), Piece("Two.", True)]
    assert counted == ["One.", "Two."]


def test_neighbouring_verbatim_pieces_are_merged() -> None:
    pieces = segment("One.  \n\n2. Two.", 128, count_words)
    assert pieces == [Piece("One.", True), Piece("  \n\n2. ", False), Piece("Two.", True)]


def test_values_split_at_line_ends_and_sentence_ends() -> None:
    assert sent("First line\nSecond one. Third one! Fourth? 你好。我很好") == [
        "First line",
        "Second one.",
        "Third one!",
        "Fourth?",
        "你好。",
        "我很好",
    ]


def test_sentences_do_not_end_at_abbreviations_initials_numbers_or_before_lowercase() -> None:
    assert sent(
        "Dr. Smith saw J. K. Rowling in the U.S. Today. Steps: 1. Mix. It is approx. five."
    ) == [
        "Dr. Smith saw J. K. Rowling in the U.S. Today.",
        "Steps: 1. Mix.",
        "It is approx. five.",
    ]


def test_numbered_list_markers_are_verbatim_and_never_sent_alone() -> None:
    text = "1. Eat a balanced diet. \n2. Exercise regularly.\n10) Sleep.\n- Rest\n  * Nested"
    assert sent(text) == ["Eat a balanced diet.", "Exercise regularly.", "Sleep.", "Rest", "Nested"]


def test_text_without_letters_is_kept_and_never_sent() -> None:
    assert sent("42") == []
    assert sent("3.14 + 2 = 5.14\n---\n1.") == []
    assert sent("Pi is 3.14. 2 + 2 = 4.") == ["Pi is 3.14."]


def test_fenced_code_inline_code_urls_and_emails_are_never_sent() -> None:
    text = (
        "Run this:\n```bash\necho 'Hello. World'\n```\n"
        "Call `print()` or see https://example.com/docs. Mail a@b.org today."
    )
    pieces = segment(text, 128, count_words)

    assert [piece.text for piece in pieces if piece.translate] == [
        "Run this:",
        "Call or see.",
        "Mail today.",
    ]
    assert "```bash\necho 'Hello. World'\n```" in "".join(
        piece.text for piece in pieces if not piece.translate
    )
    assert [hole.output for piece in pieces for hole in piece.holes] == [
        "`print()`",
        "https://example.com/docs",
        "a@b.org",
    ]


def test_a_sentence_is_sent_whole_without_its_spans_and_gets_them_back_in_place() -> None:
    pieces = segment("See https://a.org/x and http://b.org for details.", 128, count_words)

    assert [piece.text for piece in pieces if piece.translate] == ["See and for details."]
    assert (
        reassemble(pieces, ["Siehe und für Details."])
        == "Siehe https://a.org/x und http://b.org für Details."
    )


@pytest.mark.parametrize(
    ("text", "sent_text", "translation", "expected"),
    [
        ("Hello, {name}!", "Hello,!", "Hallo,!", "Hallo, {name}!"),
        ("Use %s or %(count)d here.", "Use or here.", "Nimm oder hier.", None),
        ("Click <b>here</b> now.", "Click here now.", "Klick hier jetzt.", None),
        ("A **big** dog.", "A big dog.", "Ein großer Hund.", "Ein **großer** Hund."),
        ("An _odd_ cat.", "An odd cat.", "Eine seltsame Katze.", None),
        (
            "A happy dog 🐶 in the snow ❄️ with 👧👦!",
            "A happy dog in the snow with!",
            "Ein glücklicher Hund im Schnee mit!",
            None,
        ),
        ("Check `x`.", "Check.", "Prüfe.", "Prüfe `x`."),
        (
            "See (https://en.wikipedia.org/wiki/Rust_(language)).",
            "See.",
            "Siehe.",
            "Siehe (https://en.wikipedia.org/wiki/Rust_(language)).",
        ),
    ],
)
def test_placeholders_tags_emphasis_and_emoji_travel_as_holes(
    text: str, sent_text: str, translation: str, expected: str | None
) -> None:
    pieces = segment(text, 128, count_words)

    assert [piece.text for piece in pieces if piece.translate] == [sent_text]
    back = reassemble(pieces, [translation])
    for hole in (hole for piece in pieces for hole in piece.holes):
        assert hole.output in back
    if expected is not None:
        assert back == expected


def test_spans_at_a_sentence_edge_stay_outside_it() -> None:
    pieces = segment("`foo()` returns a list. 🎉", 128, count_words)

    assert pieces == [
        Piece("`foo()` ", False),
        Piece("returns a list.", True),
        Piece(" 🎉", False),
    ]


def test_a_table_row_is_translated_cell_by_cell_and_tabs_cut_a_line() -> None:
    assert sent("| Name | Age |\n|---|---|\n| Tom | three |") == ["Name", "Age", "Tom", "three"]
    assert sent("Name:\tdog\tcat") == ["Name:", "dog", "cat"]


def test_an_over_long_sentence_with_holes_is_cut_at_its_spans() -> None:
    text = "one two `a` three four `b` five six."

    pieces = segment(text, 5, count_words)

    assert [piece.text for piece in pieces if piece.translate] == [
        "one two",
        "three four",
        "five six.",
    ]
    assert "".join(piece.original for piece in pieces) == text


def test_a_fence_opening_a_line_without_a_close_keeps_the_rest_verbatim() -> None:
    assert sent("Code follows.\n```\nx = 1. Not prose") == ["Code follows."]


def test_whitespace_around_and_inside_a_value_is_verbatim() -> None:
    pieces = segment("  \tHello there.\n\n  Bye.  \n", 128, count_words)
    assert pieces == [
        Piece("  \t", False),
        Piece("Hello there.", True),
        Piece("\n\n  ", False),
        Piece("Bye.", True),
        Piece("  \n", False),
    ]


def test_an_over_long_sentence_is_cut_at_clause_punctuation_first() -> None:
    text = "one two three, four five six; seven eight nine: ten eleven twelve."
    assert sent(text, max_tokens=8) == [
        "one two three, four five six;",
        "seven eight nine: ten eleven twelve.",
    ]


def test_an_over_long_run_of_words_is_cut_at_whitespace() -> None:
    words = [f"w{index}" for index in range(20)]
    parts = sent(" ".join(words), max_tokens=8)
    assert [part.split() for part in parts] == [words[0:7], words[7:14], words[14:20]]


def test_an_over_long_word_is_cut_into_characters_never_truncated() -> None:
    def count_characters(texts: Sequence[str]) -> list[int]:
        return [len(text) + 1 for text in texts]

    word = "abcdefghij" * 10
    pieces = segment(word, 16, count_characters)
    assert "".join(piece.original for piece in pieces) == word
    assert all(piece.translate and len(piece.text) <= 15 for piece in pieces)


def test_a_limit_too_small_for_one_character_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot hold even the one character"):
        segment("abc", 1, lambda texts: [len(text) + 1 for text in texts])


def test_tokens_are_counted_in_a_few_batches_however_long_the_text() -> None:
    calls: list[int] = []

    def counting(texts: Sequence[str]) -> list[int]:
        calls.append(len(texts))
        return count_words(texts)

    text = " ".join(f"word{index}" for index in range(5000))
    pieces = segment(text, 128, counting)
    assert "".join(piece.original for piece in pieces) == text
    assert len(calls) <= 5


def test_many_texts_are_counted_in_one_call_when_nothing_is_too_long() -> None:
    calls: list[Sequence[str]] = []

    def counting(texts: Sequence[str]) -> list[int]:
        calls.append(texts)
        return count_words(texts)

    segment_texts(["Same one. Other one.", "Same one."] * 100, 128, counting)
    assert calls == [["Same one.", "Other one."]]


def test_reassemble_puts_each_translation_in_its_place() -> None:
    pieces = segment("  1. Hello. `code` World!\n", 128, count_words)
    assert reassemble(pieces, ["Bonjour.", "Monde !"]) == "  1. Bonjour. `code` Monde !\n"


def test_reassemble_drops_whitespace_a_model_adds_around_a_translation() -> None:
    pieces = segment("A.\nB.", 128, count_words)
    assert reassemble(pieces, [" a. ", "\nb.\n"]) == "a.\nb."


def test_reassemble_rejects_too_few_or_too_many_translations() -> None:
    pieces = segment("One. Two.", 128, count_words)
    with pytest.raises(ValueError, match="fewer"):
        reassemble(pieces, ["Un."])
    with pytest.raises(ValueError, match="more"):
        reassemble(pieces, ["Un.", "Deux.", "Trois."])


def test_symbol_joiners_are_all_where_symbols_are_looked_for() -> None:
    """Symbol runs are looked for only among characters from _SYMBOLS_FROM on: a joiner below it
    would be missed."""
    from mtfleet.data.segment import _SYMBOL_JOINERS, _SYMBOLS_FROM

    assert min(map(ord, _SYMBOL_JOINERS)) >= _SYMBOLS_FROM
