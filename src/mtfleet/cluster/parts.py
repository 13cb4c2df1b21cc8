"""Part files: the translations of one shard, written once by write-then-rename.

A part line names its place as well as its unit ({"unit", "row", "loc", "text"}), so assembly can
refuse a part that does not belong where it would be applied. A job with several target languages
writes one part per shard too, its lines holding a text per language ({..., "texts": {"hin_Deva":
...}}).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mtfleet.bulk import collector_paused
from mtfleet.cluster.plan import LINE_ENCODER, UnitLine, encode_line, json_lines
from mtfleet.data.atomic import AtomicFile
from mtfleet.errors import OutputError


def part_path(work_dir: Path, row_start: int, row_end: int, lease_id: str) -> Path:
    # The lease id in the name keeps two attempts at one shard from ever writing the same file.
    return work_dir / "parts" / f"{row_start:09d}-{row_end:09d}-{lease_id[:12]}.jsonl"


def write_part(path: Path, translations: Iterable[UnitLine]) -> None:
    """Writes the translated units to `path` as the job's every file is written (`AtomicFile`:
    an exclusive temporary beside it, fsync, rename, fsync of the folder), the parts folder
    opened beneath the work dir without following a symlink. An error of the disk is an
    OSError, as the translator reports a machine's fault."""
    try:
        output = AtomicFile(path, confine_to=path.parent.parent)
    except OutputError as error:
        raise _disk_error(error) from error
    try:
        for line in translations:
            if line.targets is None:
                more = {"flags": list(line.flags)} if line.flags else None
                output.handle.write(
                    encode_line(line.unit, line.row, line.location, line.text, more)
                )
                continue
            # several target languages: a text per language, flags where there are some
            record: dict[str, object] = {
                "unit": line.unit,
                "row": line.row,
                "loc": line.location,
                "texts": {target: text for target, (text, _) in line.targets.items()},
            }
            flagged = {target: list(f) for target, (_, f) in line.targets.items() if f}
            if flagged:
                record["flags"] = flagged
            output.handle.write(LINE_ENCODER.encode(record).encode() + b"\n")
    except BaseException:
        output.abort()
        raise
    try:
        output.commit()
    except OutputError as error:
        raise _disk_error(error) from error


def _disk_error(error: OutputError) -> OSError:
    """The OSError under an output error (a full disk, EIO), or one that says what it was."""
    cause = error.__cause__
    return cause if isinstance(cause, OSError) else OSError(str(error))


def read_part(path: Path) -> list[UnitLine]:
    """The part's lines, in order."""
    with open(path, "rb") as stream, collector_paused():
        return [_part_line(record) for record in json_lines(stream.read())]


def _part_line(record: dict[str, Any]) -> UnitLine:
    texts = record.get("texts")
    if texts is None:
        return UnitLine(
            record["unit"],
            record["row"],
            record["loc"],
            record["text"],
            tuple(record.get("flags", ())),
        )
    flags = record.get("flags", {})
    return UnitLine(
        record["unit"],
        record["row"],
        record["loc"],
        "",
        targets={target: (text, tuple(flags.get(target, ()))) for target, text in texts.items()},
    )
