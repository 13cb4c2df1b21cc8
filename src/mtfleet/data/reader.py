"""Reading a dataset file in one streaming pass: rows in order, the style, the sha256 of its bytes.

Memory stays independent of the number of rows: text formats are read in chunks of a MiB and
hold one row (JSON: one array item) at a time; Parquet is read a batch of rows at a time. JSON
values come from the json module's own decoder, so they are exactly what json.loads gives.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from mtfleet.data.styles import CsvStyle, JsonStyle, ParquetStyle, Style, detect_format
from mtfleet.errors import DatasetError

_CHUNK = 1 << 20
# A JSON value is decoded only with this much text after it (or the end of the file) in memory.
_LOOKAHEAD = 1 << 16
_PARQUET_BATCH = 8192
# A \u escape of a non-ASCII character, not preceded by an escaped backslash: ensure_ascii output.
_ESCAPED_NON_ASCII = re.compile(r"(?<!\\)(?:\\\\)*\\u(?!00[0-7][0-9a-fA-F])[0-9a-fA-F]{4}")
_JSON_ARRAY_INDENT = re.compile(r"\[\r?\n([ \t]*)")
_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
# A JSON string (closed or running past the buffer) or a bracket: enough to find a value's end.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?P<close>"?)|[\[\]{}]', re.DOTALL)
_CSV_DELIMITERS = ",\t;|"
# CSV fields as long as the longest value a dataset holds (the csv module stops at 128 KiB).
_CSV_FIELD_LIMIT = 2**31 - 1
_GZIP_MAGIC = b"\x1f\x8b"


class DatasetReader:
    """One pass over a dataset file: its rows in order, its style, and the sha256 of its bytes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _check_readable(self.path)
        self.format = detect_format(self.path)
        self.rows_read = 0
        self._style: Style | None = None
        self._sha256: str | None = None
        self._columns: dict[str, None] = {}
        self._started = False
        self._exhausted = False
        self._parquet: pq.ParquetFile | None = None
        if self.format == "parquet":
            self._parquet = _open_parquet(self.path)
            self._style = _parquet_style(self._parquet)
            self._columns = dict.fromkeys(self._parquet.schema_arrow.names)

    def rows(self) -> Generator[dict[str, Any], None, None]:
        """The rows in order; a DatasetError names the file and the line (or Parquet row) at fault."""
        if self._started:
            raise RuntimeError(f"the rows of {self.path} were already read; a reader reads once")
        self._started = True
        if self._parquet is not None:
            return self._parquet_rows(self._parquet)
        return self._text_rows()

    def head(self, n: int) -> list[dict[str, Any]]:
        """The first `n` rows, read separately from `rows()`."""
        rows = DatasetReader(self.path).rows()
        try:
            return list(itertools.islice(rows, n))
        finally:
            rows.close()

    @property
    def style(self) -> Style:
        """How the file was written; complete once `rows()` is exhausted (Parquet: at once)."""
        if self._style is None:
            raise self._not_yet("style")
        return self._style

    @property
    def sha256(self) -> str:
        """The hex sha256 of the file's bytes; known once `rows()` is exhausted."""
        if self._sha256 is None:
            raise self._not_yet("sha256")
        return self._sha256

    @property
    def columns(self) -> tuple[str, ...]:
        """Top-level keys in order of first appearance; complete once `rows()` is exhausted."""
        if not self._exhausted and self._parquet is None:
            raise self._not_yet("columns")
        return tuple(self._columns)

    def _not_yet(self, name: str) -> RuntimeError:
        return RuntimeError(f"the {name} of {self.path} is known once all its rows are read")

    def _text_rows(self) -> Generator[dict[str, Any], None, None]:
        with open(self.path, "rb") as handle:
            text = _Text(self.path, handle)
            if self.format == "csv":
                parse = _CsvRows(self.path, text)
            elif self.format == "jsonl":
                parse = _JsonLinesRows(self.path, text)
            else:
                parse = _JsonArrayRows(self.path, text)
            for row in parse.rows():
                self._columns.update(dict.fromkeys(row))
                self.rows_read += 1
                yield row
            self._style = parse.style()
            self._sha256 = text.sha256.hexdigest()
            self._exhausted = True

    def _parquet_rows(self, parquet: pq.ParquetFile) -> Generator[dict[str, Any], None, None]:
        try:
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
                rows = batch.to_pylist()
                self.rows_read += len(rows)
                yield from rows
        except (pa.ArrowException, OSError, ValueError) as error:
            raise DatasetError(
                f"{self.path}: rows from row {self.rows_read + 1} on are not readable Parquet "
                f"({error})."
            ) from error
        # pyarrow reads a Parquet file out of order (footer first): its bytes are hashed apart.
        self._sha256 = _file_sha256(self.path)
        self._exhausted = True


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"{path} does not exist.")
    if path.is_dir():
        raise DatasetError(f"{path} is a folder, not a dataset file.")
    if not os.access(path, os.R_OK):
        raise DatasetError(f"{path} cannot be read: permission denied.")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Text:
    """A text file's bytes read once in chunks: hashed, checked as UTF-8, decoded without BOM.

    On the way it notes what a style needs of the whole file: byte order mark, whether it is all
    ASCII, the line end of its first line, and whether it ends with a line end.
    """

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path = path
        self._handle = handle
        self.sha256 = hashlib.sha256()
        self.bom = False
        self.ascii = True
        self.empty = True
        self.line_end: str | None = None
        self.ends_with_newline = False

    def chunks(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        newlines = 0
        last_byte = b""
        while chunk := self._handle.read(_CHUNK):
            self.sha256.update(chunk)
            body = self._without_bom(chunk) if offset == 0 else chunk
            start = offset + len(chunk) - len(body)
            offset += len(chunk)
            if not body:
                continue
            self.empty = False
            self.ascii = self.ascii and body.isascii()
            if self.line_end is None and b"\n" in body:
                at = body.index(b"\n")
                before = body[at - 1 : at] if at else last_byte
                self.line_end = "\r\n" if before == b"\r" else "\n"
            last_byte = body[-1:]
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(body)
            except UnicodeDecodeError as error:
                at = max(error.start - pending, 0)
                raise self._not_utf8(start + at, newlines + body.count(b"\n", 0, at)) from error
            newlines += body.count(b"\n")
            yield text
        self.ends_with_newline = last_byte == b"\n"
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as error:
            raise self._not_utf8(offset - 1, newlines) from error

    def _without_bom(self, chunk: bytes) -> bytes:
        if chunk.startswith(_GZIP_MAGIC):
            raise DatasetError(
                f"{self.path} is gzip-compressed and mtfleet does not read compressed files; "
                "decompress it first (gunzip)."
            )
        if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in chunk[:2]:
            raise DatasetError(f"{self.path} is UTF-16 text; save it as UTF-8.")
        if chunk.startswith(codecs.BOM_UTF8):
            self.bom = True
            return chunk[len(codecs.BOM_UTF8) :]
        return chunk

    def _not_utf8(self, byte: int, newlines_before: int) -> DatasetError:
        return DatasetError(
            f"{self.path}: line {newlines_before + 1} is not valid UTF-8 (byte {byte}); "
            "save the file as UTF-8."
        )


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _row_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refused when a key repeats: keeping one would lose the other."""
    row = dict(pairs)
    if len(row) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return row


_DECODER = json.JSONDecoder(object_pairs_hook=_row_object)


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


class _JsonStyleWatch:
    """What a JSON style needs from a file read once: its opening and its escapes."""

    def __init__(self, text: _Text, indent: str | None, opening: str) -> None:
        self.text = text
        self.indent = indent
        self._escapes_non_ascii = False
        self._separators: dict[bool, tuple[str, str]] = {}
        self._opening = opening

    def first_row(self, row: dict[str, Any], written: str) -> None:
        """Notes the separators json.dumps used for `row`, which begins `written` file text."""
        unix = written.replace("\r\n", "\n") if self.text.line_end == "\r\n" else written
        # json.dumps puts ", " between items on one line but "," before a line end.
        item_separator = ", " if self.indent is None else ","
        candidates = [(item_separator, ": "), (",", ":")]
        for ensure_ascii in (False, True):
            for candidate in candidates:
                options = {"indent": self.indent, "separators": candidate}
                if unix.startswith(self._written(row, options | {"ensure_ascii": ensure_ascii})):
                    self._separators[ensure_ascii] = candidate
                    break

    def row_text(self, text: str, start: int, end: int) -> None:
        """Looks for ensure_ascii escapes in one row's text, until one is found."""
        # str.find first: the regular expression costs as much as decoding the row.
        if not self._escapes_non_ascii and self.text.ascii and text.find("\\u", start, end) >= 0:
            self._escapes_non_ascii = _ESCAPED_NON_ASCII.search(text, start, end) is not None

    def style(self) -> JsonStyle:
        ensure_ascii = self.text.ascii and self._escapes_non_ascii
        default = (",", ":") if self.indent is None else (",", ": ")
        return JsonStyle(
            indent=self.indent,
            separators=self._separators.get(ensure_ascii, default),
            ensure_ascii=ensure_ascii,
            newline=self.text.line_end or "\n",
            final_newline=self.text.ends_with_newline,
            bom=self.text.bom,
        )

    def _written(self, row: dict[str, Any], options: dict[str, Any]) -> str:
        if self._opening == "[":
            written = json.dumps([row], **options)
            return written[: written.rindex("}") + 1]
        return json.dumps(row, **options)


class _JsonLinesRows:
    """JSON Lines: one object a line; only "\\n" ends a line (U+2028 is legal inside strings)."""

    def __init__(self, path: Path, text: _Text) -> None:
        self.path = path
        self.text = text
        self.watch = _JsonStyleWatch(text, indent=None, opening="{")

    def rows(self) -> Iterator[dict[str, Any]]:
        number = 0
        opening: list[str] | None = []
        for line in self._lines():
            number += 1
            if opening is not None:
                opening.append(line)
            if not line or line.isspace():
                continue
            row = self._row(line, number)
            self.watch.row_text(line, 0, len(line))
            if opening is not None:
                self.watch.first_row(row, "\n".join(opening))
                opening = None
            yield row

    def style(self) -> JsonStyle:
        return self.watch.style()

    def _lines(self) -> Iterator[str]:
        parts: list[str] = []
        for chunk in self.text.chunks():
            if "\n" not in chunk:
                parts.append(chunk)
                continue
            lines = chunk.split("\n")
            parts.append(lines[0])
            lines[0] = "".join(parts)
            parts = [lines.pop()]
            yield from lines
        last = "".join(parts)
        if last:
            yield last

    def _row(self, line: str, number: int) -> dict[str, Any]:
        try:
            row = _DECODER.decode(line)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{self.path}: line {number} is not valid JSON ({error.msg} at column {error.colno})."
            ) from error
        except _DuplicateKey as duplicate:
            raise _duplicate_key(self.path, number, duplicate.key) from None
        except RecursionError:
            raise _too_deep(self.path, number) from None
        if not isinstance(row, dict):
            raise DatasetError(
                f"{self.path}: line {number} holds {_json_kind(row)}, not a JSON object."
            )
        return row


