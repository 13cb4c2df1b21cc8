"""The tokenizer half of a translation model, shared by every engine so they agree token for token.

`ModelTokenizer` locates and checks a model directory (or hub id), loads its config and tokenizer,
sets up its languages by family (`language_scheme`: M2M100, NLLB and mBART-50 codes with a forced
first target token; a multi-target Marian model's `>>tgt<<` or a T5 (MADLAD-400) model's `<2tgt>`
before each source), and knows the input limit, each segment's output cap and the length-sorted
token-budget batches. It loads no weights: checking a model costs seconds.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoTokenizer, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES

from mtfleet.engines.detect import AUTO
from mtfleet.engines.hub import use_hub
from mtfleet.engines.indictrans import INDICTRANS2_LANGUAGES
from mtfleet.engines.languages import LanguageCode, model_code
from mtfleet.errors import ModelError

WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
# Language codes that are tokens themselves: NLLB's eng_Latn, mBART-50's en_XX
LANGUAGE_TOKEN = re.compile(r"[a-z]{2,3}_[A-Za-z]{2,4}")
# Encoder-decoder generation starts the decoder with one token, decoder_start_token_id
DECODER_PROMPT_LENGTH = 1
# Models with relative positions (T5) have no hard limit; this is the length they trained on
DEFAULT_POSITIONS = 512
# A tokenizer without a configured limit reports a huge model_max_length
UNSET_MODEL_MAX_LENGTH = 1_000_000


# Tokenizer classes of the families whose tokenizer marks the source language itself
CODE_FAMILIES = {
    "M2M100Tokenizer": "m2m100",
    "NllbTokenizer": "nllb",
    "MBart50Tokenizer": "mbart50",
}
# Target tags put before each source: OPUS-MT's multi-target `>>de<<`, MADLAD-400's `<2de>`
TAG_TEMPLATES = {"marian": ">>{}<<", "t5": "<2{}>"}
TAG_FAMILIES = {"marian": "marian-multi", "t5": "t5"}
# IndicTrans2's model_type (its code is its own): its languages reach it through its preprocessor
INDICTRANS2_MODEL_TYPE = "IndicTrans"


@dataclass(frozen=True)
class LanguageScheme:
    """How a model is told its languages.

    `mark` is "code" (the tokenizer marks the source, the target's token is forced as the first
    generated one), "tag" (`tag` with the target's code goes before each source), "preprocessor"
    (IndicTrans2: IndicProcessor puts both codes before the text) or "none".
    `codes` maps each language code the model knows to its token id.
    """

    family: str
    mark: str
    codes: dict[str, int]
    tag: str = ""


def language_scheme(config: PretrainedConfig, tokenizer: Any) -> LanguageScheme:
    """The family of a model and the language codes it knows, from its config and tokenizer."""
    tokenizer_class = type(tokenizer).__name__.removesuffix("Fast")
    if config.model_type == INDICTRANS2_MODEL_TYPE:
        vocab = tokenizer.get_vocab()
        codes = {code: vocab.get(code, -1) for code in INDICTRANS2_LANGUAGES}
        return LanguageScheme("indictrans2", "preprocessor", codes)
    if hasattr(tokenizer, "src_lang"):
        family = CODE_FAMILIES.get(tokenizer_class, config.model_type)
        return LanguageScheme(family, "code", _language_codes(tokenizer))
    template = TAG_TEMPLATES.get(config.model_type)
    if template is not None:
        prefix, suffix = template.split("{}")
        codes = {
            token[len(prefix) : -len(suffix)]: token_id
            for token, token_id in tokenizer.get_vocab().items()
            if token.startswith(prefix)
            and token.endswith(suffix)
            and len(token) > len(prefix) + len(suffix)
        }
        if codes:
            return LanguageScheme(
                TAG_FAMILIES[config.model_type], "tag", dict(sorted(codes.items())), template
            )
    return LanguageScheme(config.model_type, "none", {})


# How far decode caps may spread within one batch (measured on the bench: 37.4 s -> 27.9 s).
CAP_SPREAD = 1.5
# texts whose ids `ModelTokenizer.count_tokens` keeps for `encode_segments`: more than a shard's
COUNTED_TEXTS = 50_000


class ModelTokenizer:
    """A translation model's tokenizer, languages, input limit, output caps and batches.

    Marian models take no language codes, except multi-target OPUS-MT models, whose `>>tgt<<`
    token is put before each segment, as MADLAD-400's `<2tgt>` is. M2M100, NLLB and mBART-50 need
    `src_lang` and `tgt_lang`; the target language's token (`forced_bos_token_id`) must be the
    first generated token. Models with code of their own load only with `trust_remote_code`.
    """

    def __init__(
        self,
        model: str,
        *,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
        max_batch_tokens: int = 8192,
        max_length_factor: float = 2.0,
        max_length_offset: int = 10,
        trust_remote_code: bool = False,
        check_languages: bool = True,
    ) -> None:
        if max_batch_tokens < 1:
            raise ModelError(f"max_batch_tokens must be at least 1, not {max_batch_tokens}.")
        self.model_name = model
        self.max_batch_tokens = max_batch_tokens
        self.max_length_factor = max_length_factor
        self.max_length_offset = max_length_offset
        self.source = locate_model(model)
        use_hub(self.source)
        self.remote_code = remote_code(self.source)
        self.config = _load_config(self.source, self.remote_code, trust_remote_code)
        self.tokenizer = _load_tokenizer(self.source, trust_remote_code)
        self.languages = language_scheme(self.config, self.tokenizer)
        # the target's tag token (multi-target Marian, MADLAD), put first in every source
        self.source_tag_id: int | None = None
        # batch_decode's settings besides skip_special_tokens (a preprocessor may add its own)
        self.decode_settings: dict[str, Any] = {}
        self.forced_bos_token_id: int | None = None
        # the languages as the model's codes, once set
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        if check_languages:
            self._set_languages(src_lang, tgt_lang)
        positions = _model_positions(self.config)
        self.max_input_tokens = min(positions, _tokenizer_limit(self.tokenizer, positions))
        # the decoder's start token and the output share the model's positions
        self.max_output_tokens = positions - DECODER_PROMPT_LENGTH
        # the ids of the texts counted last (`count_tokens`), by text
        self.counted: dict[str, list[int]] = {}

    def for_target(self, src_lang: str | None, tgt_lang: str | None) -> ModelTokenizer:
        """This tokenizer set up for another target language; the loaded tokenizer is shared."""
        other = copy.copy(self)
        other.source_tag_id = None
        other.forced_bos_token_id = None
        # a target's tag may be part of every source's ids
        other.counted = {}
        other._set_languages(src_lang, tgt_lang)
        return other

    @classmethod
    def without_languages(cls, model: str, *, trust_remote_code: bool = False) -> ModelTokenizer:
        """The model's tokenizer side with no languages set: to describe it, not to translate."""
        return cls(model, trust_remote_code=trust_remote_code, check_languages=False)

    # --- source side

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Source token ids of each text, special tokens and language marks included."""
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        if self.source_tag_id is None:
            return encoded
        # `<2xx> text` as MADLAD and OPUS-MT document it, the tag as its own id: how a tokenizer
        # splits a leading special token from text differs between versions (a stray '▁' first)
        return [[self.source_tag_id, *ids] for ids in encoded]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Each text's token count. The ids are kept (`counted`, the last `COUNTED_TEXTS`
        texts): a text counted to be segmented is mostly a segment, which `encode_segments`
        then takes without tokenizing it again."""
        encoded = self.encode(texts)
        if len(self.counted) + len(texts) > COUNTED_TEXTS:
            self.counted.clear()
        self.counted.update(zip(texts, encoded, strict=True))
        return [len(ids) for ids in encoded]

    def encode_segments(self, segments: Sequence[str]) -> list[list[int]]:
        """`encode`, refusing a segment over the input limit rather than truncating it."""
        counted = self.counted
        missing = list(dict.fromkeys(segment for segment in segments if segment not in counted))
        fresh = dict(zip(missing, self.encode(missing), strict=True))
        encoded = [counted[text] if text in counted else fresh[text] for text in segments]
        for text, ids in zip(segments, encoded, strict=True):
            if len(ids) > self.max_input_tokens:
                raise ValueError(
                    f"a segment of {len(ids)} tokens exceeds the model's {self.max_input_tokens}"
                    f" (segment them first): {text[:60]!r}"
                )
        return encoded

    def batches(self, encoded: Sequence[Sequence[int]]) -> Iterator[list[int]]:
        """Indices of `encoded`, longest first, in batches whose padded size fits the budget.

        A batch also ends where a segment's decode cap falls below 1/CAP_SPREAD of the batch's
        first: a batch decodes until its longest cap, so short segments would idle through it.
        """
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        batch: list[int] = []
        for i in order:
            # the batch's first segment is its longest, so it sets the padded width and the cap
            width = len(encoded[batch[0]]) if batch else len(encoded[i])
            too_big = (len(batch) + 1) * width > self.max_batch_tokens
            too_short = self.output_cap(len(encoded[i])) * CAP_SPREAD < self.output_cap(width)
            if batch and (too_big or too_short):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    # --- target side

    def output_cap(self, source_tokens: int) -> int:
        """The most new tokens a segment of `source_tokens` tokens may generate."""
        cap = math.ceil(self.max_length_factor * source_tokens + self.max_length_offset)
        return max(1, min(cap, self.max_output_tokens))

    def stopped_at_cap(self, source_ids: Sequence[int], output: Sequence[int]) -> bool:
        """Whether `output`, generated for `source_ids`, ran to its cap (`output_cap`): cut there,
        unless it ended its sentence exactly at the cap (see `checked.translate_watching_caps`)."""
        return len(output) >= self.output_cap(len(source_ids))

    def decode(self, outputs: Sequence[Sequence[int]]) -> list[str]:
        """Text of generated token ids, without special tokens or the forced language token."""
        if self.forced_bos_token_id is not None:
            # the target language's token is not text, whether or not the tokenizer calls it special
            outputs = [
                ids[1:] if ids[:1] == [self.forced_bos_token_id] else ids
                for ids in map(list, outputs)
            ]
        return self.tokenizer.batch_decode(
            outputs, skip_special_tokens=True, **self.decode_settings
        )

    # --- languages

    def _set_languages(self, src_lang: str | None, tgt_lang: str | None) -> None:
        """Sets up `tgt_lang` and `src_lang` as the model's codes (`mr` is NLLB's `mar_Deva`);
        a source of AUTO is set per segment by its detector."""
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        if self.languages.mark == "code":
            self._set_language_codes(src_lang, tgt_lang)
        elif self.languages.mark == "tag":
            self._set_target_tag(src_lang, tgt_lang)
        elif self.languages.mark == "preprocessor":
            self.src_lang = self._source_code(src_lang)
            self.tgt_lang = None if tgt_lang is None else self._model_code(tgt_lang, "--tgt-lang")
        else:
            self._check_declared_pair(src_lang, tgt_lang)

    def _set_language_codes(self, src_lang: str | None, tgt_lang: str | None) -> None:
        """M2M100, NLLB, mBART-50: the tokenizer marks the source; the target is the forced BOS."""
        codes = self.languages.codes
        if src_lang is None or tgt_lang is None:
            raise ModelError(
                f"Model {self.model_name} needs a source and a target language "
                f"(--src-lang, --tgt-lang), such as {_some(codes)}."
            )
        self.tgt_lang = self._model_code(tgt_lang, "--tgt-lang")
        self.src_lang = self._source_code(src_lang)
        if self.src_lang != AUTO:
            self.tokenizer.src_lang = self.src_lang
        self.forced_bos_token_id = codes[self.tgt_lang]

    def _set_target_tag(self, src_lang: str | None, tgt_lang: str | None) -> None:
        """Multi-target Marian, T5 (MADLAD-400): the target's tag before each source."""
        codes = self.languages.codes
        if tgt_lang is None:
            raise ModelError(
                f"Model {self.model_name} is multi-target and got no target language "
                f"(--tgt-lang); it takes {_some(codes)} ({len(codes)} in all)."
            )
        self.tgt_lang = self._model_code(tgt_lang, "--tgt-lang")
        # a multi-target OPUS-MT model's sources need not be among its targets; MADLAD's are
        if self.languages.family == "t5":
            self.src_lang = self._source_code(src_lang)
        self.source_tag_id = codes[self.tgt_lang]

    def _source_code(self, src_lang: str | None) -> str | None:
        if src_lang in (None, AUTO):
            return src_lang
        return self._model_code(src_lang, "--src-lang")

    def _model_code(self, code: str, option: str) -> str:
        return model_code(code, self.languages.codes, f"Model {self.model_name}", option)

    def _check_declared_pair(self, src_lang: str | None, tgt_lang: str | None) -> None:
        """A one-pair model (Marian) that names its languages takes no others; the same
        language in another ISO 639 code (`deu` for its `de`) is its own."""
        declared = {
            "source": (src_lang, getattr(self.tokenizer, "source_lang", None)),
            "target": (tgt_lang, getattr(self.tokenizer, "target_lang", None)),
        }
        for side, (asked, own) in declared.items():
            if asked in (None, AUTO) or own is None or asked == own:
                continue
            if LanguageCode.read(asked).kinship(LanguageCode.read(own)) != 0:
                raise ModelError(
                    f"Model {self.model_name} translates {declared['source'][1]} to "
                    f"{declared['target'][1]}, so it cannot take {asked!r} as its {side} language."
                )
            if side == "source":
                self.src_lang = own
            else:
                self.tgt_lang = own


# --- the model directory


def locate_model(model: str) -> str:
    """What from_pretrained is given: a checked local directory, or else a hub id."""
    path = Path(model).expanduser()
    if not path.exists() and not _looks_like_a_path(model):
        return model
    if not path.is_dir():
        what = "is a file, not a model directory" if path.exists() else "does not exist"
        raise ModelError(f"Model directory {model} {what}.")
    if not (path / "config.json").is_file():
        raise ModelError(
            f"Model directory {model} has no config.json: it holds no Hugging Face model."
        )
    return str(path.resolve())


def local_dir(source: str, *, fetch: bool = False) -> Path:
    """The directory holding `source`'s files: itself, or a hub model's snapshot.

    Without `fetch` the snapshot must already be in the hub cache (from_pretrained put it there).
    """
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=not fetch))
    except Exception as error:  # offline, unknown repository, interrupted download
        raise ModelError(load_failure(source, "its files", error)) from error


