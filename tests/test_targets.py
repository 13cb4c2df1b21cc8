"""Several target languages in one job: the spec that names them, and engines that translate into
each, one encoding of a batch serving every target where the family chooses it in the decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from mtfleet.engines import check_model, load_engine
from mtfleet.engines.hf import HFEngine
from mtfleet.errors import ModelError
from mtfleet.pipeline import translate_texts, translate_to_targets
from mtfleet.spec import JobSpec
from mtfleet.testing.tiny_model import build_tiny_model, varied_segments

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

SETTINGS = {"max_batch_tokens": 256, "max_length_factor": 1.0, "max_length_offset": 4}
TINY = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "vocab_size": 300}
# family -> (source, three targets)
LANGUAGES = {
    "nllb": ("eng_Latn", ["mar_Deva", "hin_Deva", "tam_Taml"]),
    "m2m100": ("en", ["de", "fr", "hi"]),
    "marian-multi": (None, ["de", "fr", "hi"]),
}
BASE = {"input": "in.jsonl", "model": "m", "fields": ["text"]}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("targets")
    return {family: build_tiny_model(family, root / family, **TINY) for family in LANGUAGES}


# --- the spec


def test_targets_are_a_list_or_a_comma_string_and_one_target_stays_a_string() -> None:
    several = JobSpec(**BASE, output="out.{tgt_lang}.jsonl", tgt_lang="mar_Deva, hin_Deva")
    listed = JobSpec(**BASE, output="out.{tgt_lang}.jsonl", tgt_lang=["mar_Deva", "hin_Deva"])
    one = JobSpec(**BASE, output="out.jsonl", tgt_lang=["mar_Deva"])

    assert several == listed
    assert several.targets() == ["mar_Deva", "hin_Deva"]
    assert several.for_target("hin_Deva").output == "out.hin_Deva.jsonl"
    assert one.tgt_lang == "mar_Deva"
    assert one.identity() == JobSpec(**BASE, output="out.jsonl", tgt_lang="mar_Deva").identity()
    assert JobSpec(**BASE, output="out.jsonl").targets() == [None]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"output": "out.jsonl", "tgt_lang": "de,fr"}, "{tgt_lang} in the output path"),
        ({"output": "out.{tgt_lang}.jsonl", "tgt_lang": "de,fr,de"}, "de is given more than once"),
        (
            {"output": "out.{tgt_lang}.jsonl", "tgt_lang": "de,en", "src_lang": "en"},
            "en is also the source language",
        ),
    ],
)
def test_a_spec_with_targets_it_cannot_write_is_one_sentence_on_tgt_lang(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        JobSpec(**BASE, **settings)

    (error,) = raised.value.errors()
    assert error["loc"] == ("tgt_lang",)
    assert message in error["msg"]


def test_each_target_is_checked_against_the_model(model_dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match="no language code 'xx_Yyyy'"):
        check_model(
            "hf", str(model_dirs["nllb"]), src_lang="eng_Latn", tgt_lang=["mar_Deva", "xx_Yyyy"]
        )


# --- the engines


@pytest.mark.parametrize("beam", [1, 2])
@pytest.mark.parametrize("family", ["nllb", "m2m100"])
def test_one_encoding_per_batch_decodes_what_each_target_alone_does(
    family: str, beam: int, model_dirs: dict[str, Path]
) -> None:
    source, targets = LANGUAGES[family]
    model = str(model_dirs[family])
    engines = load_engine("hf", model, src_lang=source, tgt_lang=targets, beam=beam, **SETTINGS)
    texts = varied_segments(20, seed=5)

    together = translate_to_targets(texts, engines)

    assert engines.shared is not None
    for target in targets:
        alone = HFEngine(model, src_lang=source, tgt_lang=target, beam=beam, **SETTINGS)
        assert together[target].translations == translate_texts(texts, alone).translations
        assert engines.engines[target].generate_token_ids(texts) == alone.generate_token_ids(
            texts
        )


def test_a_family_that_tags_its_sources_translates_once_per_target(
    model_dirs: dict[str, Path],
) -> None:
    _, targets = LANGUAGES["marian-multi"]
    model = str(model_dirs["marian-multi"])
    engines = load_engine("hf", model, tgt_lang=targets, **SETTINGS)
    texts = varied_segments(8, seed=6)

    together = translate_to_targets(texts, engines)

    assert engines.shared is None
    for target in targets:
        alone = HFEngine(model, tgt_lang=target, **SETTINGS)
        assert together[target].translations == translate_texts(texts, alone).translations
