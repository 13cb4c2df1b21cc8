"""`mtfleet translate` into three target languages in one job: each language's output is the one a
job into that language alone writes, byte for byte, with its own manifest, and a job manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mtfleet.cli.main import app
from mtfleet.cluster.assemble import outputs_intact
from mtfleet.random_models import build_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

ALPACA = Path(__file__).parents[1] / "examples" / "alpaca_sample.json"
TARGETS = ["mar_Deva", "hin_Deva", "tam_Taml"]
TINY = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "vocab_size": 300}
runner = CliRunner()


def translate(model: Path, output: Path, tgt_lang: str, *extra: str) -> Any:
    return runner.invoke(
        app,
        [
            "translate", str(output.parents[1] / "alpaca.jsonl"), "--model", str(model),
            "--fields", "instruction,input,output", "--output", str(output),
            "--src-lang", "eng_Latn", "--tgt-lang", tgt_lang, "--shard-tokens", "600",
            "--state-dir", str(output.parents[1] / "state"), "--threads", "1", "--no-checks", *extra,
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 alpaca rows as JSONL, and a tiny NLLB model."""
    root = tmp_path_factory.mktemp("targets-job")
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))[:8]
    (root / "alpaca.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    build_tiny_model("nllb", root / "model", **TINY)
    for folder in ("together", "alone", "taken"):
        (root / folder).mkdir()
    return root


@pytest.fixture(scope="module")
def together(work: Path) -> dict[str, Any]:
    result = translate(
        work / "model", work / "together" / "alpaca.{tgt_lang}.jsonl", ",".join(TARGETS)
    )
    assert result.exit_code == 0, result.output
    return json.loads((work / "together" / "alpaca.targets.jsonl.manifest.json").read_text())


# three jobs of a random model on shared cores (--no-checks: test_targets.py shows the checks
# retry each language as a job into it alone does)
@pytest.mark.timeout(1800)
def test_each_language_is_what_a_job_into_it_alone_writes(
    work: Path, together: dict[str, Any]
) -> None:
    for target in TARGETS:
        alone = work / "alone" / f"alpaca.{target}.jsonl"
        # not from the memory the job together filled: decoded again, alone
        result = translate(work / "model", alone, target, "--no-memory")
        assert result.exit_code == 0, result.output

        assert (work / "together" / alone.name).read_bytes() == alone.read_bytes()


def test_each_language_has_its_manifest_and_the_job_manifest_lists_them(
    work: Path, together: dict[str, Any]
) -> None:
    assert together["tgt_lang"] == TARGETS
    assert list(together["targets"]) == TARGETS
    for target in TARGETS:
        output = work / "together" / f"alpaca.{target}.jsonl"
        manifest = json.loads(Path(f"{output}.manifest.json").read_text())
        assert manifest["tgt_lang"] == target
        assert manifest["output"] == str(output)
        assert manifest["units_translated"] == together["targets"][target]["units_translated"] > 0
        assert together["targets"][target]["manifest"] == f"{output}.manifest.json"
    assert len(together["files"]) == 3
    assert outputs_intact(together)


def test_running_it_again_finds_the_job_done_and_rewrites_a_lost_language(
    work: Path, together: dict[str, Any]
) -> None:
    lost = work / "together" / "alpaca.hin_Deva.jsonl"
    written = lost.read_bytes()
    lost.unlink()

    result = translate(
        work / "model", work / "together" / "alpaca.{tgt_lang}.jsonl", ",".join(TARGETS)
    )

    assert result.exit_code == 0, result.output
    assert lost.read_bytes() == written


def test_an_existing_file_in_one_language_is_refused_and_named(work: Path) -> None:
    (work / "taken" / "alpaca.tam_Taml.jsonl").write_text("not ours\n")

    result = translate(
        work / "model", work / "taken" / "alpaca.{tgt_lang}.jsonl", ",".join(TARGETS)
    )

    assert result.exit_code == 2
    assert "alpaca.tam_Taml.jsonl exists and is not this job's earlier output" in result.output
    assert not (work / "taken" / "alpaca.mar_Deva.jsonl").exists()


@pytest.mark.parametrize(
    ("output", "tgt_lang", "message"),
    [
        ("alpaca.jsonl", "mar_Deva,hin_Deva", "{tgt_lang} in the output path"),
        ("alpaca.{tgt_lang}.jsonl", "mar_Deva,mar_Deva", "mar_Deva is given more than once"),
        ("alpaca.{tgt_lang}.jsonl", "mar_Deva,xx_Yyyy", "no language code 'xx_Yyyy'"),
    ],
)
def test_targets_a_job_cannot_use_are_one_sentence(
    work: Path, output: str, tgt_lang: str, message: str
) -> None:
    result = translate(work / "model", work / "taken" / output, tgt_lang)

    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
