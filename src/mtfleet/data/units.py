"""Units: every value a field path reaches in a row, and whether a model ever sees it."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, NamedTuple

from mtfleet.data.fieldpaths import FieldPath, Location, find_values, set_value


class UnitKind(StrEnum):
    TEXT = "text"
    """A string with something in it: translated."""
    EMPTY = "empty"
    """None, "" or whitespace only: copied unchanged, never sent to a model."""
    NON_TEXT = "non_text"
    """A number, bool, object or list: copied unchanged."""


class Unit(NamedTuple):
    """One value of one row: `text` is the string for TEXT and EMPTY strings, else None.

    A named tuple: planning and assembly make one for every value of every row, and a frozen
    dataclass took twice the time to make."""

    row: int
    location: Location
    kind: UnitKind
    text: str | None


def unit_kind(value: Any) -> UnitKind:
    if isinstance(value, str):
        return UnitKind.EMPTY if not value or value.isspace() else UnitKind.TEXT
    return UnitKind.EMPTY if value is None else UnitKind.NON_TEXT


def extract_units(
    rows: Sequence[dict[str, Any]], paths: Sequence[FieldPath], row_offset: int = 0
) -> list[Unit]:
    """The units of `rows` row by row, then path by path; `row` counts from `row_offset`."""
    # positional: a named tuple made by keywords took a third longer, and every value is one
    return [
        Unit(
            row_offset + index,
            location,
            unit_kind(value),
            value if isinstance(value, str) else None,
        )
        for index, row in enumerate(rows)
        for path in paths
        for location, value in find_values(row, path)
    ]


def apply_translations(
    rows: list[dict[str, Any]],
    units: Sequence[Unit],
    translations: Sequence[str],
    row_offset: int = 0,
) -> None:
    """Puts the translations (one per TEXT unit, in order) into `rows` in place."""
    text_units = [unit for unit in units if unit.kind is UnitKind.TEXT]
    for unit, translation in zip(text_units, translations, strict=True):
        set_value(rows[unit.row - row_offset], unit.location, translation)
