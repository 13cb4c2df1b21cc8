"""Every model family through both engines: its real tokenizer class and language codes, the
languages put where the family expects them, greedy output equal to `generate` on each segment
alone, and CTranslate2 in float32 equal to transformers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mtfleet.engines import check_model
from mtfleet.engines.ct2 import CT2Engine, cache_root
from mtfleet.engines.hf import HFEngine
from mtfleet.errors import ModelError
from mtfleet.random_models import build_tiny_model, varied_segments
from mtfleet.testing.families import FAMILIES, generate_alone

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

FACTOR, OFFSET = 1.0, 4
SETTINGS = {"max_batch_tokens": 256, "max_length_factor": FACTOR, "max_length_offset": OFFSET}
TINY = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "vocab_size": 300}

# the families whose target language token is forced as the first generated token
FORCED_BOS = sorted(name for name, family in FAMILIES.items() if family.forced_bos)
# indictrans2 has tests of its own (test_remote_code.py): its text goes through IndicProcessor
NAMES = [name for name in FAMILIES if name != "indictrans2"]


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def ct2_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MTFLEET_CACHE", str(tmp_path_factory.mktemp("families-cache")))
        yield cache_root()


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_tiny_model(family, root / family, **TINY) for family in NAMES}


@pytest.fixture(scope="module")
def hf_engines(family_dirs: dict[str, Path]) -> dict[str, HFEngine]:
    return {
        name: HFEngine(
            str(family_dirs[name]),
            src_lang=FAMILIES[name].src_lang,
            tgt_lang=FAMILIES[name].tgt_lang,
            threads=1,
            **SETTINGS,
        )
        for name in NAMES
    }


@pytest.mark.parametrize("family", NAMES)
def test_each_family_loads_with_its_own_tokenizer_and_is_recognised(
    family: str, hf_engines: dict[str, HFEngine]
) -> None:
    engine = hf_engines[family]

    assert type(engine.tokenizer).__name__.removesuffix("Fast") == FAMILIES[family].tokenizer_class
    assert engine.tokens.languages.family == family
    assert engine.describe()["family"] == family


@pytest.mark.parametrize("family", NAMES)
def test_greedy_output_equals_generate_on_each_segment_alone(
    family: str, hf_engines: dict[str, HFEngine], family_dirs: dict[str, Path]
) -> None:
    segments = varied_segments(16, seed=11)

    batched = hf_engines[family].generate_token_ids(segments)

    assert batched == generate_alone(
        family_dirs[family],
        family,
        segments,
        max_length_factor=FACTOR,
        max_length_offset=OFFSET,
    )


@pytest.mark.parametrize("family", NAMES)
def test_ct2_float32_generates_what_the_hf_engine_does(
    family: str, hf_engines: dict[str, HFEngine], family_dirs: dict[str, Path]
) -> None:
    ct2 = CT2Engine(
        str(family_dirs[family]),
        src_lang=FAMILIES[family].src_lang,
        tgt_lang=FAMILIES[family].tgt_lang,
        compute_type="float32",
        threads=1,
        **SETTINGS,
    )
    segments = varied_segments(24, seed=12)

    ids = ct2.generate_token_ids(segments)

    assert ids == hf_engines[family].generate_token_ids(segments)
    assert ct2.translate(segments) == hf_engines[family].translate(segments)


@pytest.mark.parametrize("family", sorted(FORCED_BOS))
def test_the_target_code_is_the_first_generated_token_and_never_text(
    family: str, hf_engines: dict[str, HFEngine]
) -> None:
    engine = hf_engines[family]
    src, mark = FAMILIES[family].src_lang, FAMILIES[family].target_mark
    target_id = engine.tokenizer.convert_tokens_to_ids(mark)
    segments = varied_segments(8, seed=13)

    assert {ids[0] for ids in engine.generate_token_ids(segments)} == {target_id}
    assert engine.tokens.encode(["Hello."])[0].count(engine.tokens.languages.codes[src]) == 1
    assert not any(mark in text for text in engine.translate(segments))


@pytest.mark.parametrize("family", ["marian-multi", "t5"])
def test_a_tagged_family_puts_the_target_tag_first_in_every_source(
    family: str, hf_engines: dict[str, HFEngine]
) -> None:
    engine = hf_engines[family]
    tag = FAMILIES[family].target_mark

    texts = ["The cat sleeps.", "Hi."]

    given = engine.tokens.encode(texts)

    # the documented `<2xx> text`: the tag's token, then the text's own, with no stray '▁' between
    tag_id = engine.tokenizer.convert_tokens_to_ids(tag)
    assert given == [[tag_id, *engine.tokenizer(text)["input_ids"]] for text in texts]
    assert engine.tokenizer.convert_ids_to_tokens([ids[0] for ids in given]) == [tag, tag]
    assert engine.tokens.forced_bos_token_id is None


@pytest.mark.parametrize(
    ("family", "wrong", "nearest"),
    [
        ("nllb", "mar_Deva2", "mar_Deva"),
        ("mbart50", "mr_IN_", "mr_IN"),
        ("m2m100", "dex", "de"),
        ("t5", "dee", "de"),
        ("marian-multi", "frr", "fr"),
    ],
)
def test_an_unknown_language_code_is_one_sentence_naming_the_nearest(
    family: str, wrong: str, nearest: str, family_dirs: dict[str, Path]
) -> None:
    src = FAMILIES[family].src_lang

    with pytest.raises(
        ModelError, match=rf"no language code '{wrong}' \(--tgt-lang\); the nearest .*\b{nearest}\b"
    ):
        check_model("hf", str(family_dirs[family]), src_lang=src, tgt_lang=wrong)


@pytest.mark.parametrize(
    ("family", "given", "meant"),
    [
        ("nllb", ("en", "mr", "fra"), ("eng_Latn", "mar_Deva", "fra_Latn")),
        ("mbart50", ("eng", "hin", "fr"), ("en_XX", "hi_IN", "fr_XX")),
        ("m2m100", ("eng", "mar", "fra"), ("en", "mr", "fr")),
        ("t5", ("en", "deu", "fra"), ("en", "de", "fr")),
    ],
)
def test_iso_639_codes_are_checked_as_the_models_own_codes(
    family: str,
    given: tuple[str, str, str],
    meant: tuple[str, str, str],
    family_dirs: dict[str, Path],
) -> None:
    model = str(family_dirs[family])
    src_lang, tgt_lang, other_tgt_lang = given

    assert check_model("hf", model, src_lang=src_lang, tgt_lang=tgt_lang) == meant[:2]
    assert check_model("hf", model, src_lang=src_lang, tgt_lang=[tgt_lang, other_tgt_lang]) == (
        meant[0],
        list(meant[1:]),
    )


def test_one_language_in_two_codes_is_refused_once_both_are_the_models(
    family_dirs: dict[str, Path],
) -> None:
    nllb = str(family_dirs["nllb"])

    with pytest.raises(ModelError, match=r"^--tgt-lang eng_Latn is also the source language"):
        check_model("hf", nllb, src_lang="en", tgt_lang="eng_Latn")
    with pytest.raises(ModelError, match=r"^--tgt-lang names mar_Deva more than once\.$"):
        check_model("hf", nllb, src_lang="en", tgt_lang=["mr", "mar_Deva"])


def test_an_engine_given_iso_639_codes_forces_the_models_target_token(
    hf_engines: dict[str, HFEngine], family_dirs: dict[str, Path]
) -> None:
    engine = HFEngine(str(family_dirs["nllb"]), src_lang="en", tgt_lang="mr", threads=1, **SETTINGS)

    assert (engine.src_lang, engine.tgt_lang) == ("eng_Latn", "mar_Deva")
    assert engine.tokens.forced_bos_token_id == engine.tokenizer.convert_tokens_to_ids("mar_Deva")
    assert engine.for_target("hin").tgt_lang == "hin_Deva"


def test_a_tagged_model_needs_a_target_language(family_dirs: dict[str, Path]) -> None:
    with pytest.raises(
        ModelError, match=r"multi-target and got no target language.*\(100 in all\)"
    ):
        check_model("hf", str(family_dirs["t5"]))


# --- mtfleet models inspect


def test_models_inspect_prints_family_languages_limit_and_engines(
    family_dirs: dict[str, Path],
) -> None:
    from typer.testing import CliRunner

    from mtfleet.cli.main import app

    result = CliRunner().invoke(app, ["models", "inspect", str(family_dirs["nllb"])])

    assert result.exit_code == 0, result.output
    assert "family:      nllb (M2M100ForConditionalGeneration, NllbTokenizer)" in result.output
    assert "languages:   202: ace_Arab, ace_Latn" in result.output
    assert "input limit: 1024 tokens" in result.output
    assert "engines:     hf, ct2" in result.output


@pytest.mark.parametrize(
    ("family", "count", "given_as"),
    [("t5", 100, "<2xx> before each source"), ("mbart50", 52, "--src-lang and --tgt-lang")],
)
def test_models_inspect_output_json_lists_every_language_code(
    family: str, count: int, given_as: str, family_dirs: dict[str, Path]
) -> None:
    import json

    from typer.testing import CliRunner

    from mtfleet.cli.main import app

    result = CliRunner().invoke(
        app, ["models", "inspect", str(family_dirs[family]), "--output", "json"]
    )

    report = json.loads(result.stdout)
    assert (report["family"], report["languages"]["count"]) == (family, count)
    assert len(report["languages"]["codes"]) == count
    assert given_as in report["languages"]["given_as"]
    assert report["engines"] == ["hf", "ct2"]


def test_models_inspect_names_a_missing_model_in_one_sentence(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mtfleet.cli.main import app

    result = CliRunner().invoke(app, ["models", "inspect", str(tmp_path / "nothing")])

    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_translate_prints_what_an_iso_639_code_means_and_names_outputs_by_the_models_codes(
    family_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mtfleet.cli.main import app

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "The cat sleeps."}\n')
    # an output that is not this job's stops it after its languages are checked
    (tmp_path / "out.mar_Deva.jsonl").write_text('{"text": "someone else\'s"}\n')
    command = ["translate", str(rows), "-m", str(family_dirs["nllb"]), "-f", "text"]
    command += ["-o", str(tmp_path / "out.{tgt_lang}.jsonl"), "--src-lang", "en"]
    command += ["--tgt-lang", "mr,hin_Deva", "--state-dir", str(tmp_path / "state")]

    result = CliRunner().invoke(app, command)

    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[:2] == [
        "--src-lang en means eng_Latn for this model",
        "--tgt-lang mr means mar_Deva for this model",
    ]
    assert lines[2].startswith("error: --output: ") and "out.mar_Deva.jsonl exists" in lines[2]
