"""HFEngine on the tiny models: batching changes nothing, outputs are capped, languages work."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from mtfleet.engines import ENGINES, Engine, check_model, load_engine
from mtfleet.engines.base import split_device
from mtfleet.engines.hf import HFEngine
from mtfleet.errors import ModelError
from mtfleet.random_models import varied_segments
from mtfleet.testing.engines import ReverseEngine

# MarianTokenizer's advice to install sacremoses is noise here
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

# small caps and a small budget: many batches of mixed caps, in little time
FACTOR, OFFSET, BUDGET = 1.0, 4, 256


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def marian(tiny_marian_dir: Path) -> HFEngine:
    return HFEngine(
        str(tiny_marian_dir),
        max_batch_tokens=BUDGET,
        max_length_factor=FACTOR,
        max_length_offset=OFFSET,
        threads=1,
    )


@pytest.fixture(scope="module")
def m2m100_de(tiny_m2m100_dir: Path) -> HFEngine:
    return HFEngine(
        str(tiny_m2m100_dir),
        src_lang="en",
        tgt_lang="de",
        max_batch_tokens=BUDGET,
        max_length_factor=FACTOR,
        max_length_offset=OFFSET,
    )


def expected_cap(source_tokens: int) -> int:
    return math.ceil(FACTOR * source_tokens + OFFSET)


def generate_alone(
    model_dir: Path, segments: list[str], **generate_settings: object
) -> list[list[int]]:
    """Each segment through a freshly loaded model's own generate, one at a time, with its cap."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    if "forced_bos_token_id" in generate_settings:
        tokenizer.src_lang = "en"
    outputs = []
    for segment in segments:
        inputs = tokenizer([segment], return_tensors="pt")
        cap = expected_cap(inputs["input_ids"].shape[1])
        sequence = model.generate(**inputs, max_new_tokens=cap, **generate_settings)[0]
        outputs.append(sequence[1:].tolist())
    return outputs


# --- batching changes nothing


def test_greedy_output_equals_generate_on_each_segment_alone(
    marian: HFEngine, tiny_marian_dir: Path
) -> None:
    segments = varied_segments(48)

    batched = marian.generate_token_ids(segments)

    assert batched == generate_alone(tiny_marian_dir, segments, num_beams=1, do_sample=False)


def test_beam_output_equals_beam_search_on_each_segment_alone(tiny_marian_dir: Path) -> None:
    engine = HFEngine(
        str(tiny_marian_dir),
        beam=3,
        max_batch_tokens=BUDGET,
        max_length_factor=FACTOR,
        max_length_offset=OFFSET,
    )
    segments = varied_segments(12, seed=1)

    batched = engine.generate_token_ids(segments)

    assert batched == generate_alone(tiny_marian_dir, segments, num_beams=3, do_sample=False)


def test_translations_come_back_in_the_order_of_their_segments(marian: HFEngine) -> None:
    segments = varied_segments(20, seed=2)

    together = marian.translate(segments)

    assert together == [marian.translate([segment])[0] for segment in segments]
    assert len(set(together)) == len(set(segments))