class _JsonArrayRows:
    """A JSON array of row objects, decoded one item at a time from a buffer of its text."""

    def __init__(self, path: Path, text: _Text) -> None:
        self.path = path
        self.text = text
        self._chunks = text.chunks()
        self._buffer = ""
        self._at_end = False
        self._position = 0
        # Line and column of buffer[0], and how far newlines have been counted.
        self._line = 1
        self._column = 0
        self._counted_to = 0
        self._counted_line = 1
        self._keep_opening = True
        self.watch: _JsonStyleWatch | None = None

    def rows(self) -> Iterator[dict[str, Any]]:
        self._skip_whitespace()
        if self._position == len(self._buffer):
            raise DatasetError(
                f"{self.path} is empty; a .json dataset is an array of objects, one per row."
            )
        if self._buffer[self._position] != "[":
            self._refuse_top_level_value()
        self._position += 1
        self._skip_whitespace()
        if self._next_char() == "]":
            self._position += 1
            self.watch = self._watch()
        else:
            yield from self._items()
        self._skip_whitespace()
        if self._position < len(self._buffer):
            raise self._invalid("Extra data", self._position)

    def style(self) -> JsonStyle:
        assert self.watch is not None
        return self.watch.style()

    def _watch(self) -> _JsonStyleWatch:
        """The style watch, made once the buffer holds the file from its start to the first row."""
        indent = _JSON_ARRAY_INDENT.match(self._buffer)
        return _JsonStyleWatch(self.text, indent.group(1) if indent else None, opening="[")

    def _items(self) -> Iterator[dict[str, Any]]:
        while True:
            row, start, end = self._value()
            if not isinstance(row, dict):
                raise DatasetError(
                    f"{self.path}: line {self._line_at(start)} holds {_json_kind(row)} "
                    "where a row object should be."
                )
            if self.watch is None:
                self.watch = self._watch()
                self.watch.first_row(row, self._buffer[:end])
                self._keep_opening = False
            self.watch.row_text(self._buffer, start, end)
            self._position = end
            yield row
            self._skip_whitespace()
            separator = self._next_char()
            if separator == "]":
                self._position += 1
                return
            if separator != ",":
                raise self._invalid("Expecting ',' delimiter", self._position)
            self._position += 1
            self._skip_whitespace()

    def _value(self) -> tuple[Any, int, int]:
        """The JSON value at the current position, where it starts and ends, reading on as needed.

        Reading on drops the text already read, so positions are only valid until the next read.
        """
        start = self._position
        while True:
            if not self._at_end and len(self._buffer) - start < _LOOKAHEAD:
                self._read_more(start)
                start = self._position
                continue
            try:
                value, end = _DECODER.raw_decode(self._buffer, start)
            except json.JSONDecodeError as error:
                if self._at_end or _value_end(self._buffer, start) is not None:
                    raise self._invalid(error.msg, error.pos) from error
                self._read_more(start, at_least=len(self._buffer) - start)
                start = self._position
                continue
            except _DuplicateKey as duplicate:
                raise _duplicate_key(self.path, self._line_at(start), duplicate.key) from None
            except RecursionError:
                raise _too_deep(self.path, self._line_at(start)) from None
            if end == len(self._buffer) and not self._at_end:
                self._read_more(start)
                start = self._position
                continue
            return value, start, end

    def _refuse_top_level_value(self) -> None:
        value, start, end = self._value()
        self._position = end
        self._skip_whitespace()
        if self._position == len(self._buffer):
            raise DatasetError(
                f"{self.path} holds {_json_kind(value)}; "
                "a .json dataset is an array of objects, one per row."
            )
        if self._buffer[start] == "{":
            raise DatasetError(
                f"{self.path} holds one JSON object per line; name it .jsonl to read it as JSON Lines."
            )
        raise self._invalid("Extra data", self._position)

    def _next_char(self) -> str:
        if self._position == len(self._buffer):
            raise self._invalid("Expecting ',' delimiter", self._position)
        return self._buffer[self._position]

    def _skip_whitespace(self) -> None:
        """Moves past whitespace, reading on until something else or the end of the file."""
        while True:
            self._position = _JSON_WHITESPACE.match(self._buffer, self._position).end()
            if self._position < len(self._buffer) or self._at_end:
                return
            self._read_more(self._position)

    def _read_more(self, keep_from: int, at_least: int = 0) -> None:
        """Drops the text before `keep_from` (kept while the opening is needed), then reads on."""
        if not self._keep_opening:
            self._line_at(keep_from)
            if self._counted_line == self._line:
                self._column += keep_from
            else:
                self._column = keep_from - self._buffer.rindex("\n", 0, keep_from) - 1
            self._line = self._counted_line
            self._buffer = self._buffer[keep_from:]
            self._position -= keep_from
            self._counted_to = 0
        parts = [self._buffer]
        added = 0
        while added < max(at_least, 1):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._at_end = True
                break
            parts.append(chunk)
            added += len(chunk)
        self._buffer = "".join(parts)

    def _line_at(self, position: int) -> int:
        """The line of buffer position `position`, counting newlines only once."""
        self._counted_line += self._buffer.count("\n", self._counted_to, position)
        self._counted_to = position
        return self._counted_line

    def _invalid(self, message: str, position: int) -> DatasetError:
        line = self._line + self._buffer.count("\n", 0, position)
        line_start = self._buffer.rfind("\n", 0, position) + 1
        column = position - line_start + 1 + (self._column if line == self._line else 0)
        return DatasetError(
            f"{self.path}: line {line} is not valid JSON ({message} at column {column})."
        )


