"""Datasets in and out: JSON arrays, JSON Lines, CSV and Parquet, written back as they were read.

Reading records how a file was written (a style); writing with that style reproduces an untouched
file byte for byte for JSON, JSON Lines and CSV written by the usual tools, and keeps the Arrow
schema of a Parquet file. Every write goes to a temporary file that replaces the output at once.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mtfleet.errors import DatasetError, OutputError

FORMATS = ("json", "jsonl", "csv", "parquet")

_EXTENSIONS = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_BOM = "\ufeff"
# A \u escape of a non-ASCII character, not preceded by an escaped backslash: ensure_ascii output.
_ESCAPED_NON_ASCII = re.compile(r"(?<!\\)(?:\\\\)*\\u(?!00[0-7][0-9a-fA-F])[0-9a-fA-F]{4}")
_JSON_ARRAY_INDENT = re.compile(r"\[\r?\n([ \t]*)")
_JSON_ARRAY_GAP = re.compile(r"[\s,]*")
_CSV_DELIMITERS = ",\t;|"
# CSV fields as long as the longest value a dataset holds (the csv module stops at 128 KiB).
_CSV_FIELD_LIMIT = 2**31 - 1
# mkstemp creates files only their owner can read; an output gets the usual mode instead.
_NEW_FILE_MODE = 0o644


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

# The styles of a file written in a format the input was not in.
_NEW_JSON = JsonStyle(indent="  ", separators=(",", ": "))
_NEW_JSONL = JsonStyle()


@dataclass
class Dataset:
    """The rows of a dataset file and the style it was written in."""

    path: Path
    format: str
    rows: list[dict[str, Any]]
    style: Style | None = field(default=None, repr=False)


def detect_format(path: Path) -> str:
    """The format a file's extension names."""
    found = _format_of(Path(path))
    if found is None:
        raise DatasetError(
            f"{path} has an unknown extension; mtfleet reads .json, .jsonl, .ndjson, .csv, "
            ".parquet and .pq files."
        )
    return found


def read_dataset(path: str | Path) -> Dataset:
    """Reads every row of a dataset file; a DatasetError names the file and line at fault."""
    path = Path(path)
    _check_readable(path)
    format = detect_format(path)
    if format == "parquet":
        rows, style = _read_parquet(path)
        return Dataset(path, format, rows, style)
    text, bom = _read_text(path)
    readers = {"json": _read_json, "jsonl": _read_jsonl, "csv": _read_csv}
    rows, style = readers[format](path, text, bom)
    return Dataset(path, format, rows, style)


def write_dataset(
    dataset: Dataset, rows: list[dict[str, Any]], path: str | Path, format: str | None = None
) -> None:
    """Writes `rows` to `path` atomically in `format` (else the extension's, else the input's)."""
    path = Path(path)
    format = format or _format_of(path) or dataset.format
    if format not in FORMATS:
        raise OutputError(f"Cannot write {path}: unknown format {format!r}.")
    if format == "json":
        content = _json_bytes(rows, _json_style_for(dataset, format))
    elif format == "jsonl":
        content = _jsonl_bytes(rows, _json_style_for(dataset, format))
    elif format == "csv":
        content = _csv_bytes(rows, _csv_style_for(dataset, rows))
    else:
        style = dataset.style if isinstance(dataset.style, ParquetStyle) else None
        content = _parquet_bytes(rows, style, path)
    _replace_atomically(path, content)


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
        raise OutputError(_cannot_write(path, error)) from error


# --- reading


def _format_of(path: Path) -> str | None:
    return _EXTENSIONS.get(path.suffix.lower())


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"{path} does not exist.")
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not a dataset file.")
    if not os.access(path, os.R_OK):
        raise DatasetError(f"{path} cannot be read: permission denied.")