def test_batches_are_sorted_by_length_and_padded_within_the_token_budget(
    marian: HFEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes: list[tuple[int, int]] = []
    generate = marian.model.generate

    def recording_generate(**kwargs: object) -> torch.Tensor:
        shapes.append(tuple(kwargs["input_ids"].shape))  # type: ignore[attr-defined]
        return generate(**kwargs)

    monkeypatch.setattr(marian.model, "generate", recording_generate)
    segments = varied_segments(40, seed=3)

    marian.translate(segments)

    assert sum(rows for rows, _ in shapes) == len(segments)
    assert len(shapes) > 1
    assert all(rows * width <= BUDGET for rows, width in shapes)
    widths = [width for _, width in shapes]
    assert widths == sorted(widths, reverse=True)


def test_a_segment_wider_than_the_budget_is_generated_alone(tiny_marian_dir: Path) -> None:
    engine = HFEngine(str(tiny_marian_dir), max_batch_tokens=4, max_length_offset=2)
    segments = ["A long sentence about the harbour and the boats.", "Another rather long one."]

    assert engine.generate_token_ids(segments) == [
        engine.generate_token_ids([segment])[0] for segment in segments
    ]


# --- the length cap


def test_every_output_stops_at_its_own_cap_and_ends_with_eos(marian: HFEngine) -> None:
    segments = varied_segments(40, seed=4)
    caps = [expected_cap(tokens) for tokens in marian.count_tokens(segments)]

    outputs = marian.generate_token_ids(segments)

    assert all(len(ids) <= cap for ids, cap in zip(outputs, caps, strict=True))
    assert all(ids[-1] == marian.tokenizer.eos_token_id for ids in outputs)
    # the random model rarely ends on its own, so most outputs run to their cap
    assert sum(len(ids) == cap for ids, cap in zip(outputs, caps, strict=True)) > len(segments) / 2


def test_output_cap_is_relative_to_the_source_and_bounded_by_the_model_positions(
    marian: HFEngine,
) -> None:
    assert marian.tokens.output_cap(10) == math.ceil(FACTOR * 10 + OFFSET)
    assert marian.tokens.output_cap(100_000) == 511


def test_a_segment_over_the_input_limit_is_refused_not_truncated(marian: HFEngine) -> None:
    too_long = "word " * (marian.max_input_tokens + 1)

    with pytest.raises(ValueError, match="exceeds"):
        marian.translate([too_long])


# --- the Engine protocol


def test_hf_engine_satisfies_the_engine_protocol(marian: HFEngine) -> None:
    assert isinstance(marian, Engine)
    assert marian.name == "hf"


def test_max_input_tokens_is_the_model_positions(marian: HFEngine, m2m100_de: HFEngine) -> None:
    assert marian.max_input_tokens == 512
    assert m2m100_de.max_input_tokens == 1024


def test_count_tokens_counts_what_the_model_is_given(marian: HFEngine) -> None:
    texts = ["The cat sleeps.", "", "Where is the nearest pharmacy?"]

    counts = marian.count_tokens(texts)

    assert counts == [len(marian.tokenizer(text)["input_ids"]) for text in texts]
    assert counts[1] == 1  # just </s>
    assert marian.count_tokens([]) == []


def test_no_segments_translate_to_nothing(marian: HFEngine) -> None:
    assert marian.translate([]) == []


def test_describe_signs_the_weights_settings_and_versions(
    marian: HFEngine, tiny_marian_dir: Path
) -> None:
    signature = marian.describe()

    weights = (tiny_marian_dir / "model.safetensors").read_bytes()
    assert signature["weights_sha256"] == {"model.safetensors": hashlib.sha256(weights).hexdigest()}
    assert signature["model"] == str(tiny_marian_dir)
    assert signature["model_class"] == "MarianMTModel"
    assert signature["settings"]["beam"] == 1
    assert signature["settings"]["max_length_factor"] == FACTOR
    assert signature["settings"]["device"] == "cpu"
    assert signature["settings"]["dtype"] == "float32"
    assert set(signature["versions"]) == {"torch", "transformers"}
    json.dumps(signature)


# --- languages


def test_target_language_token_is_forced_as_the_first_generated_token(
    m2m100_de: HFEngine, tiny_m2m100_dir: Path
) -> None:
    french = HFEngine(str(tiny_m2m100_dir), src_lang="en", tgt_lang="fr")
    de_id = m2m100_de.tokenizer.get_lang_id("de")
    fr_id = m2m100_de.tokenizer.get_lang_id("fr")
    segments = varied_segments(10, seed=5)

    assert {ids[0] for ids in m2m100_de.generate_token_ids(segments)} == {de_id}
    assert {ids[0] for ids in french.generate_token_ids(segments)} == {fr_id}


def test_m2m100_output_equals_generate_alone_with_the_forced_language(
    m2m100_de: HFEngine, tiny_m2m100_dir: Path
) -> None:
    segments = varied_segments(16, seed=6)
    de_id = m2m100_de.tokenizer.get_lang_id("de")

    batched = m2m100_de.generate_token_ids(segments)

    assert batched == generate_alone(tiny_m2m100_dir, segments, forced_bos_token_id=de_id)


def test_m2m100_beam_output_equals_beam_search_alone(tiny_m2m100_dir: Path) -> None:
    # this model forces no EOS at its length limit: only the per-row cap ends each segment's beams
    engine = HFEngine(
        str(tiny_m2m100_dir),
        src_lang="en",
        tgt_lang="de",
        beam=2,
        max_batch_tokens=BUDGET,
        max_length_factor=FACTOR,
        max_length_offset=OFFSET,
    )
    segments = varied_segments(10, seed=8)
    de_id = engine.tokenizer.get_lang_id("de")

    batched = engine.generate_token_ids(segments)

    assert batched == generate_alone(
        tiny_m2m100_dir, segments, forced_bos_token_id=de_id, num_beams=2
    )


def test_source_language_token_starts_every_source(m2m100_de: HFEngine) -> None:
    en_id = m2m100_de.tokenizer.get_lang_id("en")

    assert m2m100_de.tokenizer(["Hello.", "Good night."])["input_ids"][0][0] == en_id
    assert m2m100_de.count_tokens(["Hello."]) == [len(m2m100_de.tokenizer("Hello.")["input_ids"])]


def test_translations_do_not_start_with_the_language_token(m2m100_de: HFEngine) -> None:
    translations = m2m100_de.translate(varied_segments(8, seed=7))

    assert not any(text.startswith("__de__") for text in translations)


def test_an_unknown_language_code_is_named_with_valid_ones(tiny_m2m100_dir: Path) -> None:
    with pytest.raises(
        ModelError,
        match=r"no language code 'de_XYZ' \(--tgt-lang\); the nearest it has are de\b.*100 in all",
    ):
        HFEngine(str(tiny_m2m100_dir), src_lang="en", tgt_lang="de_XYZ")


def test_an_iso_639_3_code_is_the_models_own(tiny_m2m100_dir: Path) -> None:
    engine = HFEngine(str(tiny_m2m100_dir), src_lang="eng", tgt_lang="deu")

    assert (engine.src_lang, engine.tgt_lang) == ("en", "de")


def test_a_language_code_model_needs_both_languages(tiny_m2m100_dir: Path) -> None:
    with pytest.raises(ModelError, match="needs a source and a target language"):
        HFEngine(str(tiny_m2m100_dir), tgt_lang="de")


@pytest.fixture
def multi_target_marian_dir(tiny_marian_dir: Path, tmp_path: Path) -> Path:
    """The tiny Marian model with two of its pieces renamed into OPUS-MT target tokens."""
    model_dir = Path(shutil.copytree(tiny_marian_dir, tmp_path / "multi"))
    vocab = json.loads((model_dir / "vocab.json").read_text())
    ids = sorted(vocab.values())[-2:]
    renamed = {piece: i for piece, i in vocab.items() if i not in ids}
    renamed.update({">>de<<": ids[0], ">>fr<<": ids[1]})
    (model_dir / "vocab.json").write_text(json.dumps(renamed))
    return model_dir


def test_multi_target_marian_puts_the_target_token_before_each_segment(
    multi_target_marian_dir: Path,
) -> None:
    engine = HFEngine(str(multi_target_marian_dir), tgt_lang="fr")
    fr_id = engine.tokenizer.convert_tokens_to_ids(">>fr<<")

    encoded = engine.tokenizer([">>fr<< The cat sleeps."])["input_ids"][0]

    assert encoded[0] == fr_id
    assert engine.count_tokens(["The cat sleeps."]) == [len(encoded)]


def test_a_segment_counted_before_is_taken_without_tokenizing_it_again(
    tiny_marian_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = HFEngine(str(tiny_marian_dir))
    segments = varied_segments(6, seed=4)
    fresh = engine.tokens.encode(segments)
    engine.count_tokens(segments[:4])
    tokenized: list[list[str]] = []
    encode = engine.tokens.encode
    monkeypatch.setattr(
        engine.tokens, "encode", lambda texts: tokenized.append(list(texts)) or encode(texts)
    )

    assert engine.tokens.encode_segments(segments) == fresh
    assert tokenized == [segments[4:]]


def test_each_target_keeps_its_own_counted_ids_when_the_target_tags_every_source(
    multi_target_marian_dir: Path,
) -> None:
    french = HFEngine(str(multi_target_marian_dir), tgt_lang="fr")
    german = french.for_target("de")
    de_id = german.tokenizer.convert_tokens_to_ids(">>de<<")

    french.count_tokens(["The cat sleeps."])

    assert german.tokens.encode_segments(["The cat sleeps."])[0][0] == de_id


def test_multi_target_marian_without_a_target_lists_its_targets(
    multi_target_marian_dir: Path,
) -> None:
    with pytest.raises(ModelError, match=r"multi-target.*de, fr"):
        HFEngine(str(multi_target_marian_dir))


def test_a_marian_pair_refuses_another_target_language(
    tiny_marian_dir: Path, tmp_path: Path
) -> None:
    model_dir = Path(shutil.copytree(tiny_marian_dir, tmp_path / "en-de"))
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(source_lang="en", target_lang="de")
    config_path.write_text(json.dumps(config))

    HFEngine(str(model_dir), src_lang="en", tgt_lang="de")
    with pytest.raises(ModelError, match="translates en to de, so it cannot take 'mr'"):
        HFEngine(str(model_dir), src_lang="en", tgt_lang="mr")
    # the same languages in ISO 639-3 are the pair's own codes
    assert check_model("hf", str(model_dir), src_lang="eng", tgt_lang="deu") == ("en", "de")


# --- models that cannot be loaded


def test_a_missing_model_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"

    with pytest.raises(ModelError, match=f"Model directory {missing} does not exist"):
        HFEngine(str(missing))


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"\0")

    with pytest.raises(ModelError, match="is a file, not a model directory"):
        HFEngine(str(model_file))


def test_a_directory_without_config_holds_no_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"has no config\.json"):
        HFEngine(str(tmp_path))


