"""CT2Engine: a Hugging Face translation model run by CTranslate2 (int8 and float16 kernels).

The model directory is converted once, into a cache outside it (`$MTFLEET_CACHE/ct2`, else
`~/.cache/mtfleet/ct2`) keyed by the sha256 of its files and the compute type; a conversion is
written to a scratch directory and renamed into place, so translators converting at once never
see half a model. Tokenizing, languages, batches and output caps are `ModelTokenizer`'s, the HF
engine's own, and the model's generation settings carry over: with float32 weights and greedy
decoding both engines generate the same token ids.

CTranslate2 4.8's TransformersConverter works with transformers 5 (CTranslate2 PR #1999). Its
Marian converter drops the last vocabulary row, where every OPUS-MT model keeps `<pad>`
(transformers PR #19464); a Marian model whose `<pad>` sits elsewhere (mtfleet's own, trained or
tiny, put it at id 2) is converted with its vocabulary whole, its decoder starting from `<pad>`'s
embedding as in transformers, and `<pad>` stays a banned word.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import transformers
from transformers import GenerationConfig

from mtfleet.engines.base import check_cancelled, split_device
from mtfleet.engines.tokens import (
    WEIGHT_FILES,
    ModelTokenizer,
    TokenizedEngine,
    files_sha256,
    load_failure,
    local_dir,
    token_id_set,
)
from mtfleet.errors import ModelError

try:
    import ctranslate2
    import ctranslate2.converters
    from ctranslate2.converters.transformers import _MODEL_LOADERS, BartLoader, MarianMTLoader
except ImportError as missing:
    raise ModelError("The ct2 engine needs CTranslate2: pip install 'mtfleet[ct2]'.") from missing

COMPUTE_TYPES = ("auto", "int8", "int8_float16", "int8_float32", "float16", "float32")
# "auto" takes the fastest type the device has, as CTranslate2's own "auto" does
AUTO_PREFERENCE = {
    "cuda": ("int8_float16", "float16", "float32"),
    "cpu": ("int8", "float32"),
}
CACHE_ENV = "MTFLEET_CACHE"
# Bumped whenever the conversion changes (2: Marian models kept whole decode from <pad>'s embedding).
CONVERSION_RECIPE = 2
# Hugging Face config classes CTranslate2 converts (Marian, M2M100 and NLLB, mBART, T5...)
CONVERTIBLE_CONFIGS = frozenset(_MODEL_LOADERS)
# The converter's loaders are module-wide: one conversion at a time may swap one in.
_CONVERSION_LOCK = threading.Lock()
VOCABULARY_FILES = ("shared_vocabulary.json", "target_vocabulary.json")
# measured on the benchmark model: on a CPU, a call of 16 segments of one limit runs as fast per
# token as a bigger one, and faster than mixing limits (step callbacks, batches that thin out)
CPU_CALL_SEGMENTS = 16
_LIVE_ENGINES: weakref.WeakSet[CT2Engine] = weakref.WeakSet()


class CT2Engine(TokenizedEngine):
    """Translates segments with a CTranslate2 conversion of a Hugging Face seq2seq model."""

    name = "ct2"
    compute_types = tuple(COMPUTE_TYPES)

    def __init__(
        self,
        model: str,
        *,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
        beam: int = 1,
        max_batch_tokens: int = 4096,
        max_length_factor: float = 2.0,
        max_length_offset: int = 10,
        compute_type: str = "auto",
        device: str = "auto",
        threads: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(
            model,
            beam=beam,
            compute_type=compute_type,
            src_lang=src_lang,
            tgt_lang=tgt_lang,
            max_batch_tokens=max_batch_tokens,
            max_length_factor=max_length_factor,
            max_length_offset=max_length_offset,
            trust_remote_code=trust_remote_code,
        )
        self.threads = threads
        self.device, self.device_indices = _pick_device(device)
        self.device_index = self.device_indices[0]
        self.compute_type = _pick_compute_type(compute_type, self.device, self.device_index)
        self.model_dir = local_dir(self.tokens.source, fetch=True)
        self._files_sha256 = files_sha256(self.model_dir)
        self.converted_dir = converted_model(
            self.model_dir, self._files_sha256, self.compute_type, trust_remote_code
        )
        self.translator = _load_translator(
            self.converted_dir, self.device, self.device_indices, self.compute_type, threads
        )
        _LIVE_ENGINES.add(self)
        self._target_ids = _target_vocabulary(self.converted_dir)
        generation = _generation_config(self.tokens.source, self.tokens.config)
        self._eos_token_ids = token_id_set(generation.eos_token_id)
        self._forced_eos_token_ids = token_id_set(generation.forced_eos_token_id)
        self._decoding = self._decoding_options(generation)
        self._target_prefix = self._prefix_of(self.tokens)

    def for_target(self, tgt_lang: str | None) -> CT2Engine:
        other = super().for_target(tgt_lang)
        other._target_prefix = other._prefix_of(other.tokens)
        return other

    def _prefix_of(self, tokens: ModelTokenizer) -> list[str] | None:
        """The decoder's prefix: the target language's token, for the families that force it."""
        forced_bos = tokens.forced_bos_token_id
        return None if forced_bos is None else [self.tokenizer.convert_ids_to_tokens(forced_bos)]

    # --- the Engine protocol (count_tokens and translate are TokenizedEngine's)

    def describe(self) -> dict[str, Any]:
        config = self.tokens.config
        return {
            "engine": self.name,
            "model": self.tokens.model_name,
            "model_dir": str(self.model_dir),
            "model_class": (config.architectures or [config.model_type])[0],
            "family": self.tokens.languages.family,
            "tokenizer_class": type(self.tokenizer).__name__,
            "weights_sha256": {
                name: digest
                for name, digest in self._files_sha256.items()
                if any(Path(name).match(pattern) for pattern in WEIGHT_FILES)
            },
            "converted_dir": str(self.converted_dir),
            "max_input_tokens": self.max_input_tokens,
            "settings": {
                "src_lang": self.src_lang,
                "tgt_lang": self.tgt_lang,
                "beam": self.beam,
                "max_batch_tokens": self.tokens.max_batch_tokens,
                "max_length_factor": self.tokens.max_length_factor,
                "max_length_offset": self.tokens.max_length_offset,
                "device": self._device_name(),
                "compute_type": self.compute_type,
                "threads": self.threads,
                "trust_remote_code": self.trust_remote_code,
            },
            "decoding": self._decoding,
            "versions": {
                "ctranslate2": ctranslate2.__version__,
                "transformers": transformers.__version__,
            },
        }

    # --- generation

    def translate(self, segments: Sequence[str]) -> list[str]:
        return self.translate_watching_caps(segments)[0]

    def translate_watching_caps(self, segments: Sequence[str]) -> tuple[list[str], list[bool]]:
        """The translations, and for each whether its decoding stopped at its length cap (see
        `checked.translate_watching_caps`); each call's outputs are decoded while CTranslate2
        runs the next call (`_generated`), so the decoding, in Python, overlaps the engine's
        work (`translate_texts` on short captions took 0.93-0.96x the time of ct2 called by hand,
        against 1.06-1.08x when it decoded after the last call: DESIGN.md)."""
        texts, capped = [""] * len(segments), [False] * len(segments)
        if not segments:
            return texts, capped
        encoded = self.tokens.encode_segments(segments)
        for pairs, outputs in self._generated(encoded, [self]):
            decoded = self.tokens.decode(outputs)
            for (_, i), text, ids in zip(pairs, decoded, outputs, strict=True):
                texts[i] = text
                capped[i] = self.tokens.stopped_at_cap(encoded[i], ids)
        return texts, capped

    def generate_token_ids(self, segments: Sequence[str]) -> list[list[int]]:
        """Generated token ids per segment, in order: up to and including EOS, no padding.

        Each segment stops at its own `output_cap`, as in the HF engine; CTranslate2 sorts each
        call's segments by length into batches of at most `max_batch_tokens` tokens. It takes
        one length limit per call, so a limit shared by enough segments (`_fills_a_call`) gets a
        call of its own. Greedy decoding puts the others together, neighbouring limits in one
        call, and stops each segment at its own limit from a step callback; beam search, which
        has no callback, gives every limit a call of its own.
        """
        return self.generate_for_targets(segments, [self])[0]

    def generate_for_targets(
        self,
        segments: Sequence[str],
        targets: Sequence[CT2Engine],
        wanted: Sequence[Sequence[bool]] | None = None,
    ) -> list[list[list[int]]]:
        """`generate_token_ids` of each of `targets` (this engine's `for_target` views, of a
        family that `decodes_target`): each call holds its segments once per target, each under
        its target's `target_prefix`. One call with the batch repeated ran 1.2-1.5x faster than a call
        per target, with identical output (bench/multi_target.py). With `wanted`, target n decodes
        only the segments i where `wanted[n][i]` (the others are left empty)."""
        encoded = self.tokens.encode_segments(segments)
        outputs: list[list[list[int]]] = [[[] for _ in encoded] for _ in targets]
        for pairs, generated in self._generated(encoded, targets, wanted):
            for (n, i), ids in zip(pairs, generated, strict=True):
                outputs[n][i] = ids
        return outputs

    def _generated(
        self,
        encoded: list[list[int]],
        targets: Sequence[CT2Engine],
        wanted: Sequence[Sequence[bool]] | None = None,
    ) -> Iterator[tuple[list[tuple[int, int]], list[list[int]]]]:
        """Each call's (target, segment) pairs and their generated ids, call by call. The next
        call is handed to CTranslate2 (asynchronously) before this one's results are taken, so
        whatever the caller does with them runs while the engine works; a lease gone
        (`check_cancelled`) leaves at most that one call running on."""
        wanted = wanted or [[True] * len(encoded) for _ in targets]
        limits = [self._limit(len(ids)) for ids in encoded]
        prefixes = [target._target_prefix for target in targets]
        running: tuple[list[tuple[int, int]], list[int], list[Any]] | None = None
        for members in self._calls(limits, [len(ids) for ids in encoded]):
            pairs = [(n, i) for n in range(len(targets)) for i in members if wanted[n][i]]
            if not pairs:
                continue
            pair_limits = [limits[i] for _, i in pairs]
            results = self.translator.translate_batch(
                [self.tokenizer.convert_ids_to_tokens(encoded[i]) for _, i in pairs],
                target_prefix=[prefixes[n] for n, _ in pairs] if prefixes[0] else None,
                max_batch_size=self.tokens.max_batch_tokens,
                batch_type="tokens",
                beam_size=self.beam,
                # a cap of 1 with EOS forced leaves the decoder nothing to choose
                max_decoding_length=max(1, *pair_limits),
                max_input_length=0,
                return_end_token=True,
                callback=_stop_at(pair_limits) if len(set(pair_limits)) > 1 else None,
                asynchronous=True,
                **self._decoding,
            )
            if running is not None:
                yield self._taken(*running)
            running = (pairs, pair_limits, results)
        if running is not None:
            yield self._taken(*running)

    def _taken(
        self, pairs: list[tuple[int, int]], limits: list[int], results: list[Any]
    ) -> tuple[list[tuple[int, int]], list[list[int]]]:
        """A call's results, waited for, each capped at its limit."""
        generated = [
            self._capped(result.result().hypotheses[0], limit)
            for limit, result in zip(limits, results, strict=True)
        ]
        check_cancelled()
        return pairs, generated

    def _calls(self, limits: list[int], lengths: list[int]) -> list[list[int]]:
        """Segment indices per translate_batch call, longest limits first."""
        by_limit: dict[int, list[int]] = {}
        for i, limit in enumerate(limits):
            by_limit.setdefault(limit, []).append(i)
        groups = [by_limit[limit] for limit in sorted(by_limit, reverse=True)]
        if self.beam > 1:
            return groups
        calls: list[list[int]] = []
        pending: list[int] = []
        for group in groups:
            if self._fills_a_call(group, lengths):
                calls.append(group)
                continue
            pending += group
            if self._fills_a_call(pending, lengths):
                calls.append(pending)
                pending = []
        return [*calls, pending] if pending else calls

    def _fills_a_call(self, members: list[int], lengths: list[int]) -> bool:
        if self.device == "cpu":
            return len(members) >= CPU_CALL_SEGMENTS
        # a GPU's throughput grows with the batch: only a full batch is worth a call of its own
        return sum(lengths[i] for i in members) >= self.tokens.max_batch_tokens

    def _limit(self, source_tokens: int) -> int:
        """Tokens the decoder may choose: the cap, less the last place when EOS is forced there."""
        return self.tokens.output_cap(source_tokens) - bool(self._forced_eos_token_ids)

    def _capped(self, hypothesis: list[str], limit: int) -> list[int]:
        ids = [self._target_ids[token] for token in hypothesis][:limit]
        for position, token in enumerate(ids):
            if token in self._eos_token_ids:
                return ids[: position + 1]
        if self._forced_eos_token_ids:
            # what the model's forced_eos_token_id puts in the last place transformers allows
            ids.append(min(self._forced_eos_token_ids))
        return ids

    def _decoding_options(self, generation: GenerationConfig) -> dict[str, Any]:
        """The model's own generation settings that CTranslate2 has a counterpart for."""
        banned = [
            *(generation.bad_words_ids or []),
            *([t] for t in generation.suppress_tokens or []),
        ]
        suppressed = [self.tokenizer.convert_ids_to_tokens(list(ids)) for ids in banned]
        return {
            "end_token": sorted(self.tokenizer.convert_ids_to_tokens(sorted(self._eos_token_ids))),
            # transformers 5 leaves unset settings None; these are its defaults
            "repetition_penalty": _setting(generation.repetition_penalty, 1.0),
            "no_repeat_ngram_size": _setting(generation.no_repeat_ngram_size, 0),
            "length_penalty": _setting(generation.length_penalty, 1.0),
            # a token the conversion left out of the vocabulary (Marian's <pad>) is never generated
            "suppress_sequences": [
                tokens for tokens in suppressed if all(t in self._target_ids for t in tokens)
            ]
            or None,
        }

    def _device_name(self) -> str:
        if self.device != "cuda":
            return "cpu"
        return "cuda:" + ",".join(str(index) for index in self.device_indices)