def load_failure(source: str, part: str, error: Exception) -> str:
    """The one sentence for a model whose `part` cannot be loaded."""
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if Path(source).is_dir():
        return f"Model directory {source} is broken: {part} cannot be loaded ({reason})."
    return (
        f"Model {source!r} is neither a local directory nor a Hugging Face Hub model that can be "
        f"fetched ({reason})."
    )


def files_sha256(model_dir: Path, patterns: Sequence[str] = ("*",)) -> dict[str, str]:
    """sha256 of each file in `model_dir` whose name matches one of `patterns`, by name."""
    digests = {}
    for path in sorted(model_dir.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if not any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns):
            continue
        digest = hashlib.sha256()
        with path.open("rb") as stream:
            for block in iter(lambda stream=stream: stream.read(1 << 20), b""):
                digest.update(block)
        digests[path.name] = digest.hexdigest()
    return digests


def weights_sha256(model_dir: Path) -> dict[str, str]:
    """sha256 of each weight file, so a manifest names the exact weights it was made with."""
    return files_sha256(model_dir, WEIGHT_FILES)


def token_id_set(token_ids: int | list[int] | None) -> set[int]:
    """A generation setting that is one token id, a list of them, or unset, as a set."""
    if token_ids is None:
        return set()
    return {token_ids} if isinstance(token_ids, int) else set(token_ids)


