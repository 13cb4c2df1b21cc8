"""Building translation models' files: SentencePiece vocabularies and Marian models in the
Hugging Face layout. `mtfleet train` saves its trained models with them, and the tiny test models
(`mtfleet.random_models`) their random ones.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

# Marian's special tokens; OPUS-MT models also start with </s> 0 and <unk> 1
MARIAN_EOS, MARIAN_UNK, MARIAN_PAD = "</s>", "<unk>", "<pad>"


# SentencePiece ids of the special pieces: Marian's (</s> 0, <unk> 1, <pad> 2), fairseq's before
# its offset of one (NLLB, M2M100, mBART: <unk> 0, <s> 1, </s> 2) and T5's (<pad> 0, </s> 1, <unk> 2)
MARIAN_IDS = {"eos_id": 0, "unk_id": 1, "pad_id": 2, "bos_id": -1}
FAIRSEQ_IDS = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
T5_IDS = {"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1}


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str | Path,
    vocab_size: int,
    *,
    special_ids: dict[str, int] = MARIAN_IDS,
    user_defined_symbols: Sequence[str] = (),
) -> Path:
    """Train a unigram SentencePiece model on `texts`; writes and returns `<model_prefix>.model`.

    Its ids are Marian's by default: `</s>` 0, `<unk>` 1, `<pad>` 2, then the pieces (and
    `user_defined_symbols`, such as `>>de<<`, always whole pieces). A corpus too small for
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
        **special_ids,
        eos_piece=MARIAN_EOS,
        unk_piece=MARIAN_UNK,
        pad_piece=MARIAN_PAD,
        user_defined_symbols=list(user_defined_symbols),
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
    write_special_tokens_map(out, eos_token=MARIAN_EOS, unk_token=MARIAN_UNK, pad_token=MARIAN_PAD)
    # OPUS-MT's generation settings: never emit <pad>, end a cut-off output with </s>
    generation = model.generation_config
    generation.bad_words_ids = [[vocab[MARIAN_PAD]]]
    generation.forced_eos_token_id = vocab[MARIAN_EOS]
    model.save_pretrained(out)
    return out


def write_special_tokens_map(out: Path, **tokens: str | list[str]) -> None:
    """special_tokens_map.json: transformers 5 no longer writes it, but tools and older releases read it."""
    (out / "special_tokens_map.json").write_text(json.dumps(tokens, indent=2) + "\n", "utf-8")
