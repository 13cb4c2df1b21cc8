"""The tiny model builder: real Hugging Face layout, loadable by the Auto classes, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from mtfleet.random_models import (
    M2M100_LANGUAGES,
    build_tiny_marian,
    main,
    marian_vocab,
    sample_sentences,
    train_sentencepiece,
    varied_segments,
)

# MarianTokenizer's advice to install sacremoses is noise here
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

MARIAN_FILES = {
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "source.spm",
    "target.spm",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
}


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def test_sample_corpus_ships_with_the_package_and_is_varied() -> None:
    sentences = sample_sentences()
    assert len(sentences) >= 300
    assert len(set(sentences)) == len(sentences)
    assert any(sentence.endswith("?") for sentence in sentences)
    assert any(any(ch.isdigit() for ch in sentence) for sentence in sentences)


def test_varied_segments_are_reproducible_and_of_every_length() -> None:
    segments = varied_segments(30, seed=1)

    assert len(segments) == 30
    assert segments == varied_segments(30, seed=1) != varied_segments(30, seed=2)
    lengths = sorted(len(segment) for segment in segments)
    assert lengths[0] <= 3 and lengths[-1] > 200


def test_tiny_marian_is_saved_in_the_hugging_face_layout(tiny_marian_dir: Path) -> None:
    assert {path.name for path in tiny_marian_dir.iterdir()} >= MARIAN_FILES


def test_tiny_marian_loads_through_the_auto_classes_with_matching_ids(
    tiny_marian_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_marian_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_marian_dir)

    assert type(tokenizer).__name__ == "MarianTokenizer"
    assert type(model).__name__ == "MarianMTModel"
    assert len(tokenizer) == model.config.vocab_size
    assert tokenizer.eos_token_id == model.config.eos_token_id == 0
    assert tokenizer.pad_token_id == model.config.decoder_start_token_id
    assert tokenizer("The cat sleeps.")["input_ids"][-1] == tokenizer.eos_token_id


def test_tiny_marian_never_generates_padding_and_forces_eos_at_the_length_limit(
    tiny_marian_dir: Path,
) -> None:
    generation = json.loads((tiny_marian_dir / "generation_config.json").read_text())

    assert generation["bad_words_ids"] == [[generation["pad_token_id"]]]
    assert generation["forced_eos_token_id"] == generation["eos_token_id"]


def test_random_output_depends_on_the_source_and_is_not_one_token_repeated(
    tiny_marian_dir: Path,
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_marian_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_marian_dir)
    sources = sample_sentences()[:24]

    batch = tokenizer(sources, return_tensors="pt", padding=True)
    outputs = model.generate(**batch, max_new_tokens=20)[:, 1:].tolist()

    assert len({tuple(output) for output in outputs}) >= 20
    assert all(len(set(output)) >= 10 for output in outputs)


def test_tiny_m2m100_puts_language_tokens_after_its_vocabulary(tiny_m2m100_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_m2m100_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_m2m100_dir)
    vocab = json.loads((tiny_m2m100_dir / "vocab.json").read_text())

    assert type(tokenizer).__name__ == "M2M100Tokenizer"
    assert type(model).__name__ == "M2M100ForConditionalGeneration"
    assert (tiny_m2m100_dir / "sentencepiece.bpe.model").is_file()
    assert "__de__" not in vocab
    assert tokenizer.get_lang_id("de") == len(vocab) + M2M100_LANGUAGES.index("de")
    assert tokenizer.convert_ids_to_tokens(tokenizer.get_lang_id("mr")) == "__mr__"
    assert model.config.vocab_size > tokenizer.get_lang_id(M2M100_LANGUAGES[-1])
    assert "__de__" in tokenizer.all_special_tokens


def test_tiny_m2m100_source_starts_with_its_language_token(tiny_m2m100_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_m2m100_dir)
    tokenizer.src_lang = "fr"

    ids = tokenizer("Bonjour.")["input_ids"]

    assert ids[0] == tokenizer.get_lang_id("fr")
    assert ids[-1] == tokenizer.eos_token_id


def test_the_same_arguments_build_the_same_files(tmp_path: Path) -> None:
    first = build_tiny_marian(tmp_path / "a", d_model=16, layers=1, heads=2, ffn=32, seed=3)
    second = build_tiny_marian(tmp_path / "b", d_model=16, layers=1, heads=2, ffn=32, seed=3)
    other_seed = build_tiny_marian(tmp_path / "c", d_model=16, layers=1, heads=2, ffn=32, seed=4)

    for name in ("model.safetensors", "vocab.json", "source.spm"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "model.safetensors").read_bytes() != (
        other_seed / "model.safetensors"
    ).read_bytes()


def test_a_given_corpus_trains_the_vocabulary(tmp_path: Path) -> None:
    corpus = ["Die Straße ist ruhig.", "Der Fuß tut weh."] * 20

    model_dir = build_tiny_marian(tmp_path, d_model=16, layers=1, heads=2, ffn=32, corpus=corpus)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert "ß" not in "".join(sample_sentences())
    assert tokenizer.unk_token not in tokenizer.tokenize("Straße")


def test_an_empty_corpus_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no text"):
        build_tiny_marian(tmp_path, corpus=["", "  "])


def test_sentencepiece_ids_are_the_marian_vocabulary_ids(tmp_path: Path) -> None:
    spm_path = train_sentencepiece(sample_sentences(), tmp_path / "joint", vocab_size=500)

    vocab = marian_vocab(spm_path)

    assert spm_path == tmp_path / "joint.model"
    assert (vocab["</s>"], vocab["<unk>"], vocab["<pad>"]) == (0, 1, 2)
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert 100 < len(vocab) <= 500


def test_cli_builds_the_architecture_and_size_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([str(tmp_path), "--arch", "m2m100", "--d-model", "32", "--layers", "1", "--seed", "2"])

    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["model_type"], config["d_model"], config["encoder_layers"]) == ("m2m_100", 32, 1)
    assert "nonsense" in capsys.readouterr().out


def test_cli_refuses_a_width_that_heads_cannot_split(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--d-model", "30", "--heads", "4"])
    assert not (tmp_path / "config.json").exists()
