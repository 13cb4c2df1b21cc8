"""Part files: the translations of one shard, written once by write-then-rename.

A part line names its place as well as its unit ({"unit", "row", "loc", "text"}), so assembly can
refuse a part that does not belong where it would be applied. A job with several target languages
writes one part per shard too, its lines holding a text per language ({..., "texts": {"hin_Deva":
...}}).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from mtfleet.cluster.plan import UnitLine


def part_path(work_dir: Path, row_start: int, row_end: int, lease_id: str) -> Path:
    # The lease id in the name keeps two attempts at one shard from ever writing the same file.
    return work_dir / "parts" / f"{row_start:09d}-{row_end:09d}-{lease_id[:12]}.jsonl"


def write_part(path: Path, translations: Iterable[UnitLine]) -> None:
    """Writes the translated units to `path` atomically, through an exclusively created
    temporary file (a symlink planted at a temporary name is never followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as stream:
            for line in translations:
                record: dict[str, object] = {
                    "unit": line.unit,
                    "row": line.row,
                    "loc": line.location,
                }
                if line.targets is None:
                    record["text"] = line.text
                    if line.flags:
                        record["flags"] = list(line.flags)
                else:
                    # several target languages: a text per language, flags where there are some
                    record["texts"] = {target: text for target, (text, _) in line.targets.items()}
                    flagged = {target: list(f) for target, (_, f) in line.targets.items() if f}
                    if flagged:
                        record["flags"] = flagged
                stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_part(path: Path) -> Iterator[UnitLine]:
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            record = json.loads(line)
            texts = record.get("texts")
            if texts is None:
                yield UnitLine(
                    record["unit"],
                    record["row"],
                    record["loc"],
                    record["text"],
                    tuple(record.get("flags", ())),
                )
                continue
            flags = record.get("flags", {})
            yield UnitLine(
                record["unit"],
                record["row"],
                record["loc"],
                "",
                targets={
                    target: (text, tuple(flags.get(target, ()))) for target, text in texts.items()
                },
            )