def _stop_at(limits: list[int]) -> Callable[[Any], bool]:
    """A greedy-search callback that ends example i after `limits[i]` tokens."""

    def stop(step: Any) -> bool:
        # batch_id is the example's index in the call, whatever batch CTranslate2 put it in
        return step.step + 1 >= limits[step.batch_id]

    return stop


@atexit.register
def _release_translators() -> None:
    # a translator that ran a Python callback aborts the process ("terminate called without an
    # active exception") when it is destroyed after the interpreter; destroy them before it
    for engine in list(_LIVE_ENGINES):
        engine.translator = None


# --- conversion, cached


def cache_root() -> Path:
    """Where converted models live: `$MTFLEET_CACHE/ct2`, else `~/.cache/mtfleet/ct2`."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mtfleet"
    return Path(base).expanduser() / "ct2"


def converted_model(
    model_dir: Path, digests: dict[str, str], compute_type: str, trust_remote_code: bool = False
) -> Path:
    """The CTranslate2 model of `model_dir` at `compute_type`, converted now unless cached."""
    # The converter's version and our recipe are part of the key: a fixed conversion is made anew.
    recipe = {"files": digests, "ctranslate2": ctranslate2.__version__, "recipe": CONVERSION_RECIPE}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    target = cache_root() / f"{key}-{compute_type}"
    if (target / "model.bin").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as error:
        raise ModelError(
            f"The CTranslate2 cache {target.parent} is not writable ({error.strerror}); "
            f"set {CACHE_ENV} to a writable directory."
        ) from error
    try:
        _convert(model_dir, scratch, compute_type, trust_remote_code)
        try:
            os.rename(scratch, target)
        except OSError:
            # another translator renamed the same conversion into place first
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class _MarianWholeVocabularyLoader(MarianMTLoader):
    """MarianMTLoader for a vocabulary whose last token is not `<pad>`: nothing is dropped."""

    def get_model_spec(self, model: Any) -> Any:
        model.config.normalize_before = False
        model.config.normalize_embedding = False
        return BartLoader.get_model_spec(self, model)

    def get_vocabulary(self, model: Any, tokenizer: Any) -> list[str]:
        return BartLoader.get_vocabulary(self, model, tokenizer)

    # The decoder starts from <pad>'s own embedding, as in transformers: trained with tied
    # embeddings, that row is not zero (the demo model's is not: BLEU 32.9 from zeros, 35.0 from it).
    def set_config(self, config: Any, model: Any, tokenizer: Any) -> None:
        super().set_config(config, model, tokenizer)
        config.decoder_start_token = tokenizer.pad_token

    def set_decoder(self, spec: Any, decoder: Any) -> None:
        BartLoader.set_decoder(self, spec, decoder)


def _pad_is_last(model_dir: Path) -> bool:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return (
        config.get("model_type") != "marian"
        or config.get("pad_token_id") == config["vocab_size"] - 1
    )


def _convert(
    model_dir: Path, out_dir: Path, compute_type: str, trust_remote_code: bool = False
) -> None:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
            converter = ctranslate2.converters.TransformersConverter(
                str(model_dir), trust_remote_code=trust_remote_code
            )
            if _pad_is_last(model_dir):
                converter.convert(str(out_dir), quantization=compute_type, force=True)
            else:
                with _CONVERSION_LOCK:
                    _MODEL_LOADERS["MarianConfig"] = _MarianWholeVocabularyLoader()
                    try:
                        converter.convert(str(out_dir), quantization=compute_type, force=True)
                    finally:
                        _MODEL_LOADERS["MarianConfig"] = MarianMTLoader()
    except Exception as error:  # unsupported architectures and layouts fail in many ways
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelError(
            f"Model {model_dir} cannot be converted to CTranslate2 ({reason})."
        ) from error


def _load_translator(
    converted_dir: Path,
    device: str,
    device_indices: list[int],
    compute_type: str,
    threads: int | None,
) -> ctranslate2.Translator:
    try:
        # several GPUs: a replica on each, and the sub-batches of one call run on them at once
        return ctranslate2.Translator(
            str(converted_dir),
            device=device,
            device_index=device_indices if len(device_indices) > 1 else device_indices[0],
            compute_type=compute_type,
            inter_threads=len(device_indices),
            intra_threads=threads or 0,
        )
    except (RuntimeError, ValueError, OSError) as error:
        raise ModelError(
            load_failure(str(converted_dir), "its CTranslate2 model", error)
        ) from error


def _target_vocabulary(converted_dir: Path) -> dict[str, int]:
    """Target token -> id; the ids are the Hugging Face model's, past its tokenizer's end too."""
    for name in VOCABULARY_FILES:
        path = converted_dir / name
        if path.is_file():
            tokens = json.loads(path.read_text(encoding="utf-8"))
            return {token: i for i, token in enumerate(tokens)}
    raise ModelError(f"The CTranslate2 model {converted_dir} has no target vocabulary.")


def _generation_config(source: str, config: transformers.PretrainedConfig) -> GenerationConfig:
    """The model's generation settings, as `from_pretrained` gives them to the HF engine."""
    try:
        return GenerationConfig.from_pretrained(source)
    except OSError:  # no generation_config.json: the settings live in config.json
        return GenerationConfig.from_model_config(config)


