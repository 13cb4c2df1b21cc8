"""`--src-lang auto`: each unit's language detected (lingua), units already in the target
language copied and flagged, and a model that takes a source code given each segment's own."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest
import torch

from mtfleet.engines import check_model, load_engine
from mtfleet.engines.detect import AutoSourceEngine, SourceDetector
from mtfleet.engines.hf import HFEngine
from mtfleet.errors import ModelError
from mtfleet.pipeline import translate_texts
from mtfleet.random_models import build_tiny_model
from mtfleet.testing.engines import ReverseEngine

ENGLISH = "Where is the nearest pharmacy, and is it open on Sundays?"
GERMAN = "Wo ist die nächste Apotheke, und hat sie am Sonntag geöffnet?"
FRENCH = "Où est la pharmacie la plus proche, et est-elle ouverte le dimanche ?"
TINY = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "vocab_size": 300}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def detector() -> SourceDetector:
    # three candidates keep lingua's models small; a job's detector takes the model's languages
    return SourceDetector("de", ["en", "fr", "de"])


@pytest.fixture
def auto_reverse(detector: SourceDetector) -> AutoSourceEngine:
    engine = AutoSourceEngine(ReverseEngine(), tgt_lang="de")
    engine.detector = detector
    return engine


def test_a_unit_already_in_the_target_language_is_copied_flagged_and_never_sent(
    auto_reverse: AutoSourceEngine,
) -> None:
    texts = [ENGLISH, GERMAN, "", FRENCH]

    outcome = translate_texts(texts, auto_reverse)

    assert outcome.translations == [ENGLISH[::-1], GERMAN, "", FRENCH[::-1]]
    assert outcome.skipped_target_language == [False, True, False, False]
    assert outcome.units_skipped_target_language == 1
    sent = [segment for call in auto_reverse.engine.calls for segment in call]
    assert GERMAN not in sent and ENGLISH in sent


def test_without_detection_nothing_is_skipped() -> None:
    outcome = translate_texts([GERMAN, ENGLISH], ReverseEngine())

    assert outcome.units_skipped_target_language == 0
    assert outcome.skipped_target_language == [False, False]


def test_a_text_lingua_cannot_place_is_translated_not_copied(detector: SourceDetector) -> None:
    assert detector.in_target_language(["42", "OK", "Hallo", GERMAN]) == [False, False, False, True]


def test_a_model_that_takes_a_source_code_gets_each_segments_detected_one(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = build_tiny_model("nllb", tmp_path_factory.mktemp("nllb-auto"), **TINY)
    settings: dict[str, Any] = {"tgt_lang": "deu_Latn", "threads": 1, "max_length_offset": 4}
    engine = load_engine("hf", str(model_dir), src_lang="auto", **settings)
    assert isinstance(engine, AutoSourceEngine)
    engine.detector = SourceDetector("deu_Latn", ["eng_Latn", "fra_Latn", "deu_Latn"])
    source_codes: list[str] = []
    translate = engine.engine.translate

    def recording(segments: list[str]) -> list[str]:
        source_codes.append(engine.engine.tokenizer.src_lang)
        return translate(segments)

    monkeypatch.setattr(engine.engine, "translate", recording)

    translations = engine.translate([ENGLISH, FRENCH])

    assert source_codes == ["eng_Latn", "fra_Latn"]
    english = HFEngine(str(model_dir), src_lang="eng_Latn", **settings)
    french = HFEngine(str(model_dir), src_lang="fra_Latn", **settings)
    assert translations == [english.translate([ENGLISH])[0], french.translate([FRENCH])[0]]


def test_auto_needs_a_target_lingua_knows(tiny_m2m100_dir: Path) -> None:
    with pytest.raises(ModelError, match="needs --tgt-lang"):
        check_model("reverse", "unused", src_lang="auto")
    with pytest.raises(ModelError, match="cannot recognise text in 'xx'"):
        check_model("reverse", "unused", src_lang="auto", tgt_lang="xx")
    check_model("hf", str(tiny_m2m100_dir), src_lang="auto", tgt_lang="de")


def test_auto_and_the_indictrans_preprocessor_do_not_mix() -> None:
    with pytest.raises(ModelError, match="cannot be used with --preprocessor indictrans"):
        check_model(
            "reverse", "unused", src_lang="auto", tgt_lang="mar_Deva", preprocessor="indictrans"
        )


def test_a_missing_lingua_is_one_sentence_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def without_lingua(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "lingua":
            raise ImportError("No module named 'lingua'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_lingua)

    with pytest.raises(ModelError, match="pip install lingua-language-detector"):
        check_model("reverse", "unused", src_lang="auto", tgt_lang="de")


def test_the_health_checks_see_each_segment_under_its_own_source_code(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from mtfleet.checked import translate_watching_caps

    model_dir = build_tiny_model("nllb", tmp_path_factory.mktemp("nllb-checked"), **TINY)
    settings: dict[str, Any] = {"tgt_lang": "deu_Latn", "threads": 1, "max_length_offset": 4}
    engine = load_engine("hf", str(model_dir), src_lang="auto", **settings)
    assert isinstance(engine, AutoSourceEngine)
    engine.detector = SourceDetector("deu_Latn", ["eng_Latn", "fra_Latn", "deu_Latn"])

    translations, capped = translate_watching_caps(engine, [ENGLISH, FRENCH])

    assert translations == engine.translate([ENGLISH, FRENCH])
    assert len(capped) == 2
    french = HFEngine(str(model_dir), src_lang="fra_Latn", **settings)
    assert translations[1] == french.translate([FRENCH])[0]


def test_a_job_counts_the_units_it_copied_for_being_in_the_target_language(
    tmp_path: Path,
) -> None:
    import json

    from typer.testing import CliRunner

    from mtfleet.cli.main import app

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in (ENGLISH, GERMAN)))
    output = tmp_path / "out.jsonl"

    result = CliRunner().invoke(
        app,
        ["translate", str(rows), "--model", "reverse", "--engine", "reverse", "--fields", "text",
         "--src-lang", "auto", "--tgt-lang", "de", "--output", str(output),
         "--state-dir", str(tmp_path / "state")],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in output.read_text().splitlines()] == [
        ENGLISH[::-1],
        GERMAN,
    ]
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["units_skipped_target_language"] == 1
