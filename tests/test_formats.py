"""Datasets in and out: rows, keys and untouched values come back as they were, atomically."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtfleet.data import (
    check_output_writable,
    detect_format,
    find_values,
    parse_field_paths,
    read_dataset,
    set_value,
    write_dataset,
)
from mtfleet.errors import DatasetError, OutputError

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"

ROWS: list[dict[str, Any]] = [
    {"id": 1, "text": "Café, naïve — 東京", "score": 0.5, "ok": True, "meta": {"b": 1, "a": None}},
    {"id": 2, "text": 'Line one\nline two\twith "quotes" and \\ and \u2028', "score": 1e-9},
    {"id": 3, "text": "", "score": None, "ok": False, "meta": {}},
]


def round_trip(source: Path, target: Path) -> bytes:
    """Reads `source` and writes its rows untouched to `target`; returns what was written."""
    dataset = read_dataset(source)
    write_dataset(dataset, dataset.rows, target)
    return target.read_bytes()


def test_the_alpaca_sample_written_back_untouched_is_identical_byte_for_byte(
    tmp_path: Path,
) -> None:
    assert round_trip(ALPACA, tmp_path / "out.json") == ALPACA.read_bytes()


@pytest.mark.parametrize(
    "style",
    [
        {"indent": 4},
        {"indent": 2, "ensure_ascii": False},
        {"indent": "\t"},
        {"indent": 2, "separators": (",", ":")},
        {},
        {"separators": (",", ":"), "ensure_ascii": False},
    ],
)
@pytest.mark.parametrize("ending", ["", "\n"])
def test_a_json_file_is_written_back_in_its_own_style(
    tmp_path: Path, style: dict[str, Any], ending: str
) -> None:
    source = tmp_path / "in.json"
    source.write_text(json.dumps(ROWS, **style) + ending, encoding="utf-8")
    assert round_trip(source, tmp_path / "out.json") == source.read_bytes()


def test_windows_line_ends_and_a_byte_order_mark_are_kept(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS, indent=2).replace("\n", "\r\n").encode())
    assert round_trip(source, tmp_path / "out.json") == source.read_bytes()


def test_a_translated_value_is_escaped_as_the_input_escaped_its_text(tmp_path: Path) -> None:
    dataset = read_dataset(ALPACA)
    dataset.rows[0]["output"] = "नमस्ते"
    write_dataset(dataset, dataset.rows, tmp_path / "out.json")
    assert "\\u0928\\u092e" in (tmp_path / "out.json").read_text(encoding="utf-8")

    source = tmp_path / "readable.json"
    source.write_text(json.dumps([{"a": "é"}], ensure_ascii=False), encoding="utf-8")
    readable = read_dataset(source)
    write_dataset(readable, [{"a": "नमस्ते"}], tmp_path / "readable_out.json")
    assert (tmp_path / "readable_out.json").read_text(encoding="utf-8") == '[{"a": "नमस्ते"}]'


@pytest.mark.parametrize(
    "style", [{}, {"ensure_ascii": False}, {"separators": (",", ":"), "ensure_ascii": False}]
)
def test_a_jsonl_file_is_written_back_one_object_a_line_in_its_own_style(
    tmp_path: Path, style: dict[str, Any]
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row, **style) + "\n" for row in ROWS), encoding="utf-8")
    written = round_trip(source, tmp_path / "out.jsonl")
    assert written == source.read_bytes()
    assert written.count(b"\n") == len(ROWS)


def test_row_order_key_order_and_untouched_values_survive_a_translation(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [{"z": "first", "a": "keep", "m": i} for i in range(50)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    dataset = read_dataset(source)
    for row in dataset.rows:
        row["z"] = row["z"].upper()
    write_dataset(dataset, dataset.rows, tmp_path / "out.jsonl")
    written = read_dataset(tmp_path / "out.jsonl").rows
    assert [list(row) for row in written] == [["z", "a", "m"]] * 50
    assert written == [{"z": "FIRST", "a": "keep", "m": i} for i in range(50)]


CSV_ROWS = [
    ["instruction", "input", "output"],
    ["Say hi, politely.", "", 'He said "hi"'],
    ["Two\nlines", " spaced ", "Ünïcödé; 東京"],
]


@pytest.mark.parametrize(
    "dialect",
    [
        {"lineterminator": "\r\n"},
        {"lineterminator": "\n"},
        {"lineterminator": "\n", "delimiter": ";"},
        {"lineterminator": "\n", "delimiter": "\t"},
        {"lineterminator": "\r\n", "quoting": csv.QUOTE_ALL},
    ],
)
def test_a_csv_file_is_written_back_with_its_dialect_header_and_line_ends(
    tmp_path: Path, dialect: dict[str, Any]
) -> None:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, **dialect).writerows(CSV_ROWS)
    source = tmp_path / "in.csv"
    source.write_bytes(buffer.getvalue().encode())
    assert round_trip(source, tmp_path / "out.csv") == source.read_bytes()
    assert read_dataset(source).rows[1] == dict(zip(CSV_ROWS[0], CSV_ROWS[2], strict=True))


CHAT_SCHEMA = pa.schema(
    [
        ("id", pa.int32()),
        (
            "conversations",
            pa.list_(pa.struct([("from", pa.string()), ("value", pa.large_string())])),
        ),
        ("score", pa.float32()),
    ],
    metadata={b"origin": b"test"},
)


def test_parquet_keeps_its_schema_and_nested_list_of_struct_values_can_be_translated(
    tmp_path: Path,
) -> None:
    source = tmp_path / "chat.parquet"
    rows = [
        {
            "id": 1,
            "conversations": [
                {"from": "human", "value": "Hi."},
                {"from": "gpt", "value": "Hello!"},
            ],
            "score": 0.5,
        },
        {"id": 2, "conversations": [], "score": None},
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=CHAT_SCHEMA), source, compression="zstd")
    dataset = read_dataset(source)
    assert dataset.rows == rows
    (path,) = parse_field_paths("conversations[].value")
    for location, value in find_values(dataset.rows[0], path):
        set_value(dataset.rows[0], location, value.upper())
    write_dataset(dataset, dataset.rows, tmp_path / "out.parquet")
    written = pq.ParquetFile(tmp_path / "out.parquet")
    assert written.schema_arrow == CHAT_SCHEMA
    assert written.metadata.row_group(0).column(0).compression == "ZSTD"
    assert written.read().to_pylist()[0]["conversations"][1] == {"from": "gpt", "value": "HELLO!"}


@pytest.mark.parametrize("target", ["out.jsonl", "out.csv", "out.parquet", "out.json"])
def test_the_output_extension_chooses_the_format(tmp_path: Path, target: str) -> None:
    source = tmp_path / "in.json"
    rows = [
        {"instruction": "Hi", "input": "", "output": "Hello"},
        {"instruction": "Bye", "input": "x", "output": "Ciao"},
    ]
    source.write_text(json.dumps(rows), encoding="utf-8")
    round_trip(source, tmp_path / target)
    assert read_dataset(tmp_path / target).rows == rows


def test_an_unknown_output_extension_keeps_the_input_format(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"a": 1}\n', encoding="utf-8")
    assert round_trip(source, tmp_path / "out.txt") == b'{"a": 1}\n'


def test_nested_values_written_to_csv_become_json_text(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(
        json.dumps({"a": "x", "n": None, "m": {"k": [1, True]}}) + "\n", encoding="utf-8"
    )
    assert round_trip(source, tmp_path / "out.csv") == b'a,n,m\nx,,"{""k"": [1, true]}"\n'


@pytest.mark.parametrize(
    ("name", "format"),
    [
        ("a.json", "json"),
        ("a.JSONL", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.csv", "csv"),
        ("a.pq", "parquet"),
    ],
)
def test_the_format_is_known_by_the_extension(name: str, format: str) -> None:
    assert detect_format(Path(name)) == format


def bad_input(tmp_path: Path, name: str, content: bytes) -> str:
    """The message of the DatasetError that reading `content` as file `name` raises."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError) as raised:
        read_dataset(path)
    return str(raised.value)


