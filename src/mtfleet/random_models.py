"""Small random-weight translation models of each family, saved in the real Hugging Face layout.

The demo (with no trained model at hand), the benches and the tests load them through the same code
that loads a real model, in seconds and without a network. Their translations are nonsense: the
weights are random, only the plumbing is real. Each family gets its real tokenizer class and
language codes, over a SentencePiece model trained on the sample text shipped with mtfleet:

- marian: one language pair (OPUS-MT); marian-multi: a multi-target OPUS-MT model, `>>de<<` first;
- m2m100 (`__de__` tokens), nllb (FLORES codes, `deu_Latn`), mbart50 (`de_DE`): the tokenizer
  marks the source, the target language's token is forced as the first generated token;
- t5: MADLAD-400's layout, a T5 model whose source starts with a `<2de>` tag;
- indictrans2: a stand-in for IndicTrans2, a model with code of its own (`auto_map` in its
  config.json: a MarianMTModel subclass with its own config class, model_type IndicTrans) and
  IndicTrans2's FLORES codes as pieces, for the text IndicProcessor prepares (`eng_Latn mar_Deva`).

    python -m mtfleet.random_models DIR      (or python -m mtfleet.testing.tiny_model DIR)
        [--arch marian|marian-multi|m2m100|nllb|mbart50|t5|indictrans2]
        [--d-model N] [--layers N]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    M2M100Config,
    M2M100ForConditionalGeneration,
    M2M100Tokenizer,
    MarianMTModel,
    MBart50Tokenizer,
    MBartConfig,
    MBartForConditionalGeneration,
    NllbTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)
from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES
from transformers.models.mbart50.tokenization_mbart50 import (
    FAIRSEQ_LANGUAGE_CODES as MBART50_LANGUAGES,
)
from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES as NLLB_LANGUAGES

from mtfleet.engines.indictrans import INDICTRANS2_LANGUAGES
from mtfleet.models import (
    FAIRSEQ_IDS,
    T5_IDS,
    marian_config,
    marian_vocab,
    save_marian,
    sentencepiece_pieces,
    train_sentencepiece,
    transformer_shape,
    write_special_tokens_map,
)

ARCHITECTURES = ("marian", "marian-multi", "m2m100", "nllb", "mbart50", "t5", "indictrans2")

# fairseq's token ids, which M2M100 and NLLB keep
M2M100_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
# M2M100Tokenizer appends its language tokens and these placeholder words after vocab.json
M2M100_LANGUAGES = tuple(FAIRSEQ_LANGUAGE_CODES["m2m100"])
M2M100_MADEUP_WORDS = 8
# The target languages of the multi-target Marian and the T5 (MADLAD-400) models: M2M100's codes
TAGGED_LANGUAGES = M2M100_LANGUAGES

# Weights drawn this wide make the output depend on the source; the usual 0.02 gives every
# source the same output. The untied output projection keeps greedy decoding from repeating the
# last token forever, and the repetition penalty (or, for models whose decoder starts from </s>,
# banned repeated 3-grams) keeps it from cycling through a few.
# <pad> is banned, as OPUS-MT bans it: M2M100's positions skip <pad> where CTranslate2's do not.
RANDOM_INIT_STD = 0.1
RANDOM_REPETITION_PENALTY = 1.5
RANDOM_NO_REPEAT_NGRAM = 3


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
    targets: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> Path:
    """A random-weight MarianMTModel with a SentencePiece vocabulary trained on `corpus`.

    `corpus` defaults to mtfleet's sample text. With `targets` it is a multi-target OPUS-MT model:
    `>>de<<` and the like are pieces of its vocabulary, as `tags` are. The same arguments build the
    same files.
    """
    tags = [*(f">>{code}<<" for code in targets), *tags]
    with tempfile.TemporaryDirectory() as scratch:
        spm_path = train_sentencepiece(
            _corpus(corpus), Path(scratch) / "spm", vocab_size, user_defined_symbols=tags
        )
        vocab = marian_vocab(spm_path)
        config = marian_config(vocab, d_model=d_model, layers=layers, heads=heads, ffn=ffn)
        return save_marian(_random_model(MarianMTModel, config, seed), spm_path, out_dir)


def build_tiny_marian_multi(out_dir: str | Path, **size: Any) -> Path:
    """A random-weight multi-target Marian model: `>>xx<<` before a source picks its target."""
    return build_tiny_marian(out_dir, targets=TAGGED_LANGUAGES, **size)


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
    write_special_tokens_map(
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


def build_tiny_nllb(
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
    """A random-weight NLLB-200 model: an M2M100 network with NllbTokenizer and its FLORES codes.

    As facebook/nllb-200-distilled-600M: `src_lang="eng_Latn"` starts the source with
    `eng_Latn`, and the target's code (`mar_Deva`) is forced as the first generated token.
    """
    out = Path(out_dir)
    spm_path = train_sentencepiece(
        _corpus(corpus), out / "sentencepiece.bpe", vocab_size, special_ids=FAIRSEQ_IDS
    )
    # converted from the SentencePiece model by transformers, as the hub's tokenizer.json was
    tokenizer = NllbTokenizer.from_pretrained(
        str(spm_path.parent), additional_special_tokens=NLLB_LANGUAGES, model_max_length=1024
    )
    config = M2M100Config(
        vocab_size=len(tokenizer),
        **transformer_shape(d_model=d_model, layers=layers, heads=heads, ffn=ffn),
        max_position_embeddings=1024,
        scale_embedding=True,
        **_fairseq_token_ids(tokenizer),
        tokenizer_class="NllbTokenizer",
    )
    return _save(out, tokenizer, _random_model(M2M100ForConditionalGeneration, config, seed))


def build_tiny_mbart50(
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
    """A random-weight mBART-50 model with MBart50Tokenizer and its codes (`en_XX`, `mr_IN`).

    As facebook/mbart-large-50-many-to-many-mmt: the source starts with its language's code and
    the target's code is forced as the first generated token.
    """
    out = Path(out_dir)
    spm_path = train_sentencepiece(
        _corpus(corpus), out / "sentencepiece.bpe", vocab_size, special_ids=FAIRSEQ_IDS
    )
    # the hub's tokenizer_config.json names <s>, which MBart50Tokenizer would leave unset
    tokenizer = MBart50Tokenizer.from_pretrained(
        str(spm_path.parent),
        additional_special_tokens=MBART50_LANGUAGES,
        model_max_length=1024,
        bos_token="<s>",
    )
    config = MBartConfig(
        vocab_size=len(tokenizer),
        **transformer_shape(d_model=d_model, layers=layers, heads=heads, ffn=ffn),
        max_position_embeddings=1024,
        scale_embedding=True,
        **_fairseq_token_ids(tokenizer),
        # as the hub's config.json has them: CTranslate2's converter reads these
        normalize_before=True,
        normalize_embedding=True,
        add_final_layer_norm=True,
        tokenizer_class="MBart50Tokenizer",
    )
    return _save(out, tokenizer, _random_model(MBartForConditionalGeneration, config, seed))


def build_tiny_t5(
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
    """A random-weight T5 model laid out as MADLAD-400: a `<2xx>` tag before the source names the
    target language; the tags are pieces of its SentencePiece vocabulary, read by T5Tokenizer."""
    out = Path(out_dir)
    spm_path = train_sentencepiece(
        _corpus(corpus),
        out / "spiece",
        vocab_size,
        special_ids=T5_IDS,
        user_defined_symbols=[f"<2{code}>" for code in TAGGED_LANGUAGES],
    )
    tokenizer = T5Tokenizer.from_pretrained(str(spm_path.parent), extra_ids=0, model_max_length=512)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // heads,
        d_ff=ffn,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    # T5 shares one embedding between encoder, decoder and output (transformers ties them whole)
    model = _random_model(T5ForConditionalGeneration, config, seed, tie_embeddings=True)
    return _save(out, tokenizer, model)


# The code the indictrans2 stand-in brings in its directory, as IndicTrans2 brings its own
INDICTRANS2_CODE = {
    "configuration_tiny_indictrans.py": """from transformers import MarianConfig


