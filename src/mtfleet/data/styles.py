"""Dataset formats and styles: how a file was written, so that it can be written again alike."""

from __future__ import annotations

import base64
import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from mtfleet.errors import DatasetError

FORMATS = ("json", "jsonl", "csv", "parquet")

_EXTENSIONS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
COMPRESSED_EXTENSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")


@dataclass(frozen=True)
class JsonStyle:
    """How a JSON or JSON Lines file was written: what json.dumps needs to write it again."""

    indent: str | None = None
    separators: tuple[str, str] = (",", ":")
    ensure_ascii: bool = False
    newline: str = "\n"
    final_newline: bool = True
    bom: bool = False


@dataclass(frozen=True)
class CsvStyle:
    """How a CSV file was written: its header, dialect and line ends."""

    fieldnames: tuple[str, ...]
    delimiter: str = ","
    quotechar: str = '"'
    quoting: int = csv.QUOTE_MINIMAL
    line_terminator: str = "\n"
    final_newline: bool = True
    bom: bool = False


@dataclass(frozen=True)
class ParquetStyle:
    """How a Parquet file was written: its Arrow schema (with metadata) and compression."""

    schema: pa.Schema
    compression: str | None = None


Style = JsonStyle | CsvStyle | ParquetStyle


def detect_format(path: Path) -> str:
    """The format a file's extension names."""
    found = format_of(Path(path))
    if found is not None:
        return found
    if Path(path).suffix.lower() in COMPRESSED_EXTENSIONS:
        raise DatasetError(
            f"{path} is compressed and mtfleet does not read compressed files; decompress it first "
            "(gunzip for .gz)."
        )
    raise DatasetError(
        f"{path} has an unknown extension; mtfleet reads .json, .jsonl, .ndjson, .csv, "
        ".parquet and .pq files."
    )


def format_of(path: Path) -> str | None:
    """The format `path`'s extension names, or None."""
    return _EXTENSIONS.get(path.suffix.lower())


def style_to_json(style: Style) -> dict[str, Any]:
    """`style` as JSON-compatible values, for saving between a job's passes."""
    if isinstance(style, ParquetStyle):
        schema = base64.b64encode(style.schema.serialize().to_pybytes()).decode("ascii")
        return {"kind": "parquet", "schema": schema, "compression": style.compression}
    kind = "json" if isinstance(style, JsonStyle) else "csv"
    return {"kind": kind, **asdict(style)}


def style_from_json(data: dict[str, Any], path: Path) -> Style:
    """The style `style_to_json` saved in `path`."""
    try:
        values = {name: value for name, value in data.items() if name != "kind"}
        if data["kind"] == "parquet":
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(values["schema"])))
            return ParquetStyle(schema=schema, compression=values["compression"])
        if data["kind"] == "json":
            separators = tuple(values.pop("separators"))
            return JsonStyle(separators=separators, **values)  # type: ignore[arg-type]
        if data["kind"] == "csv":
            return CsvStyle(fieldnames=tuple(values.pop("fieldnames")), **values)
    except (KeyError, TypeError, ValueError, pa.ArrowException) as error:
        raise DatasetError(
            f"{path} holds a dataset style mtfleet cannot read ({error})."
        ) from error
    raise DatasetError(f"{path} holds a dataset style of unknown kind {data['kind']!r}.")
