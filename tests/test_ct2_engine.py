"""CT2Engine on the tiny models: the HF engine's tokens, a cached conversion, languages, int8."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mtfleet.checked import decoded_watching_caps, translate_watching_caps
from mtfleet.engines import Engine, load_engine
from mtfleet.engines import ct2 as ct2_module
from mtfleet.engines.base import Cancelled, cancellable
from mtfleet.engines.ct2 import CT2Engine, cache_root
from mtfleet.engines.hf import HFEngine
from mtfleet.errors import ModelError
from mtfleet.random_models import sample_sentences, varied_segments

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

# small caps and a small budget: many batches of mixed caps, in little time
SETTINGS = {"max_batch_tokens": 256, "max_length_factor": 1.0, "max_length_offset": 4, "threads": 1}
GERMAN = {"src_lang": "en", "tgt_lang": "de"}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module", autouse=True)
def ct2_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Conversions go to a cache of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MTFLEET_CACHE", str(tmp_path_factory.mktemp("mtfleet-cache")))
        yield cache_root()


@pytest.fixture(scope="module")
def marian(tiny_marian_dir: Path) -> CT2Engine:
    return CT2Engine(str(tiny_marian_dir), compute_type="float32", **SETTINGS)


@pytest.fixture(scope="module")
def m2m100_de(tiny_m2m100_dir: Path) -> CT2Engine:
    return CT2Engine(str(tiny_m2m100_dir), compute_type="float32", **GERMAN, **SETTINGS)


def converting_fails(*args: object) -> None:
    raise AssertionError("the model was converted again")


# --- the same tokens as the HF engine


def test_float32_greedy_ids_equal_the_hf_engines_on_the_tiny_marian(
    marian: CT2Engine, tiny_marian_dir: Path
) -> None:
    segments = varied_segments(120)
    hf = HFEngine(str(tiny_marian_dir), **SETTINGS)

    ids = marian.generate_token_ids(segments)

    assert ids == hf.generate_token_ids(segments)
    assert marian.translate(segments) == hf.translate(segments)


def test_float32_greedy_ids_equal_the_hf_engines_on_the_tiny_m2m100(
    m2m100_de: CT2Engine, tiny_m2m100_dir: Path
) -> None:
    segments = varied_segments(60, seed=1)
    hf = HFEngine(str(tiny_m2m100_dir), **GERMAN, **SETTINGS)

    assert m2m100_de.generate_token_ids(segments) == hf.generate_token_ids(segments)


def test_many_segments_of_one_length_share_a_call_and_keep_the_hf_engines_ids(
    marian: CT2Engine, tiny_marian_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_length: dict[int, list[str]] = {}
    for sentence in sample_sentences():
        by_length.setdefault(marian.count_tokens([sentence])[0], []).append(sentence)
    length, same_length = max(by_length.items(), key=lambda item: len(item[1]))
    others = [text for text in varied_segments(12, seed=8) if text not in by_length[length]]
    segments = [*same_length[:20], *others]
    calls: list[dict[str, object]] = []
    translate_batch = marian.translator.translate_batch

    def recording(source: list[list[str]], **options: object) -> list[object]:
        calls.append({"segments": len(source), **options})
        return translate_batch(source, **options)

    monkeypatch.setattr(marian, "translator", SimpleNamespace(translate_batch=recording))

    ids = marian.generate_token_ids(segments)

    assert ids == HFEngine(str(tiny_marian_dir), **SETTINGS).generate_token_ids(segments)
    one_limit = [call for call in calls if call["callback"] is None]
    assert [call["segments"] for call in one_limit] == [20]
    assert all(call["batch_type"] == "tokens" for call in calls)
    assert sum(call["segments"] for call in calls) == len(segments)


def _recorded_calls(engine: CT2Engine, monkeypatch: pytest.MonkeyPatch, events: list[str]) -> None:
    """Each call handed to CTranslate2 noted in `events` as it is made; calls of 4 segments."""
    monkeypatch.setattr(ct2_module, "CPU_CALL_SEGMENTS", 4)
    translate_batch = engine.translator.translate_batch

    def recording(source: list[list[str]], **options: object) -> list[object]:
        events.append("call")
        return translate_batch(source, **options)

    monkeypatch.setattr(engine, "translator", SimpleNamespace(translate_batch=recording))


def test_a_call_is_decoded_while_the_next_runs_and_the_text_is_that_of_all_ids_decoded(
    marian: CT2Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    segments = varied_segments(40, seed=5)
    whole = marian.tokens.decode(marian.generate_token_ids(segments))
    events: list[str] = []
    _recorded_calls(marian, monkeypatch, events)
    decode = marian.tokens.decode
    monkeypatch.setattr(
        marian.tokens, "decode", lambda outputs: events.append("decode") or decode(outputs)
    )

    assert marian.translate(segments) == whole
    calls = events.count("call")
    assert calls >= 5
    # every call but the last is handed over before the one before it is decoded
    assert events[:3] == ["call", "call", "decode"]
    assert events[-2:] == ["decode", "decode"]
    assert events.count("decode") == calls


def test_its_translations_and_caps_are_those_of_its_ids_decoded_and_measured(
    marian: CT2Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ct2_module, "CPU_CALL_SEGMENTS", 4)
    segments = [*varied_segments(30, seed=3), "Yes."]
    translations, capped = decoded_watching_caps(
        marian.tokens, segments, marian.generate_token_ids(segments)
    )

    assert marian.translate_watching_caps(segments) == (translations, capped)
    assert translate_watching_caps(marian, segments) == (translations, capped)
    assert any(capped)


def test_a_lease_gone_stops_the_calls_with_one_left_running_on(
    marian: CT2Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    segments = varied_segments(40, seed=5)
    events: list[str] = []
    _recorded_calls(marian, monkeypatch, events)
    cancel = threading.Event()
    decode = marian.tokens.decode

    def decode_then_lose_the_lease(outputs: list[list[int]]) -> list[str]:
        cancel.set()
        return decode(outputs)

    monkeypatch.setattr(marian.tokens, "decode", decode_then_lose_the_lease)

    with pytest.raises(Cancelled), cancellable(cancel):
        marian.translate(segments)

    # the first call decoded, the second taken and found cancelled, the third still running
    assert events.count("call") == 3


def test_target_language_token_reaches_the_decoder_first(
    m2m100_de: CT2Engine, tiny_m2m100_dir: Path
) -> None:
    french = CT2Engine(
        str(tiny_m2m100_dir), compute_type="float32", src_lang="en", tgt_lang="fr", **SETTINGS
    )
    tokenizer = m2m100_de.tokenizer
    segments = varied_segments(10, seed=2)

    german_ids = m2m100_de.generate_token_ids(segments)

    assert {ids[0] for ids in german_ids} == {tokenizer.get_lang_id("de")}
    assert {ids[0] for ids in french.generate_token_ids(segments)} == {tokenizer.get_lang_id("fr")}
    assert not any(text.startswith("__de__") for text in m2m100_de.translate(segments))


def test_every_output_stops_at_its_own_cap_and_ends_with_the_forced_eos(
    marian: CT2Engine,
) -> None:
    segments = varied_segments(30, seed=3)
    caps = [marian.tokens.output_cap(tokens) for tokens in marian.count_tokens(segments)]

    outputs = marian.generate_token_ids(segments)

    assert all(len(ids) <= cap for ids, cap in zip(outputs, caps, strict=True))
    assert all(ids[-1] == marian.tokenizer.eos_token_id for ids in outputs)


def test_beam_output_of_a_segment_does_not_depend_on_its_batch(tiny_marian_dir: Path) -> None:
    engine = CT2Engine(str(tiny_marian_dir), beam=3, compute_type="float32", **SETTINGS)
    segments = varied_segments(16, seed=4)

    batched = engine.generate_token_ids(segments)

    assert batched == [engine.generate_token_ids([segment])[0] for segment in segments]


def test_a_segment_over_the_input_limit_is_refused_not_truncated(marian: CT2Engine) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        marian.translate(["word " * (marian.max_input_tokens + 1)])


def test_no_segments_translate_to_nothing(marian: CT2Engine) -> None:
    assert marian.translate([]) == []


# --- the conversion and its cache


def test_a_second_load_takes_the_cached_conversion(
    marian: CT2Engine, tiny_marian_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ct2_module, "_convert", converting_fails)

    again = CT2Engine(str(tiny_marian_dir), compute_type="float32", **SETTINGS)

    assert again.converted_dir == marian.converted_dir
    assert again.translate(["The cat sleeps."]) == marian.translate(["The cat sleeps."])


def test_the_conversion_is_cached_outside_the_model_directory(
    marian: CT2Engine, tiny_marian_dir: Path, ct2_cache: Path
) -> None:
    assert marian.converted_dir.parent == ct2_cache
    assert marian.converted_dir.name.endswith("-float32")
    assert not list(tiny_marian_dir.glob("*.bin"))
    assert marian.describe()["converted_dir"] == str(marian.converted_dir)


def test_a_changed_model_file_or_compute_type_is_converted_anew(
    marian: CT2Engine, tiny_marian_dir: Path, tmp_path: Path
) -> None:
    changed = Path(shutil.copytree(tiny_marian_dir, tmp_path / "changed"))
    generation = json.loads((changed / "generation_config.json").read_text())
    generation["repetition_penalty"] = 1.2
    (changed / "generation_config.json").write_text(json.dumps(generation))

    other_file = CT2Engine(str(changed), compute_type="float32", **SETTINGS)
    other_type = CT2Engine(str(tiny_marian_dir), compute_type="int8", **SETTINGS)

    dirs = {marian.converted_dir, other_file.converted_dir, other_type.converted_dir}
    assert len(dirs) == 3


def test_a_conversion_finished_first_elsewhere_is_taken_and_the_scratch_removed(
    tiny_marian_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTFLEET_CACHE", str(tmp_path / "cache"))
    convert = ct2_module._convert

    def racing_convert(model_dir: Path, out_dir: Path, compute_type: str, *flags: bool) -> None:
        # another translator renames the same conversion into place while this one works
        convert(model_dir, out_dir, compute_type, *flags)
        winner = out_dir.parent / out_dir.name.split(".")[1]
        shutil.copytree(out_dir, winner)
        (winner / "winner").touch()

    monkeypatch.setattr(ct2_module, "_convert", racing_convert)

    engine = CT2Engine(str(tiny_marian_dir), compute_type="float32", **SETTINGS)

    assert (engine.converted_dir / "winner").exists()
    assert os.listdir(cache_root()) == [engine.converted_dir.name]


def test_a_model_that_cannot_be_converted_is_named(tiny_marian_dir: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(tiny_marian_dir, tmp_path / "broken"))
    (broken / "model.safetensors").write_bytes(b"not weights")

    with pytest.raises(ModelError, match=f"Model {broken} cannot be converted to CTranslate2"):
        CT2Engine(str(broken), **SETTINGS)


def test_a_marian_model_whose_pad_is_not_last_keeps_its_whole_vocabulary(
    tiny_marian_dir: Path,
) -> None:
    # mtfleet's Marian models put <pad> at id 2; CTranslate2's converter drops the last token,
    # where OPUS-MT models keep <pad>, so these are converted with nothing dropped.
    config = json.loads((tiny_marian_dir / "config.json").read_text())
    assert config["pad_token_id"] != config["vocab_size"] - 1
    engine = CT2Engine(str(tiny_marian_dir), **SETTINGS)
    vocabulary_files = [
        engine.converted_dir / name for name in ("shared_vocabulary.json", "target_vocabulary.json")
    ]
    vocabulary = json.loads(next(path for path in vocabulary_files if path.exists()).read_text())
    assert len(vocabulary) == config["vocab_size"]


def test_an_unwritable_cache_is_named(
    tiny_marian_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MTFLEET_CACHE", str(blocker))

    with pytest.raises(ModelError, match=f"cache {blocker}/ct2 is not writable.*MTFLEET_CACHE"):
        CT2Engine(str(tiny_marian_dir), compute_type="float32", **SETTINGS)


def test_a_missing_model_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"

    with pytest.raises(ModelError, match=f"Model directory {missing} does not exist"):
        CT2Engine(str(missing))


# --- compute types and devices


def test_int8_translates_every_segment(tiny_marian_dir: Path) -> None:
    engine = CT2Engine(str(tiny_marian_dir), compute_type="int8", **SETTINGS)
    segments = varied_segments(12, seed=5)

    translations = engine.translate(segments)

    assert len(translations) == len(segments)
    assert all(isinstance(text, str) for text in translations)
    assert engine.describe()["settings"]["compute_type"] == "int8"


def test_auto_compute_type_is_int8_on_the_cpu(tiny_marian_dir: Path) -> None:
    engine = CT2Engine(str(tiny_marian_dir), device="cpu", **SETTINGS)

    assert engine.compute_type == "int8"


def test_a_compute_type_the_device_lacks_is_refused(tiny_marian_dir: Path) -> None:
    with pytest.raises(ModelError, match="float16 is not supported on this machine's cpu"):
        CT2Engine(str(tiny_marian_dir), compute_type="float16", device="cpu")


def test_an_unknown_compute_type_lists_the_known_ones(tiny_marian_dir: Path) -> None:
    with pytest.raises(
        ModelError, match="'int4' is not available to the ct2 engine; it takes auto"
    ):
        CT2Engine(str(tiny_marian_dir), compute_type="int4")


def test_a_missing_cuda_device_is_refused(tiny_marian_dir: Path) -> None:
    with pytest.raises(ModelError, match="is not on this machine"):
        CT2Engine(str(tiny_marian_dir), device=f"cuda:{torch.cuda.device_count()}")


# --- the Engine protocol


def test_load_engine_builds_the_ct2_engine_as_an_engine(tiny_marian_dir: Path) -> None:
    engine = load_engine(
        "ct2", str(tiny_marian_dir), beam=2, compute_type="float32", device="cpu", threads=1
    )

    assert isinstance(engine, CT2Engine)
    assert isinstance(engine, Engine)
    assert (engine.name, engine.beam) == ("ct2", 2)


def test_describe_signs_the_model_settings_and_versions(
    marian: CT2Engine, tiny_marian_dir: Path
) -> None:
    signature = marian.describe()

    assert set(signature["weights_sha256"]) == {"model.safetensors"}
    assert signature["model"] == str(tiny_marian_dir)
    assert signature["model_class"] == "MarianMTModel"
    assert signature["settings"]["device"] == "cpu"
    assert signature["settings"]["compute_type"] == "float32"
    assert signature["decoding"]["repetition_penalty"] == 1.5
    assert set(signature["versions"]) == {"ctranslate2", "transformers"}
    json.dumps(signature)


DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "multi30k-en-de"


@pytest.mark.skipif(not (DEMO_MODEL / "config.json").is_file(), reason="no demo model")
def test_on_the_trained_demo_model_float32_ct2_generates_what_the_hf_engine_does() -> None:
    # Trained with tied embeddings, its <pad> row (the decoder's start) is not zero: starting from
    # zeros instead, as the stock Marian conversion does, changed most translations.
    captions = [
        "A man in an orange hat starring at something.",
        "People are fixing the roof of a house.",
        "A little girl climbing into a wooden playhouse.",
        "Two dogs play in the snow near a red fence.",
        "A woman with a large purse is walking by a gate.",
    ]
    hf = HFEngine(str(DEMO_MODEL), device="cpu", threads=1)
    ct2 = CT2Engine(str(DEMO_MODEL), device="cpu", threads=1, compute_type="float32")

    assert ct2.generate_token_ids(captions) == hf.generate_token_ids(captions)