class TinyIndicTransConfig(MarianConfig):
    model_type = "IndicTrans"
""",
    "modeling_tiny_indictrans.py": """from transformers import MarianMTModel

from .configuration_tiny_indictrans import TinyIndicTransConfig


class TinyIndicTransModel(MarianMTModel):
    config_class = TinyIndicTransConfig
""",
}
INDICTRANS2_AUTO_MAP = {
    "AutoConfig": "configuration_tiny_indictrans.TinyIndicTransConfig",
    "AutoModelForSeq2SeqLM": "modeling_tiny_indictrans.TinyIndicTransModel",
}


def build_tiny_indictrans2(out_dir: str | Path, **size: Any) -> Path:
    """A random-weight stand-in for IndicTrans2: a model whose architecture is its own code.

    Its config.json names the classes in its directory (`auto_map`), so it loads only with
    `trust_remote_code`; IndicTrans2's FLORES codes are whole pieces of its vocabulary, as the
    codes IndicProcessor puts before each source are tokens of IndicTrans2's.
    """
    out = build_tiny_marian(out_dir, targets=(), tags=INDICTRANS2_LANGUAGES, **size)
    for name, code in INDICTRANS2_CODE.items():
        (out / name).write_text(code, "utf-8")
    config_path = out / "config.json"
    config = json.loads(config_path.read_text("utf-8"))
    config.update(
        model_type="IndicTrans",
        architectures=["TinyIndicTransModel"],
        auto_map=INDICTRANS2_AUTO_MAP,
    )
    config_path.write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    return out


BUILDERS: dict[str, Callable[..., Path]] = {
    "marian": build_tiny_marian,
    "marian-multi": build_tiny_marian_multi,
    "m2m100": build_tiny_m2m100,
    "nllb": build_tiny_nllb,
    "mbart50": build_tiny_mbart50,
    "t5": build_tiny_t5,
    "indictrans2": build_tiny_indictrans2,
}


def build_tiny_model(arch: str, out_dir: str | Path, **size: Any) -> Path:
    """The tiny model of family `arch` (one of ARCHITECTURES) in `out_dir`."""
    return BUILDERS[arch](out_dir, **size)


def _fairseq_token_ids(tokenizer: Any) -> dict[str, int]:
    # fairseq decoders start from </s>
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.eos_token_id,
    }


def _save(out: Path, tokenizer: Any, model: PreTrainedModel) -> Path:
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


def _corpus(corpus: Sequence[str] | None) -> list[str]:
    texts = sample_sentences() if corpus is None else [line for line in corpus if line.strip()]
    if not texts:
        raise ValueError("the corpus for the SentencePiece vocabulary has no text")
    return texts


def _random_model(
    model_class: type[PreTrainedModel],
    config: PretrainedConfig,
    seed: int,
    *,
    tie_embeddings: bool = False,
) -> PreTrainedModel:
    config.init_std = RANDOM_INIT_STD
    config.tie_word_embeddings = tie_embeddings
    torch.manual_seed(seed)
    model = model_class(config).eval()
    if config.decoder_start_token_id == config.eos_token_id:
        # transformers penalizes the decoder's start token too, CTranslate2 does not: with </s> as
        # that token the two would end outputs at different places
        model.generation_config.no_repeat_ngram_size = RANDOM_NO_REPEAT_NGRAM
    else:
        model.generation_config.repetition_penalty = RANDOM_REPETITION_PENALTY
    # a trained model never emits <pad>; a random one would, and fairseq's positions skip it
    model.generation_config.bad_words_ids = [[config.pad_token_id]]
    return model


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mtfleet.random_models",
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
    out = build_tiny_model(
        args.arch,
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
