"""The planner: reads a dataset once, lists its units, and cuts contiguous row ranges into shards."""

from __future__ import annotations

import json
import math
import os
import tempfile
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtfleet.data import (
    Dataset,
    Unit,
    UnitKind,
    check_paths_exist,
    extract_units,
    parse_field_paths,
    read_dataset,
)
from mtfleet.spec import JobSpec, fingerprint
from mtfleet.store import ShardPlan

# A rough source-token estimate for shard sizing; the engine counts real tokens later.
CHARS_PER_TOKEN = 4
# A shard takes at most a quarter of the tokens left to cut, and no less than 1/16 of shard_tokens.
TAIL_SHARE = 4
SMALLEST_SHARE = 16


def check_fields(spec: JobSpec) -> None:
    """The field paths parse and each matches a value in the input's first rows."""
    paths = parse_field_paths(spec.fields)
    check_paths_exist(read_dataset(spec.input).rows, paths, source=str(spec.input))


def load_units(spec: JobSpec) -> tuple[Dataset, list[Unit]]:
    """The dataset and its units, checked against the spec's field paths."""
    dataset = read_dataset(spec.input)
    paths = parse_field_paths(spec.fields)
    check_paths_exist(dataset.rows, paths, source=str(spec.input))
    return dataset, extract_units(dataset.rows, paths)


def plan_job(spec: JobSpec, work_dir: Path) -> list[ShardPlan]:
    """Writes the job's text units and what assembly needs of the input under `work_dir`, and
    returns its shards."""
    dataset, units = load_units(spec)
    text_units = [unit for unit in units if unit.kind is UnitKind.TEXT]
    write_unit_file(work_dir, len(dataset.rows), text_units)
    write_plan_facts(work_dir, {"input_sha256": fingerprint(spec.input)})
    return cut_shards(len(dataset.rows), text_units, spec.shard_tokens)


def write_plan_facts(work_dir: Path, facts: dict[str, Any]) -> None:
    """plan.json: what the planning pass learnt of the input (its sha256, above all)."""
    fd, name = tempfile.mkstemp(dir=work_dir, prefix=".plan.", suffix=".tmp")
    with open(fd, "w", encoding="utf-8") as stream:
        json.dump(facts, stream)
    os.replace(name, work_dir / "plan.json")


def read_plan_facts(work_dir: Path) -> dict[str, Any]:
    with open(work_dir / "plan.json", encoding="utf-8") as stream:
        return json.load(stream)


def cut_shards(rows: int, text_units: Sequence[Unit], shard_tokens: int) -> list[ShardPlan]:
    """Contiguous row ranges of at most about `shard_tokens` estimated tokens, smaller toward the end.

    No shard takes more than 1/TAIL_SHARE of the tokens still to cut, nor (row permitting) less
    than 1/SMALLEST_SHARE of `shard_tokens`: the last shards, which the fleet finishes side by side,
    are small, so no translator waits long on another's last shard (guided self-scheduling). Every
    row belongs to one shard.
    """
    tokens_per_row = [0] * rows
    units_per_row = [0] * rows
    for unit in text_units:
        tokens_per_row[unit.row] += 1 + len(unit.text or "") // CHARS_PER_TOKEN
        units_per_row[unit.row] += 1
    smallest = max(1, shard_tokens // SMALLEST_SHARE)
    left = sum(tokens_per_row)

    def goal() -> int:
        return min(shard_tokens, max(smallest, math.ceil(left / TAIL_SHARE)))

    shards: list[ShardPlan] = []
    start = tokens = units = 0
    wanted = goal()
    for row in range(rows):
        tokens += tokens_per_row[row]
        units += units_per_row[row]
        if tokens >= wanted or row == rows - 1:
            shards.append(ShardPlan(start, row + 1, units, tokens))
            left -= tokens
            start, tokens, units = row + 1, 0, 0
            wanted = goal()
    return shards


# --- the unit file: one JSON line per text unit, with a row -> byte offset index beside it


def write_unit_file(work_dir: Path, rows: int, text_units: Sequence[Unit]) -> None:
    """units.jsonl holds each text unit as {"unit", "row", "text"}; units.idx the offset of each row's first line."""
    work_dir.mkdir(parents=True, exist_ok=True)
    offsets = array("q", [0] * (rows + 1))
    # unique temporary names: two planners of one job (concurrent submits) never share a file
    fd, name = tempfile.mkstemp(dir=work_dir, prefix=".units.", suffix=".tmp")
    tmp = Path(name)
    position = 0
    next_row = 0
    with open(fd, "wb") as stream:
        for index, unit in enumerate(text_units):
            while next_row <= unit.row:
                offsets[next_row] = position
                next_row += 1
            line = json.dumps(
                {"unit": index, "row": unit.row, "text": unit.text}, ensure_ascii=False
            )
            encoded = line.encode() + b"\n"
            stream.write(encoded)
            position += len(encoded)
        while next_row <= rows:
            offsets[next_row] = position
            next_row += 1
    idx_fd, idx_name = tempfile.mkstemp(dir=work_dir, prefix=".units-idx.", suffix=".tmp")
    idx_tmp = Path(idx_name)
    with open(idx_fd, "wb") as stream:
        offsets.tofile(stream)
    os.replace(tmp, work_dir / "units.jsonl")
    os.replace(idx_tmp, work_dir / "units.idx")


class UnitReader:
    """Reads the text units of any row range of a planned job (shards may be split after planning)."""

    @staticmethod
    def exists(work_dir: Path) -> bool:
        return (work_dir / "units.idx").is_file() and (work_dir / "units.jsonl").is_file()

    def __init__(self, work_dir: Path) -> None:
        self.path = work_dir / "units.jsonl"
        self.offsets = array("q")
        with open(work_dir / "units.idx", "rb") as stream:
            self.offsets.frombytes(stream.read())

    def read(self, row_start: int, row_end: int) -> list[tuple[int, str]]:
        """(unit index, text) for every text unit of rows [row_start, row_end)."""
        begin, end = self.offsets[row_start], self.offsets[row_end]
        with open(self.path, "rb") as stream:
            stream.seek(begin)
            chunk = stream.read(end - begin)
        units = []
        for line in chunk.splitlines():
            record = json.loads(line)
            units.append((record["unit"], record["text"]))
        return units
