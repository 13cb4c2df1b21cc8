"""Models with code of their own (`auto_map`), loaded only when trusted, and IndicTrans2's
IndicProcessor around any engine, as AI4Bharat's own inference runs it."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from mtfleet.engines import check_model, inspect_model, load_engine
from mtfleet.engines import indictrans as indictrans_module
from mtfleet.engines.ct2 import CT2Engine
from mtfleet.engines.hf import HFEngine
from mtfleet.engines.indictrans import IndicTransEngine, indic_processor
from mtfleet.errors import ModelError
from mtfleet.random_models import build_tiny_model, varied_segments
from mtfleet.testing.engines import ReverseEngine

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

TINY = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "vocab_size": 300}
LANGUAGES = {"src_lang": "eng_Latn", "tgt_lang": "mar_Deva"}
URL_SENTENCE = "Read https://example.com/guide before 12 May."


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def indictrans2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model("indictrans2", tmp_path_factory.mktemp("indictrans2"), **TINY)


@pytest.fixture(scope="module")
def indictrans2(indictrans2_dir: Path) -> IndicTransEngine:
    engine = load_engine(
        "hf",
        str(indictrans2_dir),
        trust_remote_code=True,
        preprocessor="indictrans",
        threads=1,
        max_length_offset=4,
        max_length_factor=1.0,
        **LANGUAGES,
    )
    assert isinstance(engine, IndicTransEngine)
    return engine


class PlaceholderEngine(ReverseEngine):
    """Answers every segment with its first placeholder, as IndicTrans2 copies `<ID1>` through."""

    def translate(self, segments: Sequence[str]) -> list[str]:
        return ["<ID1> ." for _ in segments]


# --- code of its own


def test_a_model_with_its_own_code_is_refused_without_the_flag_naming_it(
    indictrans2_dir: Path,
) -> None:
    with pytest.raises(
        ModelError, match=r"runs code of its own \(.*TinyIndicTransModel.*--trust-remote-code"
    ):
        check_model("hf", str(indictrans2_dir), preprocessor="indictrans", **LANGUAGES)


def test_with_the_flag_the_model_directory_supplies_its_own_architecture(
    indictrans2: IndicTransEngine,
) -> None:
    assert type(indictrans2.engine.model).__name__ == "TinyIndicTransModel"
    assert indictrans2.describe()["family"] == "indictrans2"
    assert indictrans2.describe()["settings"]["trust_remote_code"] is True


def test_ct2_cannot_convert_an_architecture_it_has_never_seen(
    indictrans2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTFLEET_CACHE", str(tmp_path))

    assert inspect_model(str(indictrans2_dir), trust_remote_code=True)["engines"] == ["hf"]
    with pytest.raises(ModelError, match="cannot be converted to CTranslate2"):
        CT2Engine(str(indictrans2_dir), trust_remote_code=True, **LANGUAGES)


# --- IndicTrans2 and its processor


def test_indictrans2_without_its_preprocessor_is_refused_naming_it(indictrans2_dir: Path) -> None:
    with pytest.raises(ModelError, match="add --preprocessor indictrans"):
        check_model("hf", str(indictrans2_dir), trust_remote_code=True, **LANGUAGES)


def test_an_unknown_flores_code_names_the_nearest(indictrans2_dir: Path) -> None:
    with pytest.raises(
        ModelError, match=r"no language code 'mar_Dev' \(--tgt-lang\); the nearest .*mar_Deva"
    ):
        check_model(
            "hf",
            str(indictrans2_dir),
            trust_remote_code=True,
            preprocessor="indictrans",
            src_lang="eng_Latn",
            tgt_lang="mar_Dev",
        )


def test_the_model_sees_what_indicprocessor_prepares_and_its_output_goes_back_through_it(
    indictrans2: IndicTransEngine,
) -> None:
    segments = varied_segments(10, seed=21)
    processor = indic_processor()

    prepared = processor.preprocess_batch(segments, **LANGUAGES)
    by_hand = processor.postprocess_batch(indictrans2.engine.translate(prepared), lang="mar_Deva")

    assert all(text.startswith("eng_Latn mar_Deva ") for text in prepared)
    assert indictrans2.count_tokens(segments) == indictrans2.engine.count_tokens(prepared)
    assert indictrans2.translate(segments) == by_hand


def test_counting_leaves_no_placeholder_behind_for_the_translations() -> None:
    engine = IndicTransEngine(PlaceholderEngine(), **LANGUAGES)
    engine.count_tokens(["Write to me at someone@example.org.", "Nothing here."])

    translation = engine.translate([URL_SENTENCE])[0]

    assert "https://example.com/guide" in translation


def test_a_missing_indictranstoolkit_is_one_sentence_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        indictrans_module.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "IndicTransToolkit" else find_spec(name, *args),
    )

    with pytest.raises(
        ModelError, match="needs AI4Bharat's IndicTransToolkit: pip install indictranstoolkit"
    ):
        check_model("reverse", "unused", preprocessor="indictrans", **LANGUAGES)


def test_the_preprocessor_runs_around_the_reverse_dry_run_too() -> None:
    engine = load_engine("reverse", "unused", preprocessor="indictrans", **LANGUAGES)

    # the dry run shows what the model would be sent: the codes IndicProcessor put first, reversed
    assert engine.translate(["The cat sleeps."])[0].endswith(" ntaL_gne")
    assert engine.describe()["preprocessor"]["name"] == "indictrans"


def test_an_unknown_preprocessor_lists_the_known_ones() -> None:
    with pytest.raises(
        ModelError, match="Preprocessor 'moses' does not exist; mtfleet has indictrans"
    ):
        check_model("reverse", "unused", preprocessor="moses")


def test_hf_engine_loads_the_stand_in_directly_with_the_flag(indictrans2_dir: Path) -> None:
    engine = HFEngine(str(indictrans2_dir), trust_remote_code=True, threads=1)

    assert engine.tokens.languages.family == "indictrans2"


# --- the job spec, the CLI and the API


def test_the_settings_default_off_and_leave_an_older_jobs_identity_alone() -> None:
    from mtfleet.spec import JobSpec, stored_identity

    plain = JobSpec(input="in.jsonl", output="out.jsonl", model="m", fields=["text"])
    trusted = plain.model_copy(update={"trust_remote_code": True, "preprocessor": "indictrans"})
    stored_before_them = {
        key: value
        for key, value in plain.model_dump().items()
        if key not in ("trust_remote_code", "preprocessor")
    }

    assert (plain.trust_remote_code, plain.preprocessor) == (False, None)
    assert stored_identity(stored_before_them) == stored_identity(plain.model_dump())
    assert plain.identity() == stored_identity(stored_before_them)
    assert trusted.identity()["trust_remote_code"] is True
    assert plain.default_job_id("key") != trusted.default_job_id("key")


def test_the_api_refuses_trust_remote_code_unless_served_with_allow_remote_code(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from mtfleet.api.server import ServerSettings, create_app

    job = {
        "input": "in.jsonl",
        "output": "out.jsonl",
        "model": "model",
        "fields": ["text"],
        "trust_remote_code": True,
    }
    token = "t" * 32
    settings = ServerSettings(data_root=tmp_path, token=token, state_dir=tmp_path / "state")
    bearer = {"Authorization": f"Bearer {token}"}

    answer = TestClient(create_app(settings)).post("/v1/jobs", json=job, headers=bearer)
    allowed = TestClient(create_app(replace(settings, allow_remote_code=True))).post(
        "/v1/jobs", json=job, headers=bearer
    )

    assert answer.status_code == 400
    assert answer.json()["error"].startswith("Field trust_remote_code:")
    assert "--allow-remote-code" in answer.json()["error"]
    # past the gate, the job is checked as any other: its input is missing
    assert "trust_remote_code" not in allowed.json()["error"]


def test_translate_without_the_flag_stops_before_anything_runs(
    indictrans2_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mtfleet.cli.main import app

    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "The cat sleeps."}\n')
    arguments = ["translate", str(source), "-m", str(indictrans2_dir), "-f", "text"]
    arguments += ["-o", str(tmp_path / "out.jsonl"), "--state-dir", str(tmp_path / "state")]
    arguments += ["--src-lang", "eng_Latn", "--tgt-lang", "mar_Deva"]

    refused = CliRunner().invoke(app, arguments)
    no_preprocessor = CliRunner().invoke(app, [*arguments, "--trust-remote-code"])

    assert refused.exit_code == 2
    assert "--trust-remote-code" in refused.output
    assert no_preprocessor.exit_code == 2
    assert "--preprocessor indictrans" in no_preprocessor.output
    assert not (tmp_path / "out.jsonl").exists()


def test_a_job_runs_indictrans2_through_its_processor_on_the_local_cluster(
    indictrans2_dir: Path, tmp_path: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from mtfleet.cli.main import app

    rows = [{"text": "The cat sleeps."}, {"text": URL_SENTENCE}, {"text": ""}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "out.jsonl"

    result = CliRunner().invoke(
        app,
        [
            "translate", str(source), "-m", str(indictrans2_dir), "-f", "text", "-o", str(output),
            "--state-dir", str(tmp_path / "state"), "--src-lang", "eng_Latn",
            "--tgt-lang", "mar_Deva", "--trust-remote-code", "--preprocessor", "indictrans",
            "--max-length-factor", "1", "--max-length-offset", "4",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    translated = [json.loads(line)["text"] for line in output.read_text().splitlines()]
    assert len(translated) == 3 and translated[2] == "" and all(translated[:2])
    manifest = json.loads(output.with_name("out.jsonl.manifest.json").read_text())
    assert "trust_remote_code" in json.dumps(manifest)
    assert "indictrans" in json.dumps(manifest)


def test_the_health_checks_and_their_retries_translate_through_the_processor() -> None:
    from mtfleet.health import HealthChecks
    from mtfleet.pipeline import translate_texts

    engine = IndicTransEngine(PlaceholderEngine(), **LANGUAGES)

    outcome = translate_texts([URL_SENTENCE, "One more."], engine, checks=HealthChecks(**LANGUAGES))

    # the model never sees the URL (it answers <ID1>), and IndicProcessor puts the URL back
    assert "https://example.com/guide" in outcome.translations[0]
    assert len(outcome.flags) == 2


def test_the_health_checks_reach_the_model_only_through_the_processor(
    indictrans2: IndicTransEngine,
) -> None:
    from mtfleet.checked import translate_watching_caps

    segments = varied_segments(6, seed=22)

    translations, _ = translate_watching_caps(indictrans2, segments)

    assert translations == indictrans2.translate(segments)
