"""Field paths: which values of a row to translate ("meta.title", "conversations[].value")."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from mtfleet.errors import FieldPathError

Location = tuple[str | int, ...]
"""The concrete place of one value in a row: ("conversations", 2, "value")."""


class _Every(Enum):
    ITEM = "[]"


EVERY_ITEM = _Every.ITEM
"""The step `[]`: every item of a list."""

Step = str | int | _Every

_NAME = r"[^.\[\],]+"
_PATH = re.compile(rf"{_NAME}(?:\[\d*\])*(?:\.{_NAME}(?:\[\d*\])*)*")
_STEP = re.compile(rf"(?P<key>{_NAME})|\[(?P<index>\d*)\]")
_EXAMPLES = "instruction, meta.title or conversations[].value"
# How many field names an error message lists before it says how many more there are.
_LISTED_FIELDS = 40


@dataclass(frozen=True)
class FieldPath:
    """A path to values in a row: keys joined by dots, `[]` for every item of a list."""

    text: str
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return self.text


def parse_field_paths(spec: str | Sequence[str]) -> list[FieldPath]:
    """Field paths from "a,b.c,d[].e" or a list of such strings; repeats are dropped."""
    entries = [spec] if isinstance(spec, str) else list(spec)
    texts = [text.strip() for entry in entries for text in entry.split(",") if text.strip()]
    if not texts:
        raise FieldPathError(
            f"No field paths given; name the fields to translate, like {_EXAMPLES}."
        )
    return [FieldPath(text, _parse_steps(text, "Field path")) for text in dict.fromkeys(texts)]


def find_values(row: dict[str, Any], path: FieldPath) -> list[tuple[Location, Any]]:
    """Every value `path` reaches in `row`, in document order; none where the row lacks it."""
    if len(path.steps) == 1 and isinstance(path.steps[0], str):
        # a top-level field (most paths): read at once, without the walk's lists
        key = path.steps[0]
        return [((key,), row[key])] if isinstance(row, dict) and key in row else []
    found: list[tuple[Location, Any]] = [((), row)]
    for step in path.steps:
        found = [
            ((*location, key), child)
            for location, value in found
            for key, child in _children(value, step)
        ]
    return found


def set_value(row: dict[str, Any], location: Location, value: Any) -> None:
    """Replaces the value at `location` (which must exist) in `row`."""
    if len(location) == 1:
        # a top-level field (most locations): set at once, without the walk
        row[location[0]] = value  # type: ignore[index]
        return
    if not location:
        raise ValueError("a location names at least one key")
    container: Any = row
    for step in location[:-1]:
        container = container[step]
    container[location[-1]] = value


def format_location(location: Location) -> str:
    """("conversations", 2, "value") -> "conversations[2].value"."""
    if len(location) == 1 and isinstance(location[0], str):
        # a top-level field (most locations): its name
        return location[0]
    text = ""
    for step in location:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            text += f".{step}" if text else step
    return text


def parse_location(text: str) -> Location:
    """ "conversations[2].value" -> ("conversations", 2, "value")."""
    steps = _parse_steps(text, "Location")
    if EVERY_ITEM in steps:
        raise FieldPathError(
            f"Location {text!r} has `[]`; a location names one list item, like [2]."
        )
    return tuple(step for step in steps if not isinstance(step, _Every))


def check_paths_exist(
    rows: Sequence[dict[str, Any]], paths: Sequence[FieldPath], source: str, sample: int = 1000
) -> None:
    """Fails when a path matches no value in the first `sample` rows (a typo, most likely)."""
    head = rows[:sample]
    if not head:
        return
    missing = [path for path in paths if not any(find_values(row, path) for row in head)]
    if not missing:
        return
    names = ", ".join(f"'{path.text}'" for path in missing)
    subject = f"Field {names} matches" if len(missing) == 1 else f"Fields {names} match"
    fields = list(dict.fromkeys(name for row in head for name in _leaf_fields(row, "")))
    listed = ", ".join(fields[:_LISTED_FIELDS])
    if len(fields) > _LISTED_FIELDS:
        listed += f" and {len(fields) - _LISTED_FIELDS} more"
    raise FieldPathError(
        f"{subject} nothing in the first {len(head)} rows of {source}; its rows have: {listed}."
    )


def _parse_steps(text: str, kind: str) -> tuple[Step, ...]:
    if not _PATH.fullmatch(text):
        raise FieldPathError(
            f"{kind} {text!r} is malformed; write keys joined by dots with [] for list items, "
            f"like {_EXAMPLES}."
        )
    steps: list[Step] = []
    for match in _STEP.finditer(text):
        if match.group("key") is not None:
            steps.append(match.group("key"))
        elif match.group("index"):
            steps.append(int(match.group("index")))
        else:
            steps.append(EVERY_ITEM)
    return tuple(steps)


def _children(value: Any, step: Step) -> Iterator[tuple[str | int, Any]]:
    """The (key, child) pairs one step reaches from `value`; none where its type does not fit."""
    if step is EVERY_ITEM:
        if isinstance(value, list):
            yield from enumerate(value)
    elif isinstance(step, int):
        if isinstance(value, list) and step < len(value):
            yield step, value[step]
    elif isinstance(value, dict) and step in value:
        yield step, value[step]


def _leaf_fields(value: Any, prefix: str) -> Iterator[str]:
    """Field paths of a row's leaf values: "instruction", "meta.title", "conversations[].value"."""
    if isinstance(value, dict) and (value or not prefix):
        for key, child in value.items():
            yield from _leaf_fields(child, f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list) and value:
        for item in value:
            yield from _leaf_fields(item, f"{prefix}[]")
    else:
        yield prefix