def test_a_corrupt_config_is_a_broken_model_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")

    with pytest.raises(ModelError, match=f"Model directory {tmp_path} is broken: its config.json"):
        HFEngine(str(tmp_path))


def test_missing_weights_are_a_broken_model_directory(
    tiny_marian_dir: Path, tmp_path: Path
) -> None:
    model_dir = Path(shutil.copytree(tiny_marian_dir, tmp_path / "no-weights"))
    (model_dir / "model.safetensors").unlink()

    with pytest.raises(ModelError, match="is broken: its weights cannot be loaded"):
        HFEngine(str(model_dir))


def test_a_model_without_a_decoder_is_not_a_translation_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))

    with pytest.raises(ModelError, match="is a bert model, not a sequence-to-sequence"):
        HFEngine(str(tmp_path))


def test_an_unreachable_hub_id_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # offline mode fails at once where a missing network would retry for half a minute
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    with pytest.raises(ModelError, match="'nobody/no-such-model' is neither a local directory"):
        HFEngine("nobody/no-such-model")


def test_a_missing_cuda_device_is_refused(tiny_marian_dir: Path) -> None:
    with pytest.raises(ModelError, match="is not on this machine"):
        HFEngine(str(tiny_marian_dir), device=f"cuda:{torch.cuda.device_count()}")