def remote_code(source: str) -> dict[str, str]:
    """The classes a model brings in its own code (config.json's `auto_map`), by Auto class."""
    try:
        config, _ = PretrainedConfig.get_config_dict(source)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError, JSON errors
        raise ModelError(load_failure(source, "its config.json", error)) from error
    auto_map = config.get("auto_map") or {}
    return {name: str(value) for name, value in auto_map.items()}


def _load_config(
    source: str, own_code: dict[str, str], trust_remote_code: bool
) -> PretrainedConfig:
    if own_code and not trust_remote_code:
        raise ModelError(
            f"Model {source} runs code of its own ({', '.join(sorted(set(own_code.values())))}), "
            f"which mtfleet loads only when told to trust it with --trust-remote-code."
        )
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError, JSON errors
        raise ModelError(load_failure(source, "its config.json", error)) from error
    seq2seq = (
        config.model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
        or "AutoModelForSeq2SeqLM" in own_code
    )
    if not seq2seq:
        raise ModelError(
            f"Model {source} is a {config.model_type} model, not a sequence-to-sequence "
            f"translation model such as marian, m2m_100 or nllb."
        )
    return config


def _load_tokenizer(source: str, trust_remote_code: bool = False) -> Any:
    try:
        with warnings.catch_warnings():
            # MarianTokenizer recommends sacremoses for a normalizer that tokenizing never calls
            warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
            return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception as error:  # a missing or corrupt vocabulary fails in many ways
        raise ModelError(load_failure(source, "its tokenizer", error)) from error


