"""`mtfleet translate` end to end on one machine: the alpaca sample through a real model and a local Ray cluster."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mtfleet.cli.main import app

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"
FIELDS = "instruction,input,output"
runner = CliRunner()


def translate(*args: str) -> Any:
    return runner.invoke(app, ["translate", *args])


def translate_alpaca(model_dir: Path, output: Path) -> Any:
    """The alpaca sample through `model_dir`, its job state kept beside the output."""
    return translate(
        str(ALPACA), "--model", str(model_dir), "--fields", FIELDS, "--output", str(output),
        "--state-dir", str(output.parent / "state"), "--shard-tokens", "2000", "--no-checks",
    )  # fmt: skip


@pytest.fixture(scope="module")
def alpaca_job(
    tiny_marian_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    work = tmp_path_factory.mktemp("alpaca")
    output = work / "alpaca.out.json"
    result = translate_alpaca(tiny_marian_dir, output)
    assert result.exit_code == 0, result.output
    manifest = json.loads(output.with_name("alpaca.out.json.manifest.json").read_text())
    return output, manifest


def test_alpaca_keeps_its_rows_keys_and_order(alpaca_job: tuple[Path, dict[str, Any]]) -> None:
    output, _ = alpaca_job
    source = json.loads(ALPACA.read_text())
    translated = json.loads(output.read_text())
    assert len(translated) == len(source) == 102
    assert [list(row) for row in translated] == [list(row) for row in source]


def test_all_54_empty_inputs_stay_empty_and_every_field_with_words_is_translated(
    alpaca_job: tuple[Path, dict[str, Any]],
) -> None:
    output, _ = alpaca_job
    source = json.loads(ALPACA.read_text())
    translated = json.loads(output.read_text())
    empty = [i for i, row in enumerate(source) if row["input"] == ""]
    assert len(empty) == 54
    assert all(translated[i]["input"] == "" for i in empty)
    for before, after in zip(source, translated, strict=True):
        for field in ("instruction", "input", "output"):
            if any(char.isalpha() for char in before[field]):
                assert after[field] != before[field], (field, before[field])


def test_the_manifest_accounts_for_every_field_of_every_row(
    alpaca_job: tuple[Path, dict[str, Any]],
) -> None:
    _, manifest = alpaca_job
    assert manifest["rows"] == 102
    assert manifest["units_total"] == 306
    assert manifest["units_skipped_empty"] == 54
    assert manifest["units_skipped_non_text"] == 0
    assert manifest["units_translated"] == 306 - 54
    assert manifest["failures"] == []
    assert manifest["segments_unique"] <= manifest["segments"]
    assert manifest["shards"] >= 2
    for key in ("job_id", "model", "engine", "settings", "segments", "elapsed_s", "versions"):
        assert key in manifest
    assert {"torch", "transformers", "ray", "mtfleet"} <= set(manifest["versions"])


def test_a_rerun_of_the_same_command_returns_the_finished_job(
    alpaca_job: tuple[Path, dict[str, Any]], tiny_marian_dir: Path
) -> None:
    output, manifest = alpaca_job
    # once it succeeded, its units and parts went; its plan's summary and logs stay
    work_dir = output.parent / "state" / "jobs" / manifest["job_id"]
    assert sorted(path.name for path in work_dir.iterdir()) == ["logs", "plan.json"]

    result = translate_alpaca(tiny_marian_dir, output)

    assert result.exit_code == 0, result.output
    assert (
        json.loads(output.with_name("alpaca.out.json.manifest.json").read_text())["job_id"]
        == manifest["job_id"]
    )


# --- bad input: one sentence naming the file and line, field or path; exit 2; no output


@pytest.fixture
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": f"Row {i}."}) + "\n" for i in range(8)))
    return path


def translate_into(
    output: Path,
    dataset: Path,
    *,
    model: str = "reverse",
    fields: str = "text",
    extra: tuple[str, ...] = (),
) -> Any:
    """`mtfleet translate` of `dataset` into `output`, with the reverse engine unless `model` is a directory."""
    engine = ("--engine", "reverse") if model == "reverse" else ()
    return translate(
        str(dataset), "--model", model, *engine, "--fields", fields, "--output", str(output),
        "--state-dir", str(output.parent / "state"), *extra,
    )  # fmt: skip


def assert_refused(result: Any, output: Path, *words: str) -> None:
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "Traceback" not in result.output
    for word in words:
        assert word in message, message
    assert not output.exists()


def test_a_malformed_line_5_of_a_jsonl_file_is_named(jsonl: Path, tmp_path: Path) -> None:
    lines = jsonl.read_text().splitlines()
    lines[4] = '{"text": "broken'
    jsonl.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out.jsonl"
    assert_refused(translate_into(output, jsonl), output, "rows.jsonl", "line 5")


def test_invalid_utf8_is_named(jsonl: Path, tmp_path: Path) -> None:
    jsonl.write_bytes(jsonl.read_bytes() + b'{"text": "caf\xe9"}\n')
    output = tmp_path / "out.jsonl"
    assert_refused(translate_into(output, jsonl), output, "rows.jsonl", "UTF-8", "line 9")


def test_a_missing_input_file_is_named(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    assert_refused(translate_into(output, tmp_path / "nope.jsonl"), output, "nope.jsonl")


def test_an_unknown_field_lists_the_fields_the_rows_have(jsonl: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    assert_refused(translate_into(output, jsonl, fields="txt"), output, "txt", "text")


def test_a_missing_model_directory_is_named(jsonl: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    result = translate_into(output, jsonl, model=str(tmp_path / "no-model"))
    assert_refused(result, output, "no-model")


def test_a_broken_model_directory_is_named(jsonl: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    output = tmp_path / "out.jsonl"
    assert_refused(translate_into(output, jsonl, model=str(broken)), output, "broken-model")


def test_an_unknown_target_language_is_named(
    jsonl: Path, tmp_path: Path, tiny_m2m100_dir: Path
) -> None:
    output = tmp_path / "out.jsonl"
    result = translate_into(
        output, jsonl, model=str(tiny_m2m100_dir), extra=("--src-lang", "en", "--tgt-lang", "xx")
    )
    assert_refused(result, output, "xx")


def test_an_invalid_setting_is_named(jsonl: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    assert_refused(translate_into(output, jsonl, extra=("--beam", "0")), output, "beam")


def test_an_output_in_a_missing_folder_is_named(jsonl: Path, tmp_path: Path) -> None:
    output = tmp_path / "missing-dir" / "out.jsonl"
    assert_refused(translate_into(output, jsonl), output, "missing-dir")


def test_gzip_is_not_a_dataset_format_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n'))
    output = tmp_path / "out.jsonl"
    assert_refused(translate_into(output, path), output, "rows.jsonl.gz")


def test_a_refused_job_leaves_an_existing_output_as_it_was(jsonl: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text("earlier work\n")
    result = translate_into(output, jsonl, fields="nope")
    assert result.exit_code == 2
    assert output.read_text() == "earlier work\n"
