"""Writing a dataset file one row at a time, in the style the input was written in.

The bytes are exactly what the whole-document writers give (json.dumps of the row list, one
csv.writer over every row, one Parquet table), so memory stays independent of the number of rows.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mtfleet.data.atomic import AtomicFile
from mtfleet.data.styles import FORMATS, CsvStyle, JsonStyle, ParquetStyle, Style, format_of
from mtfleet.errors import OutputError

_BOM = "\ufeff"
# Rows a Parquet row group holds: fixed, so the bytes written do not depend on how writes came.
PARQUET_ROW_GROUP = 65_536
# Rows converted to Arrow at a time while a row group fills.
_ARROW_BATCH = 4096
# The styles of a file written in a format the input was not in.
_NEW_JSON = JsonStyle(indent="  ", separators=(",", ": "))
_NEW_JSONL = JsonStyle()


class DatasetWriter:
    """Writes rows one at a time to a temporary file beside `path`, then renames it over `path`.

    The rename is atomic and fsync'd; `abort` (or an exception inside `with`) leaves an existing
    output untouched. With `confine_to`, the output's folder must lie under that folder.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        source_format: str,
        style: Style | None,
        columns: Sequence[str] = (),
        format: str | None = None,
        confine_to: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = format or format_of(self.path) or source_format
        if self.format not in FORMATS:
            raise OutputError(f"Cannot write {self.path}: unknown format {self.format!r}.")
        self.rows_written = 0
        if self.format == "csv":
            self._rows: _RowWriter = _CsvRows(self.path, _csv_style_for(style, columns))
        elif self.format == "parquet":
            parquet_style = style if isinstance(style, ParquetStyle) else None
            self._rows = _ParquetRows(self.path, parquet_style)
        else:
            json_style = _json_style_for(style, source_format, self.format)
            self._rows = _JsonRows(json_style, array=self.format == "json")
        self._output = AtomicFile(self.path, confine_to=confine_to)
        self._rows.start(self._output.handle)

    def write(self, row: dict[str, Any]) -> None:
        self._rows.write(row)
        self.rows_written += 1

    def commit(self) -> None:
        """Ends the file, makes it durable and puts it under `path`."""
        try:
            self._rows.finish()
        except BaseException:
            self._output.abort()
            raise
        self._output.commit()

    def abort(self) -> None:
        """Removes the temporary file; an existing output stays as it was."""
        self._output.abort()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            self.commit()
        else:
            self.abort()


class _RowWriter(ABC):
    """How one format turns rows into bytes on a binary handle."""

    def start(self, handle: Any) -> None:
        self.handle = handle

    @abstractmethod
    def write(self, row: dict[str, Any]) -> None: ...

    @abstractmethod
    def finish(self) -> None: ...


def _json_style_for(style: Style | None, source_format: str, format: str) -> JsonStyle:
    """The input's style; from the other JSON format, its escaping and line ends only."""
    new_style = _NEW_JSON if format == "json" else _NEW_JSONL
    if not isinstance(style, JsonStyle):
        return new_style
    if format == source_format:
        return style
    return replace(new_style, ensure_ascii=style.ensure_ascii, newline=style.newline)


class _JsonRows(_RowWriter):
    """What json.dumps(rows) writes for a JSON array, or its rows joined by "\\n" for JSON Lines."""

    def __init__(self, style: JsonStyle, *, array: bool) -> None:
        self.style = style
        self.array = array
        # one encoder for every row: json.dumps with options makes one a call, half its time
        self.encoder = json.JSONEncoder(
            indent=style.indent,
            separators=style.separators,
            ensure_ascii=style.ensure_ascii,
            default=json_value,
        )
        if not array:
            self.between = "\n"
        elif style.indent is None:
            self.between = style.separators[0]
        else:
            # json.dumps indents an array's items one level and ends each line before the next.
            self.between = style.separators[0] + "\n" + style.indent
        self.started = False

    def start(self, handle: Any) -> None:
        super().start(handle)
        if self.style.bom:
            self.handle.write(_BOM.encode("utf-8"))

    def write(self, row: dict[str, Any]) -> None:
        text = self.encoder.encode(row)
        if self.array and self.style.indent is not None:
            text = text.replace("\n", "\n" + self.style.indent)
        if self.started:
            text = self.between + text
        elif self.array:
            text = "[\n" + self.style.indent + text if self.style.indent is not None else "[" + text
        self.started = True
        self._put(text)

    def finish(self) -> None:
        if self.array:
            ending = "[]" if not self.started else ("\n]" if self.style.indent is not None else "]")
            self._put(ending + ("\n" if self.style.final_newline else ""))
        elif self.started and self.style.final_newline:
            self._put("\n")

    def _put(self, text: str) -> None:
        # Safe for JSON, whose strings hold a newline only as the escape "\\n".
        if self.style.newline != "\n":
            text = text.replace("\n", self.style.newline)
        self.handle.write(text.encode("utf-8"))


