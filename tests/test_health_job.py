"""Health checks in a real job: faults injected by the reverse engine are all flagged, reported in
the manifest and OUT.flags.jsonl, shown by `mtfleet inspect`, and acted on by --on-flag."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mtfleet.cli.main import app
from mtfleet.data.segment import reassemble, segment
from mtfleet.engines.faulty import CAUGHT_AS, FAULTS, FaultInjector
from mtfleet.spec import JobSpec
from mtfleet.testing.engines import FAULT_EVERY_VARIABLE, FAULTS_VARIABLE, ReverseEngine

MULTI30K_DE = Path(__file__).parents[2] / "shared" / "data" / "multi30k" / "test_2016_flickr.de.gz"
EVERY = 5
runner = CliRunner()


def texts() -> list[str]:
    """German sentences (the reverse engine's clean output of German stays German), and some with
    numbers and placeholders."""
    with gzip.open(MULTI30K_DE, "rt", encoding="utf-8") as stream:
        sentences = [line.strip() for _, line in zip(range(150), stream, strict=False)]
    sentences += [f"Hallo {{name}}, du hast {n} neue Nachrichten im Postfach." for n in range(20)]
    sentences += [f"Der Zug fährt um {n}:30 Uhr von Gleis %s ab." for n in range(10, 30)]
    return sentences


def injected(text: str) -> str:
    """What the fault-injecting reverse engine makes of `text` through segmentation: each piece
    sent, translated by the injector, and put back with the spans taken out of it."""
    faulty = FaultInjector(FAULTS, EVERY)
    pieces = segment(text, 128, ReverseEngine().count_tokens)
    return reassemble(pieces, [faulty.translate(piece.text) for piece in pieces if piece.translate])


def translate(source: Path, output: Path, *extra: str) -> Any:
    return runner.invoke(
        app,
        [
            "translate", str(source), "--model", "none", "--engine", "reverse", "--fields",
            "text", "--output", str(output), "--tgt-lang", "de",
            "--state-dir", str(output.parent / "state"), *extra,
        ],
    )  # fmt: skip


def inject_faults(patch: pytest.MonkeyPatch) -> None:
    """The reverse engine of the jobs started under `patch` injects every fault, one segment in
    EVERY."""
    patch.setenv(FAULTS_VARIABLE, ",".join(FAULTS))
    patch.setenv(FAULT_EVERY_VARIABLE, str(EVERY))


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> None:
    inject_faults(monkeypatch)


@pytest.fixture(scope="module")
def faulty_job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    work = tmp_path_factory.mktemp("health")
    source = work / "texts.jsonl"
    source.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts()))
    with pytest.MonkeyPatch.context() as patch:
        inject_faults(patch)
        output = work / "out.jsonl"
        result = translate(source, output)
        assert result.exit_code == 0, result.output
        yield output, json.loads(output.with_name("out.jsonl.manifest.json").read_text())


def expected_flags() -> dict[int, set[str]]:
    """Row -> the checks its injected faults must raise."""
    injector = FaultInjector(FAULTS, EVERY)
    expected: dict[int, set[str]] = {}
    for row, text in enumerate(texts()):
        for piece in segment(text, 128, ReverseEngine().count_tokens):
            fault = injector.fault_of(piece.text) if piece.translate else None
            if fault:
                expected.setdefault(row, set()).add(CAUGHT_AS[fault])
    return expected


def test_every_injected_fault_is_flagged_as_what_it_is(faulty_job: tuple[Path, Any]) -> None:
    output, _ = faulty_job
    expected = expected_flags()
    assert {CAUGHT_AS[fault] for fault in FAULTS} <= set().union(*expected.values())
    flagged = {
        entry["row"]: set(entry["checks"])
        for entry in map(json.loads, output.with_name("out.jsonl.flags.jsonl").open())
    }
    outputs = [json.loads(line)["text"] for line in output.read_text().splitlines()]
    for row, checks in expected.items():
        # a segment is retried only when flagged; a retry that cures it leaves no flag behind
        cured = outputs[row] != injected(texts()[row])
        assert cured or checks <= flagged.get(row, set()), (row, texts()[row])
    clean_flagged = set(flagged) - set(expected)
    assert len(clean_flagged) <= 0.02 * (len(texts()) - len(expected)), clean_flagged


def test_the_manifest_counts_flags_per_check_and_field(faulty_job: tuple[Path, Any]) -> None:
    _, manifest = faulty_job
    health = manifest["health"]
    assert health["units_checked"] == len(texts())
    assert health["units_flagged"] == len(health["flagged"]) > 0
    assert health["per_field"]["text"] == health["per_check"]
    assert health["on_flag"] == "keep"


def test_inspect_shows_flagged_units_beside_their_source(faulty_job: tuple[Path, Any]) -> None:
    output, _ = faulty_job
    result = runner.invoke(app, ["inspect", str(output), "--check", "numbers"])
    assert result.exit_code == 0, result.output
    assert "units flagged" in result.output
    flagged = map(json.loads, output.with_name("out.jsonl.flags.jsonl").open())
    numbers_rows = [entry["row"] for entry in flagged if "numbers" in entry["checks"]]
    assert numbers_rows
    for row in numbers_rows:
        assert f"│ {row} " in result.output
    assert runner.invoke(app, ["inspect", str(output), "--check", "nope"]).exit_code == 2


def test_on_flag_drop_row_leaves_out_the_rows_still_flagged(
    faulty_job: tuple[Path, Any], faults: None
) -> None:
    output, manifest = faulty_job
    dropped = output.with_name("dropped.jsonl")
    result = translate(output.with_name("texts.jsonl"), dropped, "--on-flag", "drop-row")
    assert result.exit_code == 0, result.output
    rows = dropped.read_text().splitlines()
    assert len(rows) == len(texts()) - manifest["health"]["units_flagged"]


def test_with_checks_off_nothing_is_checked_or_retried(
    faulty_job: tuple[Path, Any], faults: None
) -> None:
    output, _ = faulty_job
    unchecked = output.with_name("unchecked.jsonl")
    result = translate(output.with_name("texts.jsonl"), unchecked, "--no-checks")
    assert result.exit_code == 0, result.output
    assert "checks:   off" in result.output
    # every injected fault is left as the engine wrote it: no segment was translated again
    outputs = [json.loads(line)["text"] for line in unchecked.read_text().splitlines()]
    assert outputs == [injected(text) for text in texts()]
    health = json.loads(unchecked.with_name("unchecked.jsonl.manifest.json").read_text())["health"]
    assert health["checks"] == "off"
    assert health["units_checked"] == health["units_flagged"] == 0
    assert not unchecked.with_name("unchecked.jsonl.flags.jsonl").exists()
    refused = runner.invoke(app, ["inspect", str(unchecked)])
    assert refused.exit_code == 2
    assert "ran with its health checks off" in refused.output


def test_checks_off_is_refused_with_an_on_flag_that_acts_on_them(tmp_path: Path) -> None:
    source = tmp_path / "texts.jsonl"
    source.write_text('{"text": "Hallo Welt."}\n')
    result = translate(source, tmp_path / "out.jsonl", "--no-checks", "--on-flag", "source")
    assert result.exit_code == 2
    assert "on_flag source acts on what the health checks flag" in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_checks_on_is_no_part_of_a_job_id_and_off_is() -> None:
    spec = JobSpec(input="in.jsonl", output="out.jsonl", model="m", fields=["text"])
    assert "checks" not in spec.identity()
    assert spec.model_copy(update={"checks": True}).default_job_id("key") == spec.default_job_id(
        "key"
    )
    unchecked = JobSpec(**{**spec.model_dump(), "checks": False})
    assert unchecked.default_job_id("key") != spec.default_job_id("key")
