"""Part files: the translations of one shard, written once by write-then-rename."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def part_path(work_dir: Path, row_start: int, row_end: int, lease_id: str) -> Path:
    # The lease id in the name keeps two attempts at one shard from ever writing the same file.
    return work_dir / "parts" / f"{row_start:09d}-{row_end:09d}-{lease_id[:12]}.jsonl"


def write_part(path: Path, translations: Iterable[tuple[int, str]]) -> None:
    """Writes (unit index, translation) lines to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as stream:
        for unit, text in translations:
            stream.write(json.dumps({"unit": unit, "text": text}, ensure_ascii=False) + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)


def read_part(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            record = json.loads(line)
            yield record["unit"], record["text"]
