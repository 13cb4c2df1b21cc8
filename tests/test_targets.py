"""Several target languages in one job: the spec that names them, and engines that translate into
each, one encoding of a batch serving every target where the family chooses it in the decoder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from mtfleet.cluster.translator import segment_memory_keys
from mtfleet.engines import check_model, load_engine
from mtfleet.engines.ct2 import CT2Engine
from mtfleet.engines.hf import HFEngine
from mtfleet.errors import ModelError
from mtfleet.health import job_checks
from mtfleet.pipeline import translate_texts, translate_to_targets
from mtfleet.random_models import build_tiny_model, varied_segments
from mtfleet.spec import JobSpec

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

SETTINGS = {"max_batch_tokens": 256, "max_length_factor": 1.0, "max_length_offset": 4}
TINY = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "vocab_size": 300}
# family -> (source, three targets)
LANGUAGES = {
    "nllb": ("eng_Latn", ["mar_Deva", "hin_Deva", "tam_Taml"]),
    "m2m100": ("en", ["de", "fr", "hi"]),
    "mbart50": ("en_XX", ["hi_IN", "fr_XX", "de_DE"]),
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
@pytest.mark.parametrize("family", ["nllb", "m2m100", "mbart50"])
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
        assert engines.engines[target].generate_token_ids(texts) == alone.generate_token_ids(texts)


def test_each_batch_one_target_alone_cuts_is_decoded_for_every_target_in_one_generate(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, targets = LANGUAGES["nllb"]
    model = str(model_dirs["nllb"])
    engines = load_engine("hf", model, src_lang=source, tgt_lang=targets, **SETTINGS)
    alone = HFEngine(model, src_lang=source, tgt_lang=targets[0], **SETTINGS)
    rows_per_call: dict[str, list[int]] = {"together": [], "alone": []}
    for name, engine in (("together", engines.shared), ("alone", alone)):
        monkeypatch.setattr(engine.model, "generate", _counted(engine.model, rows_per_call[name]))
    texts = varied_segments(12, seed=9)

    translate_to_targets(texts, engines)
    translate_texts(texts, alone)

    assert rows_per_call["together"] == [rows * len(targets) for rows in rows_per_call["alone"]]


def _counted(model: Any, rows_per_call: list[int]) -> Any:
    generate = model.generate

    def counted(**kwargs: Any) -> Any:
        rows_per_call.append(kwargs["input_ids"].shape[0])
        return generate(**kwargs)

    return counted


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


def nllb_spec(model: str) -> JobSpec:
    """A job of `model` (the tiny NLLB) into its three target languages."""
    source, targets = LANGUAGES["nllb"]
    return JobSpec(
        **{**BASE, "model": model}, output="out.{tgt_lang}.jsonl", src_lang=source, tgt_lang=targets
    )


@pytest.mark.parametrize("engine", ["hf", "ct2"])
def test_health_checks_retry_each_language_as_a_job_into_it_alone_does(
    engine: str, model_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTFLEET_CACHE", str(tmp_path / "cache"))
    source, targets = LANGUAGES["nllb"]
    model = str(model_dirs["nllb"])
    spec = nllb_spec(model)
    settings = {"src_lang": source, **SETTINGS}
    if engine == "ct2":
        settings.update(compute_type="float32", threads=1)
    engines = load_engine(engine, model, tgt_lang=targets, **settings)
    protection, _ = job_checks(spec, engines)
    checks = {t: job_checks(spec.for_target(t), engines.engines[t])[1] for t in targets}
    texts = varied_segments(6, seed=7)

    together = translate_to_targets(texts, engines, protection=protection, checks=checks)

    assert engines.shared is not None
    for target in targets:
        alone = load_engine(engine, model, tgt_lang=target, **settings)
        _, alone_checks = job_checks(spec.for_target(target), alone)
        expected = translate_texts(texts, alone, protection=protection, checks=alone_checks)
        assert together[target].flags == expected.flags
        assert any(together[target].flags), "a random model's output is flagged and retried"
        assert together[target].translations == expected.translations


def test_the_retries_the_checks_ask_for_are_decoded_for_every_target_together(
    model_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    source, targets = LANGUAGES["nllb"]
    model = str(model_dirs["nllb"])
    spec = nllb_spec(model)
    engines = load_engine("hf", model, src_lang=source, tgt_lang=targets, **SETTINGS)
    protection, _ = job_checks(spec, engines)
    checks = {t: job_checks(spec.for_target(t), engines.engines[t])[1] for t in targets}
    targets_per_call: list[int] = []
    generate_for_targets = HFEngine.generate_for_targets

    def recorded(engine: HFEngine, segments: Any, views: Any, wanted: Any = None) -> Any:
        targets_per_call.append(len(views))
        return generate_for_targets(engine, segments, views, wanted)

    monkeypatch.setattr(HFEngine, "generate_for_targets", recorded)

    together = translate_to_targets(
        varied_segments(6, seed=7), engines, protection=protection, checks=checks
    )

    assert all(any(together[target].flags) for target in targets)
    # the first translations, the retries by clause, the retries with a wider beam
    assert targets_per_call == [len(targets)] * 3


@pytest.mark.parametrize("family", ["nllb", "m2m100"])
def test_ct2_decodes_the_batch_repeated_per_target_as_each_target_alone(
    family: str, model_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTFLEET_CACHE", str(tmp_path / "cache"))
    source, targets = LANGUAGES[family]
    model = str(model_dirs[family])
    settings = {"src_lang": source, "compute_type": "float32", "threads": 1, **SETTINGS}
    engines = load_engine("ct2", model, tgt_lang=targets, **settings)
    texts = varied_segments(20, seed=8)

    together = translate_to_targets(texts, engines)

    assert engines.shared is not None
    for target in targets:
        alone = CT2Engine(model, tgt_lang=target, **settings)
        assert together[target].translations == translate_texts(texts, alone).translations


class CountedMemory:
    """A translation memory in a dict that counts its recalls."""

    def __init__(self, held: dict[str, tuple[str, list[str]]] | None = None) -> None:
        self.held = dict(held or {})
        self.recalls = 0

    def recall(self, segments: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
        self.recalls += 1
        return {s: self.held[s] for s in segments if s in self.held}

    def remember(self, entries: Mapping[str, tuple[str, list[str]]]) -> None:
        self.held.update(entries)


def test_each_target_has_the_memory_of_a_job_into_it_alone_asked_once_a_batch(
    model_dirs: dict[str, Path],
) -> None:
    source, targets = LANGUAGES["nllb"]
    model = str(model_dirs["nllb"])
    spec = JobSpec(
        **{**BASE, "model": model}, output="out.{tgt_lang}.jsonl", src_lang=source, tgt_lang=targets
    )
    engines = load_engine("hf", model, src_lang=source, tgt_lang=targets, **SETTINGS)
    texts = varied_segments(12, seed=9)
    plain = translate_to_targets(texts, engines)
    filled = {target: CountedMemory() for target in targets}
    translate_to_targets(texts, engines, memories=filled)
    first = targets[0]
    segments = list(filled[first].held)
    # the first target holds half the segments' translations, the others nothing
    memories = {target: CountedMemory() for target in targets}
    memories[first].held = {s: filled[first].held[s] for s in segments[: len(segments) // 2]}

    again = translate_to_targets(texts, engines, memories=memories)

    for target in targets:
        assert again[target].translations == plain[target].translations
        assert memories[target].recalls == 1
        assert set(memories[target].held) == set(segments)
        alone = HFEngine(model, src_lang=source, tgt_lang=target, **SETTINGS)
        alone_spec = JobSpec(
            **{**BASE, "model": model}, output="out.jsonl", src_lang=source, tgt_lang=target
        )
        assert (
            segment_memory_keys(spec, engines)[target]
            == segment_memory_keys(alone_spec, alone)[target]
        )
    assert again[first].segments_from_memory == len(segments) // 2 > 0
    assert again[targets[1]].segments_from_memory == 0
