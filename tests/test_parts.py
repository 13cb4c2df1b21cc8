"""Part files: what a translator writes of a shard is what assembly reads back."""

from __future__ import annotations

from pathlib import Path

from mtfleet.cluster.parts import part_path, read_part, write_part
from mtfleet.cluster.plan import UnitLine

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


def test_an_empty_part_reads_back_empty(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    path = part_path(tmp_path, 0, 0, "lease-1")
    write_part(path, [])
    assert list(read_part(path)) == []