def _value_end(buffer: str, start: int) -> int | None:
    """Where the JSON value at `start` ends, judged by strings and brackets; None: past `buffer`.

    A scalar other than a string is judged complete: decoding starts with a lookahead after it.
    """
    if buffer[start] not in '[{"':
        return start
    depth = 0
    for token in _JSON_TOKEN.finditer(buffer, start):
        if buffer[token.start()] == '"':
            if not token.group("close"):
                return None
        elif buffer[token.start()] in "[{":
            depth += 1
        else:
            depth -= 1
        if depth <= 0:
            return token.end()
    return None


def _duplicate_key(path: Path, line: int, key: str) -> DatasetError:
    return DatasetError(
        f"{path}: line {line} holds an object with the key {key!r} twice, "
        "and keeping only one of its values would lose data."
    )


def _too_deep(path: Path, line: int) -> DatasetError:
    return DatasetError(
        f"{path}: line {line} nests arrays or objects deeper than the JSON reader allows."
    )


class _CsvRows:
    """CSV through csv.reader: quoted fields may hold delimiters, quotes and line ends."""

    def __init__(self, path: Path, text: _Text) -> None:
        self.path = path
        self.text = text
        self._header_line = ""
        self._fieldnames: tuple[str, ...] = ()
        self._delimiter = ","

    def rows(self) -> Iterator[dict[str, str]]:
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
        lines = self._lines()
        first = next(lines, "")
        self._header_line = first.rstrip("\r\n")
        self._delimiter = max(
            _CSV_DELIMITERS,
            key=lambda d: len(next(csv.reader([self._header_line], delimiter=d), [])),
        )
        reader = csv.reader(itertools.chain([first], lines), delimiter=self._delimiter)
        try:
            fieldnames = self._fieldnames = tuple(next(reader, []))
            duplicates = sorted({name for name in fieldnames if fieldnames.count(name) > 1})
            if duplicates:
                raise DatasetError(f"{self.path}: line 1 names the column {duplicates[0]!r} twice.")
            while True:
                line = reader.line_num + 1
                record = next(reader, None)
                if record is None:
                    break
                if not record:
                    continue
                if len(record) != len(fieldnames):
                    raise DatasetError(
                        f"{self.path}: line {line} has {len(record)} fields "
                        f"but the header has {len(fieldnames)}."
                    )
                yield dict(zip(fieldnames, record, strict=True))
        except csv.Error as error:
            raise DatasetError(
                f"{self.path}: line {reader.line_num} is not valid CSV ({error})."
            ) from error

    def style(self) -> CsvStyle:
        return CsvStyle(
            fieldnames=self._fieldnames,
            delimiter=self._delimiter,
            quoting=_csv_quoting(self._header_line, self._fieldnames, self._delimiter),
            line_terminator=self.text.line_end or "\n",
            final_newline=self.text.ends_with_newline or self.text.empty,
            bom=self.text.bom,
        )

    def _lines(self) -> Iterator[str]:
        """Lines with their ends, split as a text stream with newline="" splits them."""
        parts: list[str] = []
        for chunk in self.text.chunks():
            if "\n" not in chunk and "\r" not in chunk:
                parts.append(chunk)
                continue
            parts.append(chunk)
            lines = io.StringIO("".join(parts), newline="").readlines()
            # The last line may go on in the next chunk, even a "\r" followed by "\n".
            parts = [lines.pop()]
            yield from lines
        yield from io.StringIO("".join(parts), newline="").readlines()


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


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable Parquet file ({error}).") from error


def _parquet_style(parquet: pq.ParquetFile) -> ParquetStyle:
    metadata = parquet.metadata
    compression = None
    if metadata.num_row_groups and metadata.num_columns:
        codec = metadata.row_group(0).column(0).compression
        compression = {"UNCOMPRESSED": "none", "LZ4_RAW": "lz4"}.get(codec, codec.lower())
    return ParquetStyle(schema=parquet.schema_arrow, compression=compression)
