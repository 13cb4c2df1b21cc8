"""Broken inputs, tried one by one: each is refused in one sentence naming the file and the line
(or row), or read faithfully so that writing it back gives the same bytes."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtfleet.data import DatasetReader, DatasetWriter, dataset_files
from mtfleet.errors import DatasetError


def refusal(path: Path) -> str:
    """The one sentence reading `path` is refused with."""
    with pytest.raises(DatasetError) as raised:
        list(DatasetReader(path).rows())
    message = str(raised.value)
    assert str(path) in message
    assert len(re.findall(r"[.!?](?:\s|$)", message)) == 1, message
    assert message.endswith(".")
    return message


def written_back(path: Path) -> bytes:
    """Reads `path` and writes its rows untouched beside it; returns the bytes written."""
    reader = DatasetReader(path)
    rows = list(reader.rows())
    target = path.with_name("written-back" + path.suffix)
    with DatasetWriter(
        target, source_format=reader.format, style=reader.style, columns=reader.columns
    ) as writer:
        for row in rows:
            writer.write(row)
    return target.read_bytes()


def test_a_truncated_gzip_file_named_jsonl_is_refused_saying_to_decompress_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(gzip.compress(b'{"a": 1}\n' * 100)[:30])
    assert "gzip-compressed" in refusal(path)
    assert "decompress it first" in refusal(path)


def test_a_jsonl_gz_file_is_refused_saying_gzip_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n'))
    with pytest.raises(DatasetError, match=r"does not read compressed files; decompress it first"):
        DatasetReader(path)


@pytest.mark.parametrize("name", ["data.json", "data.jsonl", "data.csv"])
def test_a_utf8_byte_order_mark_is_read_and_written_back(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    content = {
        "data.json": '[{"a": "é"}]',
        "data.jsonl": '{"a": "é"}\n',
        "data.csv": "a\né\n",
    }[name]
    path.write_bytes(b"\xef\xbb\xbf" + content.encode())
    assert written_back(path) == path.read_bytes()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_file_is_refused_saying_to_save_it_as_utf8(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes('{"a": "é"}\n'.encode(encoding))
    assert refusal(path) == f"{path} is UTF-16 text; save it as UTF-8."


def test_invalid_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a\nok\nok\nbad \xc3\x28 byte\n")
    assert refusal(path).startswith(f"{path}: line 4 is not valid UTF-8")


def test_nan_and_infinity_are_read_as_json_loads_reads_them_and_written_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": NaN, "b": Infinity, "c": -Infinity}\n{"d": 1e400}\n', encoding="utf-8")
    assert DatasetReader(path).head(2)[1] == {"d": float("inf")}
    path.write_text('{"a": NaN, "b": Infinity, "c": -Infinity}\n', encoding="utf-8")
    assert written_back(path) == path.read_bytes()
    path = tmp_path / "data.json"
    path.write_text('[{"a": NaN, "b": Infinity, "c": -Infinity}]', encoding="utf-8")
    assert written_back(path) == path.read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("data.jsonl", '{"a": 1}\n{"a": 1, "b": 2, "a": 3}\n', 2),
        ("data.json", '[\n  {"a": 1},\n  {"n": {"k": 1, "k": 2}}\n]', 3),
    ],
)
def test_a_key_repeated_in_one_object_is_refused_naming_the_line_and_key(
    tmp_path: Path, name: str, content: str, line: int
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    message = refusal(path)
    assert message.startswith(f"{path}: line {line} holds an object with the key")
    assert re.search(r"the key '[ak]' twice", message)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("data.jsonl", '{"a": ' + "[" * 10_000 + "]" * 10_000 + "}\n"),
        ("data.json", '[{"a": ' + "[" * 10_000 + "]" * 10_000 + "}]"),
    ],
)
def test_nesting_10000_deep_is_a_dataset_error_never_a_recursion_error(
    tmp_path: Path, name: str, content: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert refusal(path) == (
        f"{path}: line 1 nests arrays or objects deeper than the JSON reader allows."
    )


def test_a_100_mb_line_of_json_lines_is_read(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"a": 1}\n{"text": "')
        for _ in range(100):
            handle.write("x" * 2**20)
        handle.write('"}\n{"a": 3}\n')
    try:
        reader = DatasetReader(path)
        rows = reader.rows()
        assert next(rows) == {"a": 1}
        assert len(next(rows)["text"]) == 100 * 2**20
        assert list(rows) == [{"a": 3}]
    finally:
        path.unlink()


def test_csv_fields_with_newlines_and_quotes_are_read_and_written_back(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b'id,text\r\n1,"two\r\nlines"\r\n2,"say ""hi"", then, go"\r\n')
    assert DatasetReader(path).head(2) == [
        {"id": "1", "text": "two\r\nlines"},
        {"id": "2", "text": 'say "hi", then, go'},
    ]
    assert written_back(path) == path.read_bytes()


def test_a_ragged_csv_row_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n1,2\n3\n")
    assert refusal(path) == f"{path}: line 3 has 1 fields but the header has 2."


@pytest.mark.parametrize("name", ["data.jsonl", "data.csv"])
def test_an_empty_jsonl_or_csv_file_is_zero_rows(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    assert list(DatasetReader(path).rows()) == []
    assert written_back(path) == b""


def test_an_empty_json_file_is_refused_saying_it_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b"")
    assert "is empty" in refusal(path)
    path.write_bytes(b"  \n")
    assert "is empty" in refusal(path)


def test_an_empty_parquet_file_is_refused_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match=r"is not a readable Parquet file"):
        DatasetReader(path)


def test_a_parquet_file_with_nested_nulls_is_read_and_written_back_faithfully(
    tmp_path: Path,
) -> None:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("turns", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
            ("tags", pa.map_(pa.string(), pa.string())),
        ]
    )
    rows = [
        {"id": 1, "turns": [{"from": None, "value": "hi"}, None], "tags": [("k", None)]},
        {"id": None, "turns": None, "tags": None},
        {"id": 3, "turns": [], "tags": []},
    ]
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    written_back(path)
    written = pq.ParquetFile(tmp_path / "written-back.parquet")
    assert written.schema_arrow == schema
    assert written.read().to_pylist() == pq.read_table(path).to_pylist()


def test_a_json_array_with_trailing_garbage_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"a": 1}], indent=2) + "\n garbage\n", encoding="utf-8")
    assert refusal(path) == f"{path}: line 6 is not valid JSON (Extra data at column 2)."


def test_a_directory_with_mixed_formats_is_refused_naming_two_files(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"a": 1}\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text("a\n1\n", encoding="utf-8")
    with pytest.raises(DatasetError) as raised:
        dataset_files(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path} mixes formats: {tmp_path / 'a.jsonl'} is jsonl but {tmp_path / 'b.csv'} "
        "is csv; keep one format per dataset."
    )