def _looks_like_a_path(model: str) -> bool:
    # a hub id is "name" or "owner/name"; anything else can only be meant as a directory
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


def _model_positions(config: PretrainedConfig) -> int:
    for attribute in ("max_position_embeddings", "n_positions"):
        positions = getattr(config, attribute, None)
        if isinstance(positions, int) and positions > 0:
            return positions
    return DEFAULT_POSITIONS


def _tokenizer_limit(tokenizer: Any, default: int) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < UNSET_MODEL_MAX_LENGTH:
        return limit
    return default


# --- language codes


def _some(codes: Sequence[str] | dict[str, int], count: int = 8) -> str:
    names = list(codes)
    return ", ".join(names[:count]) + (", ..." if len(names) > count else "")


def _language_codes(tokenizer: Any) -> dict[str, int]:
    """Language code -> token id: M2M100's `en` -> `__en__`, or NLLB's `eng_Latn` itself."""
    mapping = getattr(tokenizer, "lang_code_to_id", None)
    if mapping:
        return dict(mapping)
    return {
        token: tokenizer.convert_tokens_to_ids(token)
        for token in tokenizer.all_special_tokens
        if LANGUAGE_TOKEN.fullmatch(token)
    }


class TokenizedEngine:
    """What every engine starts with: its settings checked and its model's tokenizer side, and the
    Engine protocol's counting and translating around the engine's own `generate_token_ids`."""

    name: str
    compute_types: tuple[str, ...]

    def __init__(
        self,
        model: str,
        *,
        beam: int,
        compute_type: str,
        src_lang: str | None,
        tgt_lang: str | None,
        max_batch_tokens: int,
        max_length_factor: float,
        max_length_offset: int,
        trust_remote_code: bool = False,
    ) -> None:
        if beam < 1:
            raise ModelError(f"Beam size must be at least 1, not {beam}.")
        if compute_type not in self.compute_types:
            raise ModelError(
                f"Compute type {compute_type!r} is not available to the {self.name} engine; "
                f"it takes {', '.join(self.compute_types)}."
            )
        self.tokens = ModelTokenizer(
            model,
            src_lang=src_lang,
            tgt_lang=tgt_lang,
            max_batch_tokens=max_batch_tokens,
            max_length_factor=max_length_factor,
            max_length_offset=max_length_offset,
            trust_remote_code=trust_remote_code,
        )
        self.trust_remote_code = trust_remote_code
        self.tokenizer = self.tokens.tokenizer
        # the model's own codes: `mr` given to NLLB is mar_Deva
        self.src_lang, self.tgt_lang = self.tokens.src_lang, self.tokens.tgt_lang
        self.max_input_tokens = self.tokens.max_input_tokens
        self.beam = beam

    def for_target(self, tgt_lang: str | None) -> TokenizedEngine:
        """This engine translating into `tgt_lang`: the model's weights are shared, not loaded
        again. A code family's target is only the decoder's first token (`decodes_target`)."""
        other = copy.copy(self)
        other.tokens = self.tokens.for_target(self.src_lang, tgt_lang)
        other.tgt_lang = other.tokens.tgt_lang
        return other

    @property
    def decodes_target(self) -> bool:
        """The target language is chosen in the decoder alone (M2M100, NLLB, mBART-50), so one
        encoding of a source serves every target."""
        return self.tokens.languages.mark == "code"

    # --- the Engine protocol

    @property
    def max_batch_tokens(self) -> int:
        return self.tokens.max_batch_tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, tokens: int) -> None:
        self.tokens.max_batch_tokens = tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.tokens.count_tokens(texts)

    def translate(self, segments: Sequence[str]) -> list[str]:
        if not segments:
            return []
        return self.tokens.decode(self.generate_token_ids(segments))

    def generate_token_ids(self, segments: Sequence[str]) -> list[list[int]]:
        """Generated token ids per segment, in order: up to and including EOS, no padding."""
        raise NotImplementedError
