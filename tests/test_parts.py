"""Part files: what a translator writes of a shard is what assembly reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtfleet.cluster.parts import part_path, read_part, write_part
from mtfleet.cluster.plan import LINE_ENCODER, UnitLine, encode_line

TRICKY = 'two\nlines, a \u2028 separator, \r\n a CRLF, "quotes" ][ }{ and 😀'


def test_a_part_reads_back_line_for_line_whatever_its_texts_hold(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    lines = [
        UnitLine(0, 0, "instruction", TRICKY),
        UnitLine(1, 0, "output", "", ("loop", "length")),
        UnitLine(2, 1, "conversations[0].value", "{x} \\ %s"),
        UnitLine(
            3, 1, "input", "", targets={"fra_Latn": (TRICKY, ("copy",)), "deu_Latn": ("", ())}
        ),
    ]
    path = part_path(tmp_path, 0, 2, "lease-1")
    write_part(path, lines)
    assert list(read_part(path)) == lines


@pytest.mark.parametrize("text", [TRICKY, "", "tab\there \\ back", "\x00\x1f\x7f</b>", "ünï 你好"])
@pytest.mark.parametrize(
    "more",
    [None, {"flags": ["loop", "ü"]}, {"filled": ['"x"', ["copy"]]}, {"filled": {"hin": ["", []]}}],
)
def test_a_line_is_written_byte_for_byte_as_the_line_encoder_writes_its_record(
    text: str, more: dict[str, object] | None
) -> None:
    record = {"unit": 7, "row": 1200, "loc": "conversations[2].value", "text": text, **(more or {})}
    expected = LINE_ENCODER.encode(record).encode() + b"\n"
    assert encode_line(7, 1200, "conversations[2].value", text, more) == expected


def test_an_empty_part_reads_back_empty(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    path = part_path(tmp_path, 0, 0, "lease-1")
    write_part(path, [])
    assert list(read_part(path)) == []