def json_value(value: Any) -> Any:
    """Parquet values JSON has no type for: dates and times as ISO 8601, the rest as text."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def _csv_style_for(style: Style | None, columns: Sequence[str]) -> CsvStyle:
    """The input's CSV style, with any of `columns` its header lacks added at the end."""
    if isinstance(style, CsvStyle):
        extra = tuple(name for name in dict.fromkeys(columns) if name not in style.fieldnames)
        return replace(style, fieldnames=style.fieldnames + extra)
    return CsvStyle(fieldnames=tuple(dict.fromkeys(columns)))


class _CsvRows(_RowWriter):
    """The header, then one record a row; the last line end is held back for `final_newline`."""

    def __init__(self, path: Path, style: CsvStyle) -> None:
        self.path = path
        self.style = style
        self.fieldnames = frozenset(style.fieldnames)
        self.record = io.StringIO(newline="")
        self.writer = csv.writer(
            self.record,
            delimiter=style.delimiter,
            quotechar=style.quotechar,
            quoting=style.quoting,
            lineterminator=style.line_terminator,
        )
        self.held_back = ""

    def start(self, handle: Any) -> None:
        super().start(handle)
        if self.style.bom:
            self.handle.write(_BOM.encode("utf-8"))
        if self.style.fieldnames:
            self._put(self.style.fieldnames)

    def write(self, row: dict[str, Any]) -> None:
        if not self.fieldnames.issuperset(row):
            missing = next(name for name in row if name not in self.fieldnames)
            raise OutputError(
                f"Cannot write {self.path}: a row has the field {missing!r}, which its CSV header "
                "lacks (name every column when the writer starts)."
            )
        self._put([_csv_cell(row.get(name)) for name in self.style.fieldnames])

    def finish(self) -> None:
        if self.style.final_newline:
            self.handle.write(self.held_back.encode("utf-8"))

    def _put(self, record: Sequence[str]) -> None:
        self.record.seek(0)
        self.record.truncate()
        self.writer.writerow(record)
        text = self.record.getvalue()
        terminator = self.style.line_terminator
        self.handle.write((self.held_back + text[: -len(terminator)]).encode("utf-8"))
        self.held_back = terminator


def _csv_cell(value: Any) -> str:
    """Strings as they are, null as an empty cell, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=json_value)


class _ParquetRows(_RowWriter):
    """Row groups of PARQUET_ROW_GROUP rows with the input's schema and compression.

    Rows wait as Arrow batches of _ARROW_BATCH rows, not as Python objects: a row group of
    Python dicts held ~300 MB for alpaca rows. Without an input schema, the first row group's
    rows decide it.
    """

    def __init__(self, path: Path, style: ParquetStyle | None) -> None:
        self.path = path
        self.schema = style.schema if style else None
        self.compression = (style and style.compression) or "snappy"
        self.buffered: list[dict[str, Any]] = []
        self.batches: list[pa.RecordBatch] = []
        self.rows_in_group = 0
        self.writer: pq.ParquetWriter | None = None

    def write(self, row: dict[str, Any]) -> None:
        self.buffered.append(row)
        self.rows_in_group += 1
        if self.schema is not None and len(self.buffered) == _ARROW_BATCH:
            self._convert()
        if self.rows_in_group == PARQUET_ROW_GROUP:
            self._flush()

    def finish(self) -> None:
        if self.rows_in_group or self.writer is None:
            self._flush()
        assert self.writer is not None
        self.writer.close()

    def _convert(self) -> None:
        try:
            self.batches.append(pa.RecordBatch.from_pylist(self.buffered, schema=self.schema))
        except (pa.ArrowException, TypeError, ValueError) as error:
            raise OutputError(f"Cannot write {self.path} as Parquet: {error}.") from error
        self.buffered = []

    def _flush(self) -> None:
        try:
            if self.schema is None:
                self.schema = pa.Table.from_pylist(self.buffered).schema
            if self.buffered or not self.batches:
                self._convert()
            table = pa.Table.from_batches(self.batches, schema=self.schema)
            if self.writer is None:
                self.writer = pq.ParquetWriter(
                    self.handle, table.schema, compression=self.compression
                )
            self.writer.write_table(table, row_group_size=PARQUET_ROW_GROUP)
        except (pa.ArrowException, TypeError, ValueError) as error:
            raise OutputError(f"Cannot write {self.path} as Parquet: {error}.") from error
        self.batches = []
        self.rows_in_group = 0