def test_a_malformed_line_5_of_a_jsonl_file_is_named(tmp_path: Path) -> None:
    lines = [json.dumps({"n": n}) for n in range(4)] + ['{"n": 4,, }', '{"n": 5}']
    message = bad_input(tmp_path, "data.jsonl", "\n".join(lines).encode())
    assert message.startswith(f"{tmp_path / 'data.jsonl'}: line 5 is not valid JSON")


def test_a_jsonl_line_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    message = bad_input(tmp_path, "data.jsonl", b'{"a": 1}\n\n["not", "a row"]\n')
    assert message == f"{tmp_path / 'data.jsonl'}: line 3 holds an array, not a JSON object."


def test_a_json_array_parse_error_is_named_by_line(tmp_path: Path) -> None:
    text = json.dumps([{"a": 1}, {"a": 2}], indent=2).replace('"a": 2', '"a": 2,')
    message = bad_input(tmp_path, "data.json", text.encode())
    assert "data.json: line 7 is not valid JSON" in message


def test_a_json_array_item_that_is_not_an_object_is_named_by_line(tmp_path: Path) -> None:
    message = bad_input(tmp_path, "data.json", b'[\n  {"a": 1},\n  {"a": 2},\n  "oops"\n]')
    assert message.endswith("data.json: line 4 holds a string where a row object should be.")


