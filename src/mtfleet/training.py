"""Train a small Marian translation model from scratch on a parallel corpus.

The corpus is two aligned text files (one sentence a line, gzip allowed). Training first builds a
joint SentencePiece vocabulary, then trains a MarianMTModel with token-based batches, label
smoothing and an inverse-square-root schedule, checkpointing model, optimizer, scheduler and step so
that rerunning the same call resumes. The checkpoint with the best validation BLEU is saved in the
Hugging Face Marian layout with a model card beside it.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import random
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sentencepiece as spm
import torch
import torch.nn.functional as F
import transformers
from tqdm import tqdm
from transformers import MarianMTModel, MarianTokenizer

from mtfleet.errors import DatasetError, JobError, OutputError
from mtfleet.models import (
    marian_config,
    marian_vocab,
    save_marian,
    train_sentencepiece,
)

# The ids train_sentencepiece gives Marian's </s> and <pad>; <pad> also starts decoding.
EOS_ID, PAD_ID = 0, 2
CHECKPOINT_FILE = "last.pt"
BEST_FILE = "best.pt"
SORT_POOL = 4096


@dataclass
class TrainingConfig:
    """Everything that decides what a training run produces."""

    source_path: Path
    target_path: Path
    val_source_path: Path
    val_target_path: Path
    output_dir: Path
    checkpoint_dir: Path
    source_lang: str = "en"
    target_lang: str = "de"
    vocab_size: int = 8000
    d_model: int = 256
    encoder_layers: int = 3
    decoder_layers: int = 3
    attention_heads: int = 4
    ffn_dim: int = 1024
    dropout: float = 0.1
    label_smoothing: float = 0.1
    learning_rate: float = 1e-3
    warmup_steps: int = 800
    weight_decay: float = 0.0
    batch_tokens: int = 4096
    max_length: int = 100
    max_steps: int = 100_000
    max_minutes: float | None = None
    eval_every: int = 500
    save_every: int = 250
    patience: int = 6
    val_bleu_sentences: int = 300
    beam: int = 1
    seed: int = 1234
    threads: int | None = None
    limit: int | None = None
    fp16: bool = True
    fp16_tolerance: float = 0.3


@dataclass
class TrainingResult:
    """What a finished run reports and writes into the model card."""

    output_dir: Path
    steps: int
    epochs: float
    wall_seconds: float
    best_step: int
    best_val_bleu: float
    best_val_chrf: float
    best_val_loss: float
    saved_dtype: str
    size_bytes: int
    history: list[dict[str, float]] = field(default_factory=list)


def read_lines(path: Path) -> list[str]:
    """Read a text file (gzip when the name ends in .gz), one sentence a line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Corpus file {path} does not exist.")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return [line.rstrip("\r\n") for line in handle]
    except UnicodeDecodeError as error:
        raise DatasetError(f"Corpus file {path} is not valid UTF-8: {error.reason}.") from error
    except (OSError, EOFError) as error:
        raise DatasetError(f"Corpus file {path} cannot be read: {error}.") from error


def read_parallel(
    source_path: Path, target_path: Path, limit: int | None = None
) -> list[tuple[str, str]]:
    """Read two aligned files into sentence pairs, failing when their line counts differ."""
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise DatasetError(
            f"Corpus files {source_path} ({len(sources)} lines) and {target_path} "
            f"({len(targets)} lines) are not aligned: their line counts differ."
        )
    pairs = list(zip(sources, targets, strict=True))
    return pairs[:limit] if limit is not None else pairs


