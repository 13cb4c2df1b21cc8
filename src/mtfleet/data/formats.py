"""Whole datasets in and out: every row in memory at once, for files known to be small.

Both functions run through the streaming DatasetReader and DatasetWriter, so a file written back
untouched is byte for byte what was read (JSON, JSON Lines, CSV) or keeps its Arrow schema
(Parquet), exactly as a streamed one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtfleet.data.atomic import cannot_write
from mtfleet.data.reader import DatasetReader
from mtfleet.data.styles import Style
from mtfleet.data.writer import DatasetWriter
from mtfleet.errors import OutputError


@dataclass
class Dataset:
    """The rows of a dataset file and the style it was written in."""

    path: Path
    format: str
    rows: list[dict[str, Any]]
    style: Style | None = field(default=None, repr=False)


def read_dataset(path: str | Path) -> Dataset:
    """Reads every row of a dataset file; a DatasetError names the file and line at fault."""
    reader = DatasetReader(path)
    rows = list(reader.rows())
    return Dataset(reader.path, reader.format, rows, reader.style)


def write_dataset(
    dataset: Dataset, rows: list[dict[str, Any]], path: str | Path, format: str | None = None
) -> None:
    """Writes `rows` to `path` atomically in `format` (else the extension's, else the input's)."""
    columns = dict.fromkeys(name for row in rows for name in row)
    with DatasetWriter(
        path,
        source_format=dataset.format,
        style=dataset.style,
        columns=tuple(columns),
        format=format,
    ) as writer:
        for row in rows:
            writer.write(row)


def check_output_writable(path: str | Path) -> None:
    """Fails before any work when `path` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Cannot write {path}: it is a folder.")
    if not path.parent.is_dir():
        raise OutputError(f"Cannot write {path}: folder {path.parent} does not exist.")
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as error:
        raise OutputError(cannot_write(path, error)) from error
