"""Streaming datasets: rows one at a time, bytes exactly as the whole-document writers give them."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtfleet.data import (
    CsvStyle,
    DatasetReader,
    DatasetWriter,
    JsonStyle,
    ParquetStyle,
    dataset_files,
    mirrored_output,
    style_from_json,
    style_to_json,
    write_bytes_atomically,
)
from mtfleet.data import reader as reader_module
from mtfleet.errors import DatasetError, OutputError

ROWS: list[dict[str, Any]] = [
    {"id": 1, "text": "Café, naïve — 東京", "score": 0.5, "ok": True, "meta": {"b": 1, "a": None}},
    {"id": 2, "text": 'Line one\nline two\twith "quotes" and \\ and \u2028', "score": 1e-9},
    {"id": 3, "text": "", "score": None, "ok": False, "meta": {}, "list": [1, [2, {"x": []}]]},
    {"id": 4, "text": "\\u00e9 is not an escape here", "big": 10**30, "neg": -0.0, "e": 1e300},
]

JSON_STYLES = [
    {"indent": 4},
    {"indent": 2, "ensure_ascii": False},
    {"indent": "\t"},
    {"indent": 2, "separators": (",", ":")},
    {"indent": ""},
    {},
    {"separators": (",", ":"), "ensure_ascii": False},
]


@pytest.fixture(params=[7, 1 << 20], ids=["tiny-chunks", "MiB-chunks"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Reads in chunks of this many bytes; tiny chunks split every escape, line end and row."""
    monkeypatch.setattr(reader_module, "_CHUNK", request.param)
    monkeypatch.setattr(reader_module, "_LOOKAHEAD", min(request.param, 1 << 16) // 2)
    return request.param


@pytest.mark.parametrize("style", JSON_STYLES)
@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
@pytest.mark.parametrize("rows", [ROWS, ROWS[:1], []], ids=["rows", "one-row", "no-rows"])
def test_a_json_array_streams_back_exactly_as_json_dumps_wrote_it(
    tmp_path: Path, chunk: int, style: dict[str, Any], ending: str, rows: list[dict[str, Any]]
) -> None:
    text = json.dumps(rows, **style) + ending.replace("\r\n", "\n")
    if ending == "\r\n":
        text = text.replace("\n", "\r\n")
    source = tmp_path / "in.json"
    source.write_bytes(text.encode())
    reader = DatasetReader(source)
    read = list(reader.rows())
    assert read == json.loads(text)
    if not rows and style.get("indent") is not None:
        return  # json.dumps writes an empty array as "[]" whatever the indent: nothing to detect
    with DatasetWriter(tmp_path / "out.json", source_format="json", style=reader.style) as writer:
        for row in read:
            writer.write(row)
    assert (tmp_path / "out.json").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("style", [{}, {"ensure_ascii": False}, {"separators": (",", ":")}])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_jsonl_file_streams_back_exactly_as_written(
    tmp_path: Path, chunk: int, style: dict[str, Any], newline: str, bom: bytes
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(bom + "".join(json.dumps(row, **style) + newline for row in ROWS).encode())
    reader = DatasetReader(source)
    read = list(reader.rows())
    assert read == ROWS
    with DatasetWriter(tmp_path / "out.jsonl", source_format="jsonl", style=reader.style) as writer:
        for row in read:
            writer.write(row)
    assert (tmp_path / "out.jsonl").read_bytes() == source.read_bytes()


CSV_RECORDS = [
    ["instruction", "input", "output"],
    ["Say hi, politely.", "", 'He said "hi"'],
    ["Two\nlines", " spaced ", "Ünïcödé; 東京"],
    ["CR\r\nLF inside", "tab\there", "end"],
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
@pytest.mark.parametrize("final_newline", [True, False])
def test_a_csv_file_streams_back_exactly_as_csv_writer_wrote_it(
    tmp_path: Path, chunk: int, dialect: dict[str, Any], final_newline: bool
) -> None:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, **dialect).writerows(CSV_RECORDS)
    text = buffer.getvalue()
    if not final_newline:
        text = text[: -len(dialect["lineterminator"])]
    source = tmp_path / "in.csv"
    source.write_bytes(text.encode())
    reader = DatasetReader(source)
    read = list(reader.rows())
    assert read == [dict(zip(CSV_RECORDS[0], record, strict=True)) for record in CSV_RECORDS[1:]]
    assert reader.columns == tuple(CSV_RECORDS[0])
    with DatasetWriter(tmp_path / "out.csv", source_format="csv", style=reader.style) as writer:
        for row in read:
            writer.write(row)
    assert (tmp_path / "out.csv").read_bytes() == source.read_bytes()


def test_the_reader_hashes_the_bytes_it_read_and_collects_columns_in_order_of_appearance(
    tmp_path: Path, chunk: int
) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"b": 1}\n{"a": 2, "b": 3}\n{"c": 4}\n', encoding="utf-8")
    reader = DatasetReader(source)
    with pytest.raises(RuntimeError, match="known once all its rows are read"):
        _ = reader.sha256
    assert len(list(reader.rows())) == reader.rows_read == 3
    assert reader.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert reader.columns == ("b", "a", "c")
    assert reader.head(2) == [{"b": 1}, {"a": 2, "b": 3}]
    with pytest.raises(RuntimeError, match="already read"):
        reader.rows()


def test_head_reads_only_the_rows_it_needs(tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_text('[{"a": 1}, {"a": 2}, this is not JSON', encoding="utf-8")
    assert DatasetReader(source).head(2) == [{"a": 1}, {"a": 2}]


def parquet_rows(count: int) -> list[dict[str, Any]]:
    return [
        {"id": n, "turns": [{"from": "human", "value": f"hi {n}"}], "score": None}
        for n in range(count)
    ]


SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("turns", pa.list_(pa.struct([("from", pa.string()), ("value", pa.large_string())]))),
        ("score", pa.float32()),
    ],
    metadata={b"origin": b"test"},
)