def marian_tokenizer(
    spm_path: Path, vocab: dict[str, int], directory: Path, source_lang: str, target_lang: str
) -> MarianTokenizer:
    """The MarianTokenizer of a joint vocabulary, for scoring before the model is saved."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab_path = directory / "vocab.json"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    with warnings.catch_warnings():
        # it recommends sacremoses for a punctuation normalizer that tokenizing never calls
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        return MarianTokenizer(
            source_spm=str(spm_path),
            target_spm=str(spm_path),
            vocab=str(vocab_path),
            source_lang=source_lang,
            target_lang=target_lang,
        )


def build_marian(config: TrainingConfig, vocab: dict[str, int]) -> MarianMTModel:
    """A Marian model with shared, tied embeddings, decoding as the saved model will."""
    model_config = marian_config(
        vocab,
        d_model=config.d_model,
        layers=config.encoder_layers,
        heads=config.attention_heads,
        ffn=config.ffn_dim,
    )
    model_config.update(
        {
            "decoder_layers": config.decoder_layers,
            "dropout": config.dropout,
            "activation_function": "swish",
            "share_encoder_decoder_embeddings": True,
            "tie_word_embeddings": True,
        }
    )
    model = MarianMTModel(model_config)
    # save_marian writes the same two settings: never emit <pad>, end a cut-off output with </s>
    model.generation_config.bad_words_ids = [[PAD_ID]]
    model.generation_config.forced_eos_token_id = EOS_ID
    return model


def encode_pairs(
    pairs: Sequence[tuple[str, str]], processor: spm.SentencePieceProcessor, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """Token ids ending in </s>, as MarianTokenizer produces them; over-long pairs dropped."""
    sources = processor.encode([source for source, _ in pairs])
    targets = processor.encode([target for _, target in pairs])
    encoded = []
    for source_ids, target_ids in zip(sources, targets, strict=True):
        if 0 < len(source_ids) < max_length and 0 < len(target_ids) < max_length:
            encoded.append(([*source_ids, EOS_ID], [*target_ids, EOS_ID]))
    return encoded


def make_batches(
    encoded: Sequence[tuple[list[int], list[int]]], batch_tokens: int, seed: int
) -> list[list[int]]:
    """Batches of similar lengths, at most batch_tokens padded tokens each, in a seeded order."""
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    # Sorting within pools of shuffled pairs keeps padding low while batches still mix the corpus.
    for start in range(0, len(order), SORT_POOL):
        pool = sorted(order[start : start + SORT_POOL], key=lambda i: len(encoded[i][1]))
        batch: list[int] = []
        longest = 0
        for index in pool:
            length = max(len(encoded[index][0]), len(encoded[index][1]))
            if batch and max(longest, length) * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(index)
            longest = max(longest, length)
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(
    encoded: Sequence[tuple[list[int], list[int]]], batch: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Padded encoder inputs, shifted decoder inputs and labels (-100 where padded)."""
    source_width = max(len(encoded[i][0]) for i in batch)
    target_width = max(len(encoded[i][1]) for i in batch)
    input_ids = torch.full((len(batch), source_width), PAD_ID, dtype=torch.long)
    decoder_input_ids = torch.full((len(batch), target_width), PAD_ID, dtype=torch.long)
    labels = torch.full((len(batch), target_width), -100, dtype=torch.long)
    for row, index in enumerate(batch):
        source_ids, target_ids = encoded[index]
        input_ids[row, : len(source_ids)] = torch.tensor(source_ids)
        labels[row, : len(target_ids)] = torch.tensor(target_ids)
        decoder_input_ids[row, 1 : len(target_ids)] = torch.tensor(target_ids[:-1])
    return {
        "input_ids": input_ids,
        "attention_mask": (input_ids != PAD_ID).long(),
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


def batch_loss(
    model: MarianMTModel, tensors: dict[str, torch.Tensor], label_smoothing: float
) -> tuple[torch.Tensor, int]:
    """Mean label-smoothed cross entropy over target tokens, and how many tokens it covers."""
    logits = model(
        input_ids=tensors["input_ids"],
        attention_mask=tensors["attention_mask"],
        decoder_input_ids=tensors["decoder_input_ids"],
    ).logits
    labels = tensors["labels"]
    loss = F.cross_entropy(
        logits.view(-1, logits.size(-1)),
        labels.view(-1),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )
    return loss, int((labels != -100).sum())


def inverse_sqrt_schedule(warmup_steps: int) -> Callable[[int], float]:
    """Linear warmup to the peak learning rate, then decay with 1/sqrt(step)."""

    def factor(step: int) -> float:
        step = max(step, 1)
        return min(step / warmup_steps, math.sqrt(warmup_steps / step))

    return factor


def translate_sentences(
    model: MarianMTModel,
    tokenizer: MarianTokenizer,
    sentences: Sequence[str],
    *,
    beam: int = 1,
    batch_size: int = 64,
    max_length_factor: float = 2.0,
    max_length_offset: int = 10,
) -> list[str]:
    """Translate sentences with `generate`, batched by length, in input order."""
    model.eval()
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    translations = [""] * len(sentences)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            inputs = tokenizer([sentences[i] for i in indices], return_tensors="pt", padding=True)
            limit = int(inputs["input_ids"].shape[1] * max_length_factor) + max_length_offset
            outputs = model.generate(**inputs, num_beams=beam, max_new_tokens=limit)
            for index, text in zip(
                indices, tokenizer.batch_decode(outputs, skip_special_tokens=True), strict=True
            ):
                translations[index] = text
    return translations


def validation_loss(
    model: MarianMTModel,
    encoded: Sequence[tuple[list[int], list[int]]],
    batches: Sequence[Sequence[int]],
) -> float:
    """Mean per-token cross entropy (no smoothing) on the validation pairs."""
    model.eval()
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for batch in batches:
            loss, count = batch_loss(model, collate(encoded, batch), 0.0)
            total += float(loss) * count
            tokens += count
    return total / max(tokens, 1)


def score(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, float]:
    """Corpus BLEU and chrF by sacrebleu."""
    # sacrebleu is an optional extra (quality); only training and the benchmarks need it.
    import sacrebleu

    return (
        sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
        sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score,
    )


def _save_atomic(state: dict, path: Path) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def _write_model(
    model: MarianMTModel, spm_path: Path, config: TrainingConfig, dtype: torch.dtype
) -> None:
    output_dir = Path(config.output_dir)
    save_marian(
        model, spm_path, output_dir, source_lang=config.source_lang, target_lang=config.target_lang
    )
    if dtype != torch.float32:
        # Smaller weights on disk; config.json keeps float32 so loaders compute in float32.
        # Tied tensors (embeddings, output projection) stay one tensor, so they are stored once.
        converted: dict[int, torch.Tensor] = {}
        weights = {
            name: converted.setdefault(tensor.data_ptr(), tensor.to(dtype))
            if tensor.is_floating_point()
            else tensor
            for name, tensor in model.state_dict().items()
        }
        model.save_pretrained(str(output_dir), state_dict=weights)


# A pair's source and target token ids, as `encode_pairs` makes them.
EncodedPair = tuple[list[int], list[int]]


@dataclass(frozen=True)
class _Corpus:
    """A run's sentence pairs, tokenized by its SentencePiece model."""

    spm_path: Path
    vocab: dict[str, int]
    tokenizer: MarianTokenizer
    train: list[EncodedPair]
    val: list[EncodedPair]
    val_batches: list[list[int]]
    # the validation pairs translated at each evaluation (BLEU is slow; the loss takes them all)
    val_slice: list[tuple[str, str]]


def train_marian(config: TrainingConfig, command: str | None = None) -> TrainingResult:
    """Train (or resume training) a Marian model and save the best checkpoint to output_dir."""
    started = time.monotonic()
    output_dir, checkpoint_dir = _prepare_run(config)
    corpus = _load_corpus(config, checkpoint_dir)
    run = _TrainingRun(config, corpus, checkpoint_dir, started)
    run.resume()
    run.train()
    run.model.load_state_dict(torch.load(checkpoint_dir / BEST_FILE))
    saved_dtype = _saved_dtype(config, corpus, run.model, run.best["val_bleu"])
    _write_model(run.model, corpus.spm_path, config, saved_dtype)
    result = run.result(output_dir, saved_dtype)
    write_model_card(
        output_dir, training_record(config, result, len(corpus.train), len(corpus.vocab), command)
    )
    return result


def _prepare_run(config: TrainingConfig) -> tuple[Path, Path]:
    """The output and checkpoint folders, created; torch's threads and every seed set."""
    output_dir, checkpoint_dir = Path(config.output_dir), Path(config.checkpoint_dir)
    try:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create {output_dir} or {checkpoint_dir}: {error}.") from error
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    return output_dir, checkpoint_dir


def _load_corpus(config: TrainingConfig, checkpoint_dir: Path) -> _Corpus:
    """Reads the pairs and tokenizes them, training the SentencePiece model first when the
    checkpoint folder has none (a resumed run keeps its own)."""
    train_pairs = read_parallel(config.source_path, config.target_path, config.limit)
    val_pairs = read_parallel(config.val_source_path, config.val_target_path)
    if not train_pairs:
        raise DatasetError(f"Corpus file {config.source_path} holds no sentence pairs.")
    spm_path = checkpoint_dir / "joint.model"
    if not spm_path.exists():
        train_sentencepiece(
            [text for pair in train_pairs for text in pair],
            checkpoint_dir / "joint",
            config.vocab_size,
        )
    vocab = marian_vocab(spm_path)
    processor = spm.SentencePieceProcessor(model_file=str(spm_path))
    val_encoded = encode_pairs(val_pairs, processor, config.max_length)
    return _Corpus(
        spm_path=spm_path,
        vocab=vocab,
        tokenizer=marian_tokenizer(
            spm_path, vocab, checkpoint_dir / "tokenizer", config.source_lang, config.target_lang
        ),
        train=encode_pairs(train_pairs, processor, config.max_length),
        val=val_encoded,
        val_batches=make_batches(val_encoded, config.batch_tokens, config.seed),
        val_slice=val_pairs[: config.val_bleu_sentences],
    )


class _TrainingRun:
    """A model, its optimizer and where its training stands: saved to the checkpoint folder and
    resumed from it, so a run stopped at any step goes on from its last checkpoint."""

    def __init__(
        self, config: TrainingConfig, corpus: _Corpus, checkpoint_dir: Path, started: float
    ) -> None:
        self.config = config
        self.corpus = corpus
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_path = checkpoint_dir / CHECKPOINT_FILE
        self.started = started
        self.model = build_marian(config, corpus.vocab)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.learning_rate,
            betas=(0.9, 0.98),
            eps=1e-9,
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, inverse_sqrt_schedule(config.warmup_steps)
        )
        self.step, self.epoch, self.batch_position, self.elapsed_before = 0, 0, 0, 0.0
        self.best: dict[str, float] = {
            "step": 0,
            "val_bleu": -1.0,
            "val_chrf": 0.0,
            "val_loss": math.inf,
        }
        self.history: list[dict[str, float]] = []
        self.evals_since_best = 0
        self.batches: list[list[int]] = []

    def resume(self) -> None:
        """Takes up the checkpoint's model, optimizer and position, when there is one."""
        if not self.checkpoint_path.exists():
            return
        state = torch.load(self.checkpoint_path, weights_only=False)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise JobError(
                f"The checkpoint {self.checkpoint_path} was made with other model settings or "
                f"vocabulary; train into another checkpoint directory or delete it to start over."
            ) from error
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_position, self.elapsed_before = state["batch_position"], state["elapsed"]
        self.best, self.history = state["best"], state["history"]
        self.evals_since_best = state["evals_since_best"]
        torch.set_rng_state(state["torch_rng"])
        print(f"Resuming from {self.checkpoint_path} at step {self.step}.", file=sys.stderr)

    def train(self) -> None:
        """Steps until max_steps, max_minutes or the patience runs out, evaluating and saving a
        checkpoint as configured and once at the end."""
        config = self.config
        self.model.train()
        self.batches = make_batches(
            self.corpus.train, config.batch_tokens, config.seed + self.epoch
        )
        finished = (
            self.step >= config.max_steps
            or self.evals_since_best >= config.patience
            or self._out_of_time()
        )
        # A time-limited run has no known end step, so the bar counts instead of estimating.
        total = None if config.max_minutes is not None else config.max_steps
        progress = tqdm(total=total, initial=self.step, desc="train", unit="step", mininterval=5)
        running_loss: float | None = None
        while not finished:
            loss = self._train_step()
            running_loss = loss if running_loss is None else 0.98 * running_loss + 0.02 * loss
            progress.update(1)
            progress.set_postfix(loss=f"{running_loss:.3f}", epoch=self.epoch, refresh=False)
            finished = self.step >= config.max_steps or self._out_of_time()
            if self.step % config.eval_every == 0 or finished:
                self._evaluate()
                finished = finished or self.evals_since_best >= config.patience
            if self.step % config.save_every == 0 or finished:
                self._save_checkpoint()
        progress.close()
        if not self.history or self.history[-1]["step"] != self.step:
            self._evaluate()
            self._save_checkpoint()

    def result(self, output_dir: Path, saved_dtype: torch.dtype) -> TrainingResult:
        return TrainingResult(
            output_dir=output_dir,
            steps=self.step,
            epochs=round(self._epochs(), 2),
            wall_seconds=round(self._elapsed(), 1),
            best_step=int(self.best["step"]),
            best_val_bleu=round(self.best["val_bleu"], 2),
            best_val_chrf=round(self.best["val_chrf"], 2),
            best_val_loss=round(self.best["val_loss"], 4),
            saved_dtype=str(saved_dtype).removeprefix("torch."),
            size_bytes=sum(path.stat().st_size for path in output_dir.iterdir() if path.is_file()),
            history=self.history,
        )

    def _train_step(self) -> float:
        """One optimizer step on the next batch (of the next epoch once this one is done); its
        loss."""
        if self.batch_position >= len(self.batches):
            self.epoch, self.batch_position = self.epoch + 1, 0
            self.batches = make_batches(
                self.corpus.train, self.config.batch_tokens, self.config.seed + self.epoch
            )
        tensors = collate(self.corpus.train, self.batches[self.batch_position])
        loss, _ = batch_loss(self.model, tensors, self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.step, self.batch_position = self.step + 1, self.batch_position + 1
        return loss.item()

    def _evaluate(self) -> None:
        """Score the model on val and keep its weights when they are the best so far."""
        loss = validation_loss(self.model, self.corpus.val, self.corpus.val_batches)
        val_slice = self.corpus.val_slice
        hypotheses = translate_sentences(
            self.model, self.corpus.tokenizer, [s for s, _ in val_slice], beam=self.config.beam
        )
        bleu, chrf = score(hypotheses, [t for _, t in val_slice])
        self.history.append(
            {
                "step": self.step,
                "epoch": round(self._epochs(), 3),
                "val_loss": round(loss, 4),
                "val_bleu": round(bleu, 2),
                "val_chrf": round(chrf, 2),
                "minutes": round(self._elapsed() / 60, 2),
            }
        )
        tqdm.write(json.dumps(self.history[-1]))
        self.model.train()
        if bleu > self.best["val_bleu"]:
            self.best.update(step=self.step, val_bleu=bleu, val_chrf=chrf, val_loss=loss)
            self.evals_since_best = 0
            torch.save(self.model.state_dict(), self.checkpoint_dir / BEST_FILE)
        else:
            self.evals_since_best += 1

    def _save_checkpoint(self) -> None:
        _save_atomic(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "batch_position": self.batch_position,
                "elapsed": self._elapsed(),
                "best": self.best,
                "history": self.history,
                "evals_since_best": self.evals_since_best,
                "torch_rng": torch.get_rng_state(),
            },
            self.checkpoint_path,
        )

    def _elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def _epochs(self) -> float:
        return self.epoch + self.batch_position / len(self.batches)

    def _out_of_time(self) -> bool:
        return (
            self.config.max_minutes is not None and self._elapsed() >= self.config.max_minutes * 60
        )


