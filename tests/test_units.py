"""Units: every (row, field path) value, and which of them a model ever sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtfleet.data import (
    Unit,
    UnitKind,
    apply_translations,
    extract_units,
    parse_field_paths,
    unit_kind,
)

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("Translate me.", UnitKind.TEXT),
        ("  padded  ", UnitKind.TEXT),
        (None, UnitKind.EMPTY),
        ("", UnitKind.EMPTY),
        (" \n\t ", UnitKind.EMPTY),
        (3, UnitKind.NON_TEXT),
        (2.5, UnitKind.NON_TEXT),
        (True, UnitKind.NON_TEXT),
        ({"a": "b"}, UnitKind.NON_TEXT),
        (["a"], UnitKind.NON_TEXT),
    ],
)
def test_strings_with_content_are_text_null_and_blank_are_empty_the_rest_non_text(
    value: object, kind: UnitKind
) -> None:
    assert unit_kind(value) is kind


def test_units_go_row_by_row_then_path_by_path_then_in_document_order() -> None:
    rows = [
        {"b": "B0", "a": [{"v": "x"}, {"v": "y"}]},
        {"a": [], "b": None},
    ]
    units = extract_units(rows, parse_field_paths("b,a[].v"), row_offset=10)
    assert units == [
        Unit(10, ("b",), UnitKind.TEXT, "B0"),
        Unit(10, ("a", 0, "v"), UnitKind.TEXT, "x"),
        Unit(10, ("a", 1, "v"), UnitKind.TEXT, "y"),
        Unit(11, ("b",), UnitKind.EMPTY, None),
    ]


def test_an_empty_string_unit_keeps_its_text_and_a_non_text_unit_has_none() -> None:
    units = extract_units([{"a": "  ", "b": 4}], parse_field_paths("a,b"))
    assert [(unit.kind, unit.text) for unit in units] == [
        (UnitKind.EMPTY, "  "),
        (UnitKind.NON_TEXT, None),
    ]


def test_the_54_empty_alpaca_inputs_are_empty_units_and_every_other_field_is_text() -> None:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))
    units = extract_units(rows, parse_field_paths("instruction,input,output"))
    assert len(units) == 3 * 102
    empty = [unit for unit in units if unit.kind is UnitKind.EMPTY]
    assert len(empty) == 54
    assert {unit.location for unit in empty} == {("input",)}
    assert sum(unit.kind is UnitKind.TEXT for unit in units) == 3 * 102 - 54


def test_translations_replace_only_text_units_in_place() -> None:
    rows = [{"a": "one", "b": ""}, {"a": "two", "b": 5}]
    units = extract_units(rows[1:], parse_field_paths("a,b"), row_offset=1)
    apply_translations(rows[1:], units, ["deux"], row_offset=1)
    assert rows == [{"a": "one", "b": ""}, {"a": "deux", "b": 5}]


def test_a_translation_count_unlike_the_text_unit_count_is_an_error() -> None:
    rows = [{"a": "one"}]
    with pytest.raises(ValueError):
        apply_translations(rows, extract_units(rows, parse_field_paths("a")), ["un", "extra"])