def test_parquet_streams_in_fixed_row_groups_with_its_schema_and_compression(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtfleet.data import writer as writer_module

    monkeypatch.setattr(reader_module, "_PARQUET_BATCH", 3)
    monkeypatch.setattr(writer_module, "PARQUET_ROW_GROUP", 4)
    rows = parquet_rows(10)
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), source, compression="zstd")
    reader = DatasetReader(source)
    assert reader.style == ParquetStyle(schema=SCHEMA, compression="zstd")
    assert reader.columns == ("id", "turns", "score")
    assert list(reader.rows()) == rows
    assert reader.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    written = []
    for grouping in ([1] * 10, [10], [3, 7]):
        target = tmp_path / f"out{len(written)}.parquet"
        with DatasetWriter(target, source_format="parquet", style=reader.style) as writer:
            remaining = iter(rows)
            for size in grouping:
                for _ in range(size):
                    writer.write(next(remaining))
        written.append(target.read_bytes())
    assert written[0] == written[1] == written[2]
    output = pq.ParquetFile(tmp_path / "out0.parquet")
    assert output.schema_arrow == SCHEMA
    assert output.metadata.num_row_groups == 3
    assert output.metadata.row_group(0).column(0).compression == "ZSTD"
    assert output.read().to_pylist() == rows


@pytest.mark.parametrize(
    "style",
    [
        JsonStyle(indent="\t", separators=(",", ": "), ensure_ascii=True, newline="\r\n", bom=True),
        CsvStyle(fieldnames=("a", "b"), delimiter=";", quoting=csv.QUOTE_ALL, final_newline=False),
        ParquetStyle(schema=SCHEMA, compression="zstd"),
    ],
)
def test_a_style_saved_as_json_comes_back_equal_with_its_schema_metadata(style: Any) -> None:
    saved = json.loads(json.dumps(style_to_json(style)))
    restored = style_from_json(saved, Path("plan.json"))
    assert restored == style
    if isinstance(style, ParquetStyle):
        assert restored.schema.metadata == {b"origin": b"test"}


def test_a_style_that_cannot_be_read_is_named_by_its_file() -> None:
    with pytest.raises(DatasetError, match=r"^plan.json holds a dataset style"):
        style_from_json({"kind": "json", "indent": 2, "colour": "red"}, Path("plan.json"))


def test_a_csv_row_with_a_field_the_header_lacks_is_refused_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    with (
        pytest.raises(OutputError, match="has the field 'extra'"),
        DatasetWriter(
            tmp_path / "out.csv", source_format="jsonl", style=None, columns=("a",)
        ) as writer,
    ):
        writer.write({"a": "1"})
        writer.write({"a": "2", "extra": "x"})
    assert os.listdir(tmp_path) == []


def test_an_aborted_write_leaves_the_existing_output_untouched(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_bytes(b"previous\n")
    output.chmod(0o600)
    writer = DatasetWriter(output, source_format="jsonl", style=None)
    writer.write({"a": 1})
    writer.abort()
    assert output.read_bytes() == b"previous\n"
    with DatasetWriter(output, source_format="jsonl", style=None) as writer:
        writer.write({"a": 1})
    assert output.read_bytes() == b'{"a":1}\n'
    assert output.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_a_confined_output_outside_its_folder_is_refused_naming_the_relative_path(
    tmp_path: Path,
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "escape").symlink_to(tmp_path)
    outside = tmp_path / "out.json"
    with pytest.raises(OutputError, match=r"Cannot write \.\./out\.json: it lies outside"):
        DatasetWriter(outside, source_format="json", style=None, confine_to=jobs)
    with pytest.raises(OutputError, match="it lies outside"):
        write_bytes_atomically(outside, b"{}", confine_to=jobs)
    through_symlink = jobs / "escape" / "out.json"
    with pytest.raises(OutputError, match="escape is a symlink or a file, not a folder"):
        DatasetWriter(through_symlink, source_format="json", style=None, confine_to=jobs)
    with pytest.raises(OutputError, match="no output is written through a symlink"):
        write_bytes_atomically(through_symlink, b"{}", confine_to=jobs)
    assert sorted(os.listdir(tmp_path)) == ["jobs"]


def test_a_symlink_planted_at_a_temporary_name_cannot_redirect_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtfleet.data import atomic

    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda _: "planted")
    (tmp_path / ".out.json.planted.tmp").symlink_to(victim)
    with pytest.raises(OutputError, match="Cannot write"):
        write_bytes_atomically(tmp_path / "out.json", b"{}", confine_to=tmp_path)
    assert victim.read_bytes() == b"keep"