def _saved_dtype(
    config: TrainingConfig, corpus: _Corpus, model: MarianMTModel, best_bleu: float
) -> torch.dtype:
    """float16 when `config.fp16` asks for it and the weights rounded to it lose at most
    `fp16_tolerance` BLEU on the validation slice; float32 otherwise."""
    if not config.fp16:
        return torch.float32
    half = build_marian(config, corpus.vocab)
    half.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    half_bleu, _ = score(
        translate_sentences(
            half, corpus.tokenizer, [s for s, _ in corpus.val_slice], beam=config.beam
        ),
        [t for _, t in corpus.val_slice],
    )
    return torch.float16 if half_bleu >= best_bleu - config.fp16_tolerance else torch.float32


def training_record(
    config: TrainingConfig,
    result: TrainingResult,
    train_pairs: int,
    vocab_size: int,
    command: str | None,
) -> dict:
    """Everything the model card states, kept as training.json beside the weights."""
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "result": {**asdict(result), "output_dir": str(result.output_dir)},
        "train_pairs": train_pairs,
        "vocab_size": vocab_size,
        "command": command or " ".join(shlex.quote(arg) for arg in sys.argv),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "test_scores": {},
    }


def write_model_card(model_dir: Path, record: dict) -> Path:
    """Write training.json and README.md (data, settings, steps, wall time, scores, command)."""
    settings, result = record["settings"], record["result"]
    source, target = settings["source_lang"], settings["target_lang"]
    versions = ", ".join(f"{name} {version}" for name, version in record["versions"].items())
    lines = [
        "---",
        "library_name: transformers",
        f"language: [{source}, {target}]",
        "tags: [translation, marian, mtfleet]",
        "---",
        "",
        f"# {source}→{target} Marian model trained by mtfleet",
        "",
        f"A small MarianMT transformer trained from scratch by `mtfleet train` on "
        f"`{settings['source_path']}` / `{settings['target_path']}` "
        f"({record['train_pairs']} sentence pairs), with a joint SentencePiece unigram vocabulary "
        f"of {record['vocab_size']} pieces; the checkpoint kept is the one with the best greedy "
        f"BLEU on the first {settings['val_bleu_sentences']} sentences of "
        f"`{settings['val_source_path']}`.",
        "",
        "## Training",
        "",
        f"- steps: {result['steps']} ({result['epochs']} epochs); "
        f"best checkpoint at step {result['best_step']}",
        f"- wall time: {result['wall_seconds'] / 60:.1f} minutes "
        f"on {settings['threads'] or 'all'} CPU threads",
        f"- weights: {result['saved_dtype']}, {result['size_bytes'] / 1e6:.1f} MB on disk in total",
        f"- {versions}; created {record['created']}",
        "",
        "## Scores",
        "",
        "sacrebleu defaults (13a tokenization); greedy decoding unless named.",
        "",
        "| set | BLEU | chrF |",
        "|---|---|---|",
        f"| val, first {settings['val_bleu_sentences']} sentences "
        f"| {result['best_val_bleu']:.2f} | {result['best_val_chrf']:.2f} |",
    ]
    lines += [
        f"| {name} | {scores['bleu']:.2f} | {scores['chrf']:.2f} |"
        for name, scores in record["test_scores"].items()
    ]
    lines += [
        "",
        f"Validation loss (no label smoothing) at the best checkpoint: "
        f"{result['best_val_loss']:.4f}.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(settings, indent=2),
        "```",
        "",
        "## Validation history",
        "",
        "```",
        *(json.dumps(entry) for entry in result["history"]),
        "```",
        "",
        "## Command",
        "",
        "```",
        record["command"],
        "```",
        "",
    ]
    model_dir = Path(model_dir)
    (model_dir / "training.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    path = model_dir / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def record_test_scores(model_dir: Path, test_scores: dict[str, dict[str, float]]) -> Path:
    """Add test-set scores to a trained model's training.json and rewrite its model card."""
    record = json.loads((Path(model_dir) / "training.json").read_text(encoding="utf-8"))
    record["test_scores"].update(test_scores)
    return write_model_card(model_dir, record)


def train_command(
    source: Path,
    target: Path,
    *,
    val_source: Path,
    val_target: Path,
    output: Path,
    checkpoint_dir: Path | None = None,
    command: str | None = None,
    **settings: object,
) -> TrainingResult:
    """`mtfleet train`: train on aligned files into `output`; rerunning resumes the checkpoint."""
    config = TrainingConfig(
        source_path=Path(source),
        target_path=Path(target),
        val_source_path=Path(val_source),
        val_target_path=Path(val_target),
        output_dir=Path(output),
        # Checkpoints stay outside the model directory so it can be shipped as it is.
        checkpoint_dir=Path(checkpoint_dir or Path(".train-ckpt") / Path(output).name),
        **settings,  # type: ignore[arg-type]
    )
    result = train_marian(config, command=command)
    print(
        f"Trained {result.steps} steps ({result.epochs} epochs) "
        f"in {result.wall_seconds / 60:.1f} min; "
        f"best val BLEU {result.best_val_bleu:.2f} chrF {result.best_val_chrf:.2f} at step "
        f"{result.best_step}; saved {result.saved_dtype} weights to {result.output_dir} "
        f"({result.size_bytes / 1e6:.1f} MB)."
    )
    return result