def test_an_int8_compute_type_belongs_to_ct2(tiny_marian_dir: Path) -> None:
    with pytest.raises(ModelError, match="'int8' is not available to the hf engine"):
        HFEngine(str(tiny_marian_dir), compute_type="int8")


# --- load_engine


def test_load_engine_builds_the_hf_engine_with_its_settings(tiny_marian_dir: Path) -> None:
    engine = load_engine("hf", str(tiny_marian_dir), beam=2, max_length_offset=3)

    assert isinstance(engine, HFEngine)
    assert (engine.beam, engine.tokens.max_length_offset) == (2, 3)


def test_load_engine_builds_the_reverse_test_engine() -> None:
    engine = load_engine("reverse", "unused", max_input_tokens=64)

    assert isinstance(engine, ReverseEngine)
    assert engine.max_input_tokens == 64


def test_the_reverse_engine_of_a_job_keeps_none_of_its_segments() -> None:
    # a translator's engine lives for the whole job: kept segments cost 540 MB on 1M rows
    engine = load_engine("reverse", "unused")

    engine.translate(["One.", "Two."])

    assert engine.calls == []
    assert ReverseEngine().record_calls


def test_an_unknown_engine_name_lists_the_engines() -> None:
    with pytest.raises(
        ModelError, match=f"Engine 'nope' does not exist; mtfleet has {ENGINES[0]}, "
    ):
        load_engine("nope", "model")
    assert {"hf", "reverse"} <= set(ENGINES)


# --- check_model: the early check a job makes before it starts


def test_check_model_accepts_a_usable_model_and_languages(tiny_m2m100_dir: Path) -> None:
    check_model("hf", str(tiny_m2m100_dir), src_lang="en", tgt_lang="mr")


def test_check_model_names_what_a_job_could_not_use(tiny_m2m100_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        check_model("hf", str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="no language code 'xx'"):
        check_model("hf", str(tiny_m2m100_dir), src_lang="en", tgt_lang="xx")
    with pytest.raises(ModelError, match="Engine 'nope' does not exist"):
        check_model("nope", str(tiny_m2m100_dir))


def test_check_model_needs_no_model_for_the_reverse_engine() -> None:
    check_model("reverse", "anything")


@pytest.mark.parametrize(
    ("device", "split"),
    [("cpu", ("cpu", [])), ("cuda:2", ("cuda", [2])), ("cuda:0,1", ("cuda", [0, 1]))],
)
def test_a_device_names_one_gpu_or_the_gpus_of_one_node_a_model_spans(
    device: str, split: tuple[str, list[int]]
) -> None:
    assert split_device(device) == split


@pytest.mark.skipif(torch.cuda.device_count() >= 2, reason="the machine has two GPUs")
def test_a_model_split_over_gpus_the_machine_lacks_is_one_sentence(tiny_marian_dir: Path) -> None:
    with pytest.raises(ModelError, match=r"Device 'cuda:\d' is not on this machine"):
        HFEngine(str(tiny_marian_dir), device="cuda:0,1")
    with pytest.raises(ModelError, match=r"not a device name such as cuda:0,1"):
        HFEngine(str(tiny_marian_dir), device="cuda:0,x")