def test_small_files_are_written_atomically_with_the_usual_mode(tmp_path: Path) -> None:
    write_bytes_atomically(tmp_path / "job.manifest.json", b"{}\n")
    assert (tmp_path / "job.manifest.json").read_bytes() == b"{}\n"
    assert (tmp_path / "job.manifest.json").stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["job.manifest.json"]


def test_a_file_published_while_written_is_read_there_and_a_second_one_spares_its_readers(
    tmp_path: Path,
) -> None:
    from mtfleet.data.atomic import AtomicFile

    first = AtomicFile(tmp_path / "units.jsonl", confine_to=tmp_path)
    first.handle.write(b"row 0\n")
    first.publish()
    reader = open(tmp_path / "units.jsonl", "rb")  # noqa: SIM115
    first.handle.write(b"row 1\n")
    first.publish()
    assert reader.read() == b"row 0\nrow 1\n"
    # planned again: the name goes to the new file, the reader keeps the bytes it opened
    second = AtomicFile(tmp_path / "units.jsonl", confine_to=tmp_path)
    second.handle.write(b"other\n")
    second.publish()
    first.abort()
    second.commit()
    reader.seek(0)
    assert reader.read() == b"row 0\nrow 1\n"
    reader.close()
    assert (tmp_path / "units.jsonl").read_bytes() == b"other\n"
    assert os.listdir(tmp_path) == ["units.jsonl"]
    assert (tmp_path / "units.jsonl").stat().st_mode & 0o777 == 0o644


def make_files(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text('{"a": 1}\n', encoding="utf-8")


def test_a_folder_dataset_is_its_sorted_data_files_without_hidden_files_or_manifests(
    tmp_path: Path,
) -> None:
    make_files(
        tmp_path,
        ["b.jsonl", "a.jsonl", "sub/c.jsonl", ".hidden.jsonl", "x.manifest.json", "README.md"],
    )
    root, files = dataset_files(tmp_path)
    assert root == tmp_path
    assert files == [tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "sub" / "c.jsonl"]
    assert mirrored_output(root, files[2], tmp_path / "out") == tmp_path / "out/sub/c.jsonl"


def test_a_glob_dataset_is_rooted_at_its_fixed_leading_folder(tmp_path: Path) -> None:
    make_files(tmp_path, ["data/part-1.jsonl", "data/part-0.jsonl", "data/notes.csv"])
    root, files = dataset_files(f"{tmp_path}/data/part-*.jsonl")
    assert root == tmp_path / "data"
    assert files == [tmp_path / "data/part-0.jsonl", tmp_path / "data/part-1.jsonl"]


def test_a_single_file_dataset_is_its_folder_and_itself(tmp_path: Path) -> None:
    make_files(tmp_path, ["one.jsonl"])
    assert dataset_files(tmp_path / "one.jsonl") == (tmp_path, [tmp_path / "one.jsonl"])


def test_a_folder_without_data_files_is_refused(tmp_path: Path) -> None:
    make_files(tmp_path, ["README.md", ".hidden.jsonl"])
    with pytest.raises(DatasetError, match="holds no data file"):
        dataset_files(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        dataset_files(tmp_path / "missing")


def generated_rows(count: int) -> Iterator[dict[str, Any]]:
    for n in range(count):
        yield {"id": n, "instruction": f"Say hello number {n}.", "input": "", "output": "Hello!"}


def write_source(path: Path, format: str, count: int) -> None:
    # A one-line JSON array: json.dumps writes indented JSON in Python, one line in C.
    style = JsonStyle(separators=(", ", ": ")) if format == "json" else None
    columns = ("id", "instruction", "input", "output")
    with DatasetWriter(path, source_format=format, style=style, columns=columns) as writer:
        for row in generated_rows(count):
            writer.write(row)


def peak_bytes(action: Any) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MEMORY_BUDGET = 20 * 2**20


@pytest.mark.parametrize("format", ["jsonl", "json", "csv"])
def test_streaming_100000_rows_stays_within_a_fixed_memory_budget(
    tmp_path: Path, format: str
) -> None:
    # held as Python dicts, these rows take 58 MiB: three times the budget
    source = tmp_path / f"in.{format}"
    write_source(source, format, 100_000)

    # The planner's pass gives the style; the assembler's pass streams under tracemalloc.
    planner = DatasetReader(source)
    for _ in planner.rows():
        pass

    def assemble() -> None:
        with DatasetWriter(
            tmp_path / f"out.{format}",
            source_format=format,
            style=planner.style,
            columns=planner.columns,
        ) as writer:
            for row in DatasetReader(source).rows():
                writer.write(row)

    assert peak_bytes(assemble) < MEMORY_BUDGET
    assert (tmp_path / f"out.{format}").read_bytes() == source.read_bytes()