def _read_text(path: Path) -> tuple[str, bool]:
    """The file's text and whether it opened with a byte order mark."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise DatasetError(
            f"{path}: line {line} is not valid UTF-8 (byte {error.start}); save the file as UTF-8."
        ) from error
    if text.startswith(_BOM):
        return text[1:], True
    return text, False


def _read_json(path: Path, text: str, bom: bool) -> tuple[list[dict[str, Any]], JsonStyle]:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and text.lstrip().startswith("{"):
            raise DatasetError(
                f"{path} holds one JSON object per line; name it .jsonl to read it as JSON Lines."
            ) from error
        raise DatasetError(
            f"{path}: line {error.lineno} is not valid JSON ({error.msg} at column {error.colno})."
        ) from error
    if not isinstance(rows, list):
        raise DatasetError(
            f"{path} holds {_json_kind(rows)}; a .json dataset is an array of objects, one per row."
        )
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(
                f"{path}: line {_line_of_item(text, index)} holds {_json_kind(row)} "
                "where a row object should be."
            )
    indent = _JSON_ARRAY_INDENT.match(text)
    style = _detect_json_style(
        text,
        bom,
        indent=indent.group(1) if indent else None,
        opening=(lambda options: _json_array_opening(rows[0], options)) if rows else None,
    )
    return rows, style


def _read_jsonl(path: Path, text: str, bom: bool) -> tuple[list[dict[str, Any]], JsonStyle]:
    rows = []
    # Only "\n" ends a line: str.splitlines would also cut at U+2028, legal inside a JSON string.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}: line {number} is not valid JSON ({error.msg} at column {error.colno})."
            ) from error
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: line {number} holds {_json_kind(row)}, not a JSON object.")
        rows.append(row)
    style = _detect_json_style(
        text,
        bom,
        indent=None,
        opening=(lambda options: json.dumps(rows[0], **options)) if rows else None,
    )
    return rows, style


def _detect_json_style(
    text: str,
    bom: bool,
    indent: str | None,
    opening: Callable[[dict[str, Any]], str] | None,
) -> JsonStyle:
    """The style `text` was written in; `opening(options)` is how json.dumps would begin it."""
    newline = _line_end(text)
    ensure_ascii = text.isascii() and _ESCAPED_NON_ASCII.search(text) is not None
    unix_text = text.replace("\r\n", "\n") if newline == "\r\n" else text
    # json.dumps puts ", " between items on one line but "," before a line end.
    candidates = [(", ", ": "), (",", ":")] if indent is None else [(",", ": "), (",", ":")]
    separators = (",", ":") if indent is None else (",", ": ")
    for candidate in candidates if opening else []:
        options = {"indent": indent, "separators": candidate, "ensure_ascii": ensure_ascii}
        if unix_text.startswith(opening(options)):
            separators = candidate
            break
    return JsonStyle(
        indent=indent,
        separators=separators,
        ensure_ascii=ensure_ascii,
        newline=newline,
        final_newline=text.endswith("\n"),
        bom=bom,
    )


def _json_array_opening(row: dict[str, Any], options: dict[str, Any]) -> str:
    """How an array whose first row is `row` begins, up to the end of that row."""
    written = json.dumps([row], **options)
    return written[: written.rindex("}") + 1]


def _line_end(text: str) -> str:
    """The line end a text file uses, judged by its first line."""
    first_newline = text.find("\n")
    return "\r\n" if first_newline > 0 and text[first_newline - 1] == "\r" else "\n"


def _line_of_item(text: str, index: int) -> int:
    """The line on which item `index` of the JSON array in `text` starts."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    start = position
    for _ in range(index + 1):
        start = _JSON_ARRAY_GAP.match(text, position).end()
        _, position = decoder.raw_decode(text, start)
    return text.count("\n", 0, start) + 1


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return f"the value {json.dumps(value)}"
    if value is None:
        return "null"
    return "a number"


def _read_csv(path: Path, text: str, bom: bool) -> tuple[list[dict[str, str]], CsvStyle]:
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    header_line, _, _ = text.partition("\n")
    header_line = header_line.rstrip("\r")
    delimiter = max(
        _CSV_DELIMITERS, key=lambda d: len(next(csv.reader([header_line], delimiter=d), []))
    )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[dict[str, str]] = []
    try:
        fieldnames = tuple(next(reader, []))
        duplicates = sorted({name for name in fieldnames if fieldnames.count(name) > 1})
        if duplicates:
            raise DatasetError(f"{path}: line 1 names the column {duplicates[0]!r} twice.")
        while True:
            line = reader.line_num + 1
            record = next(reader, None)
            if record is None:
                break
            if not record:
                continue
            if len(record) != len(fieldnames):
                raise DatasetError(
                    f"{path}: line {line} has {len(record)} fields "
                    f"but the header has {len(fieldnames)}."
                )
            rows.append(dict(zip(fieldnames, record, strict=True)))
    except csv.Error as error:
        raise DatasetError(f"{path}: line {reader.line_num} is not valid CSV ({error}).") from error
    style = CsvStyle(
        fieldnames=fieldnames,
        delimiter=delimiter,
        quoting=_csv_quoting(header_line, fieldnames, delimiter),
        line_terminator=_line_end(text),
        final_newline=text.endswith("\n") or not text,
        bom=bom,
    )
    return rows, style


def _csv_quoting(header_line: str, fieldnames: tuple[str, ...], delimiter: str) -> int:
    """QUOTE_ALL when the header was written with every field quoted, else QUOTE_MINIMAL."""
    written = io.StringIO()
    csv.writer(written, delimiter=delimiter, quoting=csv.QUOTE_ALL, lineterminator="").writerow(
        fieldnames
    )
    minimal = io.StringIO()
    csv.writer(minimal, delimiter=delimiter, lineterminator="").writerow(fieldnames)
    if header_line == written.getvalue() and header_line != minimal.getvalue():
        return csv.QUOTE_ALL
    return csv.QUOTE_MINIMAL