def _setting(value: Any, default: Any) -> Any:
    return default if value is None else value


# --- devices


def _pick_device(device: str) -> tuple[str, list[int]]:
    """The kind and the device indices: one, or several GPUs (`cuda:0,1`)."""
    cuda_devices = ctranslate2.get_cuda_device_count()
    if device == "auto":
        return ("cuda", [0]) if cuda_devices else ("cpu", [0])
    try:
        kind, indices = split_device(device)
    except ValueError as error:
        raise ModelError(str(error)) from error
    named = bool(device.partition(":")[2])
    if kind not in ("cpu", "cuda") or (named and not indices) or (kind == "cpu" and named):
        raise ModelError(f"Device {device!r} is not a device name such as cpu, cuda or cuda:0.")
    if kind == "cuda" and max(indices or [0]) >= cuda_devices:
        raise ModelError(
            f"Device {device!r} is not on this machine, which has {cuda_devices} CUDA devices."
        )
    return kind, indices or [0]


def _pick_compute_type(compute_type: str, device: str, device_index: int) -> str:
    supported = ctranslate2.get_supported_compute_types(device, device_index)
    if compute_type == "auto":
        return next(kind for kind in AUTO_PREFERENCE[device] if kind in supported)
    if compute_type not in supported:
        raise ModelError(
            f"Compute type {compute_type} is not supported on this machine's {device}; "
            f"it supports {', '.join(sorted(supported))}."
        )
    return compute_type
