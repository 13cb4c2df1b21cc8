"""Small random-weight translation models, saved in the real Hugging Face layout.

Tests and the demo load them through the same code that loads a real model, in seconds and without
a network. Their translations are nonsense: the weights are random, only the plumbing is real.

    python -m mtfleet.testing.tiny_model DIR [--arch marian|m2m100] [--d-model N] [--layers N]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import sentencepiece
import torch
import transformers
from transformers import (
    M2M100Config,
    M2M100ForConditionalGeneration,
    M2M100Tokenizer,
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    PreTrainedModel,
)
from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

ARCHITECTURES = ("marian", "m2m100")

# Marian's special tokens; OPUS-MT models also start with </s> 0 and <unk> 1
MARIAN_EOS, MARIAN_UNK, MARIAN_PAD = "</s>", "<unk>", "<pad>"
# fairseq's token ids, which M2M100 and NLLB keep
M2M100_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
# M2M100Tokenizer appends its language tokens and these placeholder words after vocab.json
M2M100_LANGUAGES = tuple(FAIRSEQ_LANGUAGE_CODES["m2m100"])
M2M100_MADEUP_WORDS = 8

# Weights drawn this wide make the output depend on the source; the usual 0.02 gives every
# source the same output. The untied output projection keeps greedy decoding from repeating the
# last token forever, and the repetition penalty keeps it from cycling through a few.
RANDOM_INIT_STD = 0.1
RANDOM_REPETITION_PENALTY = 1.5


def sample_sentences() -> list[str]:
    """The English sample text shipped with mtfleet: a few hundred varied sentences."""
    text = resources.files(__package__).joinpath("sample_corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def varied_segments(count: int, seed: int = 0) -> list[str]:
    """`count` segments of every length: sample sentences, two long run-ons and very short ones.

    Shuffled by `seed`, so a batching engine sees its sorting, padding and order restoring tested.
    """
    sentences = sample_sentences()
    rng = random.Random(seed)
    segments = rng.sample(sentences, count - 6)
    segments += [" ".join(rng.sample(sentences, k)) for k in (3, 6)]
    segments += ["Hi.", "42", "Yes!", "Why?"]
    rng.shuffle(segments)
    return segments


def train_sentencepiece(texts: Iterable[str], model_prefix: str | Path, vocab_size: int) -> Path:
    """Train a unigram SentencePiece model on `texts`; writes and returns `<model_prefix>.model`.

    Its ids are Marian's: `</s>` 0, `<unk>` 1, `<pad>` 2, then the pieces. A corpus too small for
    `vocab_size` pieces gets fewer; a run of characters the corpus never had becomes one `<unk>`.
    """
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        eos_id=0,
        unk_id=1,
        pad_id=2,
        bos_id=-1,
        eos_piece=MARIAN_EOS,
        unk_piece=MARIAN_UNK,
        pad_piece=MARIAN_PAD,
        num_threads=1,
        minloglevel=2,
    )
    path = Path(f"{model_prefix}.model")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


def sentencepiece_pieces(spm_path: str | Path) -> list[str]:
    """The pieces of a SentencePiece model, in its id order."""
    processor = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def marian_vocab(spm_path: str | Path) -> dict[str, int]:
    """Marian's vocab.json for a model from `train_sentencepiece`: each piece with its own id."""
    return {piece: i for i, piece in enumerate(sentencepiece_pieces(spm_path))}


def transformer_shape(*, d_model: int, layers: int, heads: int, ffn: int) -> dict[str, int]:
    """The size arguments of a Marian or M2M100 config: as many decoder as encoder layers."""
    return {
        "d_model": d_model,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": ffn,
        "decoder_ffn_dim": ffn,
    }


def marian_config(
    vocab: dict[str, int], *, d_model: int, layers: int, heads: int, ffn: int
) -> MarianConfig:
    """A MarianConfig for `vocab` (from `marian_vocab`), with its special token ids wired."""
    pad_id = vocab[MARIAN_PAD]
    return MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        **transformer_shape(d_model=d_model, layers=layers, heads=heads, ffn=ffn),
        max_position_embeddings=512,
        scale_embedding=True,
        pad_token_id=pad_id,
        eos_token_id=vocab[MARIAN_EOS],
        decoder_start_token_id=pad_id,
    )