def _read_parquet(path: Path) -> tuple[list[dict[str, Any]], ParquetStyle]:
    try:
        parquet_file = pq.ParquetFile(path)
        table = parquet_file.read()
        rows = table.to_pylist()
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable Parquet file ({error}).") from error
    metadata = parquet_file.metadata
    compression = None
    if metadata.num_row_groups and metadata.num_columns:
        codec = metadata.row_group(0).column(0).compression
        compression = {"UNCOMPRESSED": "none", "LZ4_RAW": "lz4"}.get(codec, codec.lower())
    return rows, ParquetStyle(schema=table.schema, compression=compression)


# --- writing


def _json_style_for(dataset: Dataset, format: str) -> JsonStyle:
    """The input's style; from the other JSON format, its escaping and line ends only."""
    new_style = _NEW_JSON if format == "json" else _NEW_JSONL
    style = dataset.style
    if not isinstance(style, JsonStyle):
        return new_style
    if format == dataset.format:
        return style
    return replace(new_style, ensure_ascii=style.ensure_ascii, newline=style.newline)


def _json_bytes(rows: list[dict[str, Any]], style: JsonStyle) -> bytes:
    text = json.dumps(rows, **_dumps_options(style))
    return _encoded(text + "\n" if style.final_newline else text, style.newline, style.bom)


def _jsonl_bytes(rows: list[dict[str, Any]], style: JsonStyle) -> bytes:
    options = _dumps_options(style)
    text = "\n".join(json.dumps(row, **options) for row in rows)
    if rows and style.final_newline:
        text += "\n"
    return _encoded(text, style.newline, style.bom)


def _dumps_options(style: JsonStyle) -> dict[str, Any]:
    return {
        "indent": style.indent,
        "separators": style.separators,
        "ensure_ascii": style.ensure_ascii,
        "default": _json_value,
    }


def _json_value(value: Any) -> Any:
    """Parquet values JSON has no type for: dates and times as ISO 8601, the rest as text."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def _encoded(text: str, newline: str, bom: bool) -> bytes:
    # Safe for JSON, whose strings hold a newline only as the escape "\\n".
    if newline != "\n":
        text = text.replace("\n", newline)
    return ((_BOM if bom else "") + text).encode("utf-8")


def _csv_style_for(dataset: Dataset, rows: list[dict[str, Any]]) -> CsvStyle:
    """The input's CSV style, with any column its header lacks added at the end."""
    columns = dict.fromkeys(name for row in rows for name in row)
    if isinstance(dataset.style, CsvStyle):
        fieldnames = dataset.style.fieldnames
        extra = tuple(name for name in columns if name not in fieldnames)
        return replace(dataset.style, fieldnames=fieldnames + extra)
    return CsvStyle(fieldnames=tuple(columns))


def _csv_bytes(rows: list[dict[str, Any]], style: CsvStyle) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(
        buffer,
        delimiter=style.delimiter,
        quotechar=style.quotechar,
        quoting=style.quoting,
        lineterminator=style.line_terminator,
    )
    if style.fieldnames:
        writer.writerow(style.fieldnames)
    for row in rows:
        writer.writerow([_csv_cell(row.get(name)) for name in style.fieldnames])
    text = buffer.getvalue()
    if not style.final_newline and text.endswith(style.line_terminator):
        text = text[: -len(style.line_terminator)]
    return _encoded(text, "\n", style.bom)


def _csv_cell(value: Any) -> str:
    """Strings as they are, null as an empty cell, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=_json_value)


def _parquet_bytes(rows: list[dict[str, Any]], style: ParquetStyle | None, path: Path) -> bytes:
    try:
        table = pa.Table.from_pylist(rows, schema=style.schema if style else None)
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer, compression=(style and style.compression) or "snappy")
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise OutputError(f"Cannot write {path} as Parquet: {error}.") from error
    return buffer.getvalue().to_pybytes()


def _replace_atomically(path: Path, content: bytes) -> None:
    """Writes `content` to a temporary file beside `path`, then renames it over `path`."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else _NEW_FILE_MODE
        descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OutputError(_cannot_write(path, error)) from error
    temporary = Path(name)
    try:
        with open(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.chmod(mode)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(_cannot_write(path, error)) from error
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _cannot_write(path: Path, error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        return f"Cannot write {path}: folder {path.parent} does not exist."
    if isinstance(error, IsADirectoryError):
        return f"Cannot write {path}: it is a folder."
    if isinstance(error, PermissionError):
        return f"Cannot write {path}: permission denied."
    return f"Cannot write {path}: {error.strerror or error}."
