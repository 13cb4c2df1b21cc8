"""The training tool, and the demo model it trained."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from typer.testing import CliRunner

from mtfleet.cli.main import app
from mtfleet.engines import Engine, load_engine
from mtfleet.errors import DatasetError, JobError
from mtfleet.training import (
    CHECKPOINT_FILE,
    TrainingConfig,
    read_lines,
    score,
    train_marian,
    translate_sentences,
)

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "multi30k"
DEMO_MODEL = ROOT / "models" / "multi30k-en-de"
# Measured 34.30 (greedy, batched) on these 200 sentences when the demo model was trained; the
# floor leaves room for other CPUs' arithmetic while still catching a broken or swapped model.
DEMO_BLEU_FLOOR = 31.0

needs_corpus = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"the Multi30k corpus is not at {CORPUS}"
)
needs_demo_model = pytest.mark.skipif(
    not (DEMO_MODEL / "model.safetensors").is_file(), reason=f"no demo model at {DEMO_MODEL}"
)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


def write_slice(source: Path, target: Path, lines: int) -> Path:
    """The first `lines` lines of a gzip corpus file, written gzip-compressed to target."""
    target.write_bytes(gzip.compress("\n".join(read_lines(source)[:lines]).encode() + b"\n"))
    return target


def tiny_config(tmp_path: Path, **overrides: object) -> TrainingConfig:
    """A 200-pair slice and a model small enough to train a few steps in about a second."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings: dict[str, object] = {
        "source_path": write_slice(CORPUS / "train.en.gz", tmp_path / "train.en.gz", 200),
        "target_path": write_slice(CORPUS / "train.de.gz", tmp_path / "train.de.gz", 200),
        "val_source_path": write_slice(CORPUS / "val.en.gz", tmp_path / "val.en.gz", 20),
        "val_target_path": write_slice(CORPUS / "val.de.gz", tmp_path / "val.de.gz", 20),
        "output_dir": tmp_path / "model",
        "checkpoint_dir": tmp_path / "checkpoints",
        "vocab_size": 300,
        "d_model": 32,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "attention_heads": 2,
        "ffn_dim": 64,
        "batch_tokens": 1024,
        "max_steps": 4,
        "eval_every": 2,
        "save_every": 2,
        "val_bleu_sentences": 5,
        "threads": 1,
    }
    settings.update(overrides)
    return TrainingConfig(**settings)  # type: ignore[arg-type]


@needs_corpus
def test_a_few_steps_on_a_slice_write_a_model_the_auto_classes_load(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    result = train_marian(config, command="mtfleet train (test)")

    assert result.steps == 4
    for name in (
        "config.json",
        "model.safetensors",
        "source.spm",
        "target.spm",
        "vocab.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "README.md",
    ):
        assert (config.output_dir / name).is_file(), name
    tokenizer = AutoTokenizer.from_pretrained(str(config.output_dir))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(config.output_dir))
    assert model.dtype == torch.float32
    assert len(translate_sentences(model, tokenizer, ["A dog runs."])) == 1
    card = (config.output_dir / "README.md").read_text()
    assert "mtfleet train (test)" in card
    assert "steps: 4" in card


@needs_corpus
def test_rerunning_the_same_training_resumes_where_the_checkpoint_left_off(
    tmp_path: Path,
) -> None:
    interrupted = tiny_config(tmp_path / "interrupted", max_steps=2)
    train_marian(interrupted)
    resumed = train_marian(tiny_config(tmp_path / "interrupted", max_steps=4))
    straight = train_marian(tiny_config(tmp_path / "straight", max_steps=4))

    assert resumed.steps == straight.steps == 4
    resumed_weights = torch.load(interrupted.checkpoint_dir / CHECKPOINT_FILE)["model"]
    straight_weights = torch.load(tmp_path / "straight" / "checkpoints" / CHECKPOINT_FILE)["model"]
    assert all(torch.equal(resumed_weights[k], straight_weights[k]) for k in straight_weights)


@needs_corpus
def test_resuming_a_checkpoint_with_other_model_settings_is_refused(tmp_path: Path) -> None:
    train_marian(tiny_config(tmp_path, max_steps=2))

    with pytest.raises(JobError, match=r"checkpoint .*last\.pt was made with other model settings"):
        train_marian(tiny_config(tmp_path, max_steps=2, d_model=48))


def test_corpus_files_of_different_lengths_are_refused_naming_both(tmp_path: Path) -> None:
    source = tmp_path / "a.en"
    target = tmp_path / "a.de"
    source.write_text("one\ntwo\n")
    target.write_text("eins\n")
    config = TrainingConfig(source, target, source, source, tmp_path / "m", tmp_path / "c")

    with pytest.raises(DatasetError, match=r"a\.en \(2 lines\) and .*a\.de \(1 lines\)"):
        train_marian(config)


@pytest.fixture(scope="module")
def demo_engine() -> Engine:
    """The committed demo model, loaded as a translator loads it: through the HF engine."""
    return load_engine("hf", str(DEMO_MODEL), device="cpu", threads=1)


@needs_demo_model
def test_the_demo_model_translates_a_dog_into_a_hund(demo_engine: Engine) -> None:
    (translation,) = demo_engine.translate(["A dog is running in the park."])

    assert "Hund" in translation


@needs_demo_model
@needs_corpus
def test_the_demo_model_keeps_its_bleu_on_the_first_200_test_2016_sentences(
    demo_engine: Engine,
) -> None:
    sources = read_lines(CORPUS / "test_2016_flickr.en.gz")[:200]
    references = read_lines(CORPUS / "test_2016_flickr.de.gz")[:200]

    bleu, _ = score(demo_engine.translate(sources), references)

    assert bleu > DEMO_BLEU_FLOOR


@needs_corpus
def test_mtfleet_train_on_the_command_line_writes_a_model_the_hf_engine_loads(
    tmp_path: Path,
) -> None:
    config = tiny_config(tmp_path)
    result = CliRunner().invoke(
        app,
        [
            "train", str(config.source_path), str(config.target_path),
            "--val-source", str(config.val_source_path), "--val-target", str(config.val_target_path),
            "--output", str(tmp_path / "cli-model"), "--checkpoint-dir", str(tmp_path / "cli-ckpt"),
            "--vocab-size", "300", "--d-model", "32", "--encoder-layers", "1", "--decoder-layers", "1",
            "--attention-heads", "2", "--ffn-dim", "64", "--batch-tokens", "1024", "--max-steps", "2",
            "--eval-every", "2", "--save-every", "2", "--val-bleu-sentences", "5", "--threads", "1",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    engine = load_engine("hf", str(tmp_path / "cli-model"), device="cpu", threads=1)
    assert len(engine.translate(["A dog runs."])) == 1
    assert "mtfleet train" in (tmp_path / "cli-model" / "README.md").read_text()