def save_marian(
    model: MarianMTModel,
    spm_path: str | Path,
    out_dir: str | Path,
    *,
    source_lang: str | None = None,
    target_lang: str | None = None,
) -> Path:
    """Save a Marian model whose vocabulary is `marian_vocab(spm_path)`, laid out as OPUS-MT's.

    Writes config.json, model.safetensors, generation_config.json, source.spm, target.spm,
    vocab.json, tokenizer_config.json and special_tokens_map.json; returns the directory.
    The languages, when given, are recorded in tokenizer_config.json as OPUS-MT records them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = marian_vocab(spm_path)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2), "utf-8")
    for name in ("source.spm", "target.spm"):
        shutil.copyfile(spm_path, out / name)
    with warnings.catch_warnings():
        # it recommends sacremoses for a punctuation normalizer that tokenizing never calls
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        tokenizer = MarianTokenizer(
            source_spm=str(out / "source.spm"),
            target_spm=str(out / "target.spm"),
            vocab=str(out / "vocab.json"),
            source_lang=source_lang,
            target_lang=target_lang,
        )
    tokenizer.save_pretrained(out)
    _write_special_tokens_map(out, eos_token=MARIAN_EOS, unk_token=MARIAN_UNK, pad_token=MARIAN_PAD)
    # OPUS-MT's generation settings: never emit <pad>, end a cut-off output with </s>
    generation = model.generation_config
    generation.bad_words_ids = [[vocab[MARIAN_PAD]]]
    generation.forced_eos_token_id = vocab[MARIAN_EOS]
    model.save_pretrained(out)
    return out


def build_tiny_marian(
    out_dir: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 4,
    ffn: int = 128,
    vocab_size: int = 1000,
    seed: int = 0,
    corpus: Sequence[str] | None = None,
) -> Path:
    """A random-weight MarianMTModel with a SentencePiece vocabulary trained on `corpus`.

    `corpus` defaults to mtfleet's sample text. The same arguments build the same files.
    """
    with tempfile.TemporaryDirectory() as scratch:
        spm_path = train_sentencepiece(_corpus(corpus), Path(scratch) / "spm", vocab_size)
        vocab = marian_vocab(spm_path)
        config = marian_config(vocab, d_model=d_model, layers=layers, heads=heads, ffn=ffn)
        return save_marian(_random_model(MarianMTModel, config, seed), spm_path, out_dir)


def build_tiny_m2m100(
    out_dir: str | Path,
    *,
    d_model: int = 64,
    layers: int = 2,
    heads: int = 4,
    ffn: int = 128,
    vocab_size: int = 1000,
    seed: int = 0,
    corpus: Sequence[str] | None = None,
) -> Path:
    """A random-weight M2M100 model: its language tokens (`__de__`) follow the pieces, as in M2M100.

    The tokenizer knows M2M100's hundred language codes, so `src_lang` / `tgt_lang` and the forced
    first token of the target language work as with facebook/m2m100_418M.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spm_path = train_sentencepiece(_corpus(corpus), out / "sentencepiece.bpe", vocab_size)
    pieces = [piece for piece in sentencepiece_pieces(spm_path) if piece not in M2M100_SPECIALS]
    vocab = {piece: i for i, piece in enumerate((*M2M100_SPECIALS, *pieces))}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2), "utf-8")
    language_tokens = [f"__{code}__" for code in M2M100_LANGUAGES]
    tokenizer = M2M100Tokenizer(
        vocab_file=str(out / "vocab.json"),
        spm_file=str(spm_path),
        additional_special_tokens=language_tokens,
    )
    tokenizer.save_pretrained(out)
    _write_special_tokens_map(
        out,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=language_tokens,
    )
    config = M2M100Config(
        vocab_size=len(vocab) + len(M2M100_LANGUAGES) + M2M100_MADEUP_WORDS,
        **transformer_shape(d_model=d_model, layers=layers, heads=heads, ffn=ffn),
        max_position_embeddings=1024,
        bos_token_id=vocab["<s>"],
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["</s>"],
    )
    model = _random_model(M2M100ForConditionalGeneration, config, seed)
    model.save_pretrained(out)
    return out


def _corpus(corpus: Sequence[str] | None) -> list[str]:
    texts = sample_sentences() if corpus is None else [line for line in corpus if line.strip()]
    if not texts:
        raise ValueError("the corpus for the SentencePiece vocabulary has no text")
    return texts


def _random_model(
    model_class: type[PreTrainedModel], config: MarianConfig | M2M100Config, seed: int
) -> PreTrainedModel:
    config.init_std = RANDOM_INIT_STD
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.repetition_penalty = RANDOM_REPETITION_PENALTY
    return model


def _write_special_tokens_map(out: Path, **tokens: str | list[str]) -> None:
    # transformers 5 no longer writes this file, but tools and older releases read it
    (out / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2) + "\n", "utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mtfleet.testing.tiny_model",
        description="Build a small random-weight translation model (its output is nonsense).",
    )
    parser.add_argument("out_dir", metavar="DIR", type=Path, help="directory to write the model to")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="marian")
    parser.add_argument("--d-model", type=int, default=64, help="hidden size (default 64)")
    parser.add_argument(
        "--layers", type=int, default=2, help="encoder and decoder layers (default 2)"
    )
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--ffn", type=int, default=128, help="feed-forward size (default 128)")
    parser.add_argument(
        "--vocab-size", type=int, default=1000, help="SentencePiece pieces (default 1000)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed of the weights (default 0)"
    )
    args = parser.parse_args(argv)
    if args.d_model % args.heads:
        parser.error(f"--d-model {args.d_model} is not a multiple of --heads {args.heads}")
    # a bar for writing a 2 MB file is noise on a command that takes seconds
    transformers.utils.logging.disable_progress_bar()
    build = build_tiny_marian if args.arch == "marian" else build_tiny_m2m100
    out = build(
        args.out_dir,
        d_model=args.d_model,
        layers=args.layers,
        heads=args.heads,
        ffn=args.ffn,
        vocab_size=args.vocab_size,
        seed=args.seed,
    )
    print(f"Built a random-weight {args.arch} model in {out} (its translations are nonsense).")


if __name__ == "__main__":
    main()