def test_a_json_file_that_is_not_an_array_or_is_json_lines_is_explained(tmp_path: Path) -> None:
    assert "holds an object" in bad_input(tmp_path, "one.json", b'{"a": 1}')
    assert "name it .jsonl" in bad_input(tmp_path, "lines.json", b'{"a": 1}\n{"a": 2}\n')


def test_invalid_utf8_is_named_by_line(tmp_path: Path) -> None:
    message = bad_input(tmp_path, "data.jsonl", b'{"a": "ok"}\n{"a": "ok"}\n{"a": "\xff"}\n')
    assert message.startswith(f"{tmp_path / 'data.jsonl'}: line 3 is not valid UTF-8")


def test_a_csv_row_with_the_wrong_number_of_fields_is_named_by_line(tmp_path: Path) -> None:
    message = bad_input(tmp_path, "data.csv", b'a,b\n1,2\n"multi\nline",2\n1,2,3\n')
    assert message == f"{tmp_path / 'data.csv'}: line 5 has 3 fields but the header has 2."


def test_a_missing_file_a_folder_an_unknown_extension_and_a_broken_parquet_are_named(
    tmp_path: Path,
) -> None:
    for path, expected in [
        (tmp_path / "missing.json", "missing.json does not exist."),
        (tmp_path, "is a folder"),
        (tmp_path / "data.txt", "data.txt does not exist."),
    ]:
        with pytest.raises(DatasetError, match=expected):
            read_dataset(path)
    assert "not a readable Parquet file" in bad_input(tmp_path, "broken.parquet", b"PAR1 nonsense")
    assert "unknown extension" in bad_input(tmp_path, "data.txt", b"text")


def test_a_failed_write_leaves_the_existing_output_untouched_and_no_partial_file(
    tmp_path: Path,
) -> None:
    output = tmp_path / "out.parquet"
    output.write_bytes(b"previous result")
    dataset = read_dataset(ALPACA)
    with pytest.raises(OutputError, match="as Parquet"):
        write_dataset(dataset, [{"a": 1}, {"a": "mixed types"}], output)
    assert output.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["out.parquet"]


def test_an_output_in_a_missing_folder_or_on_a_folder_is_an_output_error(tmp_path: Path) -> None:
    dataset = read_dataset(ALPACA)
    for path, expected in [
        (tmp_path / "nowhere" / "out.json", "folder .*nowhere does not exist"),
        (tmp_path, "it is a folder"),
    ]:
        with pytest.raises(OutputError, match=expected):
            check_output_writable(path)
    with pytest.raises(OutputError, match="it is a folder"):
        write_dataset(dataset, dataset.rows, tmp_path, format="json")
    assert os.listdir(tmp_path) == []


def test_the_writer_makes_the_folders_of_a_mirrored_output(tmp_path: Path) -> None:
    # a folder of inputs gives an output folder mirroring their relative names, made as written
    dataset = read_dataset(ALPACA)

    write_dataset(dataset, dataset.rows, tmp_path / "part" / "a" / "out.json", format="json")

    assert (tmp_path / "part" / "a" / "out.json").read_bytes() == ALPACA.read_bytes()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_an_output_in_a_read_only_folder_is_an_output_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_output_writable(tmp_path / "out.json")
    finally:
        tmp_path.chmod(0o700)


def test_an_output_keeps_the_usual_file_mode(tmp_path: Path) -> None:
    round_trip(ALPACA, tmp_path / "out.json")
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644
