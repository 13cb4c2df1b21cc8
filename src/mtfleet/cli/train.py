"""`mtfleet train`: a small Marian translation model from two aligned text files."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from mtfleet.cli.output import fail
from mtfleet.errors import MtfleetError

Int = Annotated[int | None, typer.Option()]
Float = Annotated[float | None, typer.Option()]


def register(app: typer.Typer) -> None:
    app.command()(train)


def train(
    source: Annotated[Path, typer.Argument(help="Source sentences, one a line (.gz allowed).")],
    target: Annotated[Path, typer.Argument(help="Their translations, aligned by line.")],
    val_source: Annotated[Path, typer.Option(help="Validation source sentences.")],
    val_target: Annotated[Path, typer.Option(help="Validation references.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model directory to write.")],
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Checkpoints (default: .train-ckpt/<output name>).")
    ] = None,
    source_lang: Annotated[
        str | None, typer.Option(help="Source language code (default en).")
    ] = None,
    target_lang: Annotated[
        str | None, typer.Option(help="Target language code (default de).")
    ] = None,
    vocab_size: Annotated[
        int | None, typer.Option(help="Joint SentencePiece vocabulary (default 8000).")
    ] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width (default 256).")] = None,
    encoder_layers: Int = None,
    decoder_layers: Int = None,
    attention_heads: Int = None,
    ffn_dim: Int = None,
    dropout: Float = None,
    label_smoothing: Float = None,
    learning_rate: Float = None,
    warmup_steps: Int = None,
    batch_tokens: Annotated[
        int | None, typer.Option(help="Tokens per batch (default 4096).")
    ] = None,
    max_steps: Int = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop after this much training time.")
    ] = None,
    eval_every: Int = None,
    save_every: Int = None,
    patience: Annotated[
        int | None, typer.Option(help="Evaluations without a better val BLEU before stopping.")
    ] = None,
    val_bleu_sentences: Int = None,
    threads: Annotated[int | None, typer.Option(help="Torch threads.")] = None,
    seed: Int = None,
    limit: Annotated[int | None, typer.Option(help="Train on the first N pairs only.")] = None,
) -> None:
    """Train a small Marian model (joint SentencePiece vocabulary first) and save it in the Hugging Face layout.

    Rerunning the same command resumes from its last checkpoint.
    """
    from mtfleet.training import train_command

    settings = {
        "source_lang": source_lang, "target_lang": target_lang, "vocab_size": vocab_size,
        "d_model": d_model, "encoder_layers": encoder_layers, "decoder_layers": decoder_layers,
        "attention_heads": attention_heads, "ffn_dim": ffn_dim, "dropout": dropout,
        "label_smoothing": label_smoothing, "learning_rate": learning_rate,
        "warmup_steps": warmup_steps, "batch_tokens": batch_tokens, "max_steps": max_steps,
        "max_minutes": max_minutes, "eval_every": eval_every, "save_every": save_every,
        "patience": patience, "val_bleu_sentences": val_bleu_sentences, "threads": threads,
        "seed": seed, "limit": limit,
    }  # fmt: skip
    try:
        train_command(
            source, target, val_source=val_source, val_target=val_target, output=output,
            checkpoint_dir=checkpoint_dir, command="mtfleet " + shlex.join(sys.argv[1:]),
            **{name: value for name, value in settings.items() if value is not None},
        )  # fmt: skip
    except MtfleetError as error:
        raise fail(error) from None
