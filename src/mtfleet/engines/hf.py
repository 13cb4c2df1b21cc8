"""HFEngine: a Hugging Face sequence-to-sequence model (Marian, M2M100, NLLB, mBART-50...).

Segments are sorted by token length and cut into batches of at most `max_batch_tokens` padded
source tokens. Each segment's output is capped at `ceil(max_length_factor * source tokens +
max_length_offset)` new tokens, enforced row by row inside a batch, so a segment's output is the
same whether it is generated in a batch or alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import transformers
from transformers import (
    AutoModelForSeq2SeqLM,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.modeling_outputs import BaseModelOutput

from mtfleet.engines.base import check_cancelled, split_device
from mtfleet.engines.tokens import (
    DECODER_PROMPT_LENGTH,
    TokenizedEngine,
    load_failure,
    local_dir,
    token_id_set,
    weights_sha256,
)
from mtfleet.errors import ModelError

# "auto" is float16 on a CUDA device and float32 on the CPU; the int8 types are ct2's
COMPUTE_TYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16}


def _rows_new_tokens_and_caps(
    caps: torch.Tensor, input_ids: torch.Tensor
) -> tuple[int, torch.Tensor]:
    # beam search hands over num_beams (or 2 * num_beams) rows per segment, segment-major
    rows_per_segment = input_ids.shape[0] // caps.shape[0]
    row_caps = caps.to(input_ids.device).repeat_interleave(rows_per_segment)
    return input_ids.shape[1] - DECODER_PROMPT_LENGTH, row_caps


class SegmentLengthCap(StoppingCriteria):
    """Finishes row i of a batch at `caps[i]` new tokens, as `max_new_tokens` would alone."""

    def __init__(self, caps: Sequence[int]) -> None:
        self.caps = torch.tensor(caps)

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        new_tokens, row_caps = _rows_new_tokens_and_caps(self.caps, input_ids)
        return new_tokens >= row_caps


class SegmentForcedEos(LogitsProcessor):
    """Forces EOS as row i's `caps[i]`-th new token, as `forced_eos_token_id` does alone."""

    def __init__(self, caps: Sequence[int], eos_token_ids: Sequence[int]) -> None:
        self.caps = torch.tensor(caps)
        self.eos_token_ids = list(eos_token_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        new_tokens, row_caps = _rows_new_tokens_and_caps(self.caps, input_ids)
        last = row_caps == new_tokens + 1
        if not last.any():
            return scores
        forced = scores.clone()
        forced[last] = -math.inf
        for token in self.eos_token_ids:
            forced[last, token] = 0
        return forced


class SegmentForcedBos(LogitsProcessor):
    """Forces row i's first new token to `tokens[i]`, as `forced_bos_token_id` does alone: rows
    of one batch decoded into different target languages."""

    def __init__(self, tokens: Sequence[int]) -> None:
        self.tokens = torch.tensor(tokens)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != DECODER_PROMPT_LENGTH:
            return scores
        tokens = self.tokens.to(scores.device)
        tokens = tokens.repeat_interleave(input_ids.shape[0] // tokens.shape[0])
        forced = torch.full_like(scores, -math.inf)
        forced[torch.arange(tokens.shape[0], device=scores.device), tokens] = 0
        return forced


class HFEngine(TokenizedEngine):
    """Translates segments with a local or hub Hugging Face seq2seq model.

    Tokenizing, languages, batches and output caps are `ModelTokenizer`'s (shared with ct2):
    Marian takes no language codes, except a multi-target model's `>>tgt<<` before each segment;
    M2M100, NLLB and mBART-50 need `src_lang` and `tgt_lang`, and the target language's token is
    forced as the first generated token.
    """

    name = "hf"
    compute_types = tuple(COMPUTE_TYPES)

    def __init__(
        self,
        model: str,
        *,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
        beam: int = 1,
        max_batch_tokens: int = 8192,
        max_length_factor: float = 2.0,
        max_length_offset: int = 10,
        device: str = "auto",
        threads: int | None = None,
        compute_type: str = "auto",
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
        if threads is not None:
            torch.set_num_threads(threads)
        self.devices = _pick_devices(device)
        # inputs go to the first device; a model split over several GPUs passes them along
        self.device = self.devices[0]
        self.dtype = COMPUTE_TYPES[compute_type] or (
            torch.float16 if self.device.type == "cuda" else torch.float32
        )
        self.model = _load_model(self.tokens.source, self.dtype, trust_remote_code, self.devices)
        self.model_dir = local_dir(self.tokens.source)
        self._eos_token_ids = token_id_set(self.model.generation_config.eos_token_id)
        self._forced_eos_token_ids = self._take_over_length_settings()
        self._weights_sha256: dict[str, str] | None = None

    # --- the Engine protocol (count_tokens and translate are TokenizedEngine's)

    def describe(self) -> dict[str, Any]:
        if self._weights_sha256 is None:
            self._weights_sha256 = weights_sha256(self.model_dir)
        return {
            "engine": self.name,
            "model": self.tokens.model_name,
            "model_dir": str(self.model_dir),
            "model_class": type(self.model).__name__,
            "family": self.tokens.languages.family,
            "tokenizer_class": type(self.tokenizer).__name__,
            "weights_sha256": self._weights_sha256,
            "max_input_tokens": self.max_input_tokens,
            "settings": {
                "src_lang": self.src_lang,
                "tgt_lang": self.tgt_lang,
                "beam": self.beam,
                "max_batch_tokens": self.tokens.max_batch_tokens,
                "max_length_factor": self.tokens.max_length_factor,
                "max_length_offset": self.tokens.max_length_offset,
                "device": _device_name(self.devices),
                "dtype": str(self.dtype).removeprefix("torch."),
                "threads": torch.get_num_threads(),
                "trust_remote_code": self.trust_remote_code,
            },
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }

    # --- generation

    def generate_token_ids(self, segments: Sequence[str]) -> list[list[int]]:
        """Generated token ids per segment, in order: up to and including EOS, no padding.

        The same as the model's `generate` on each segment alone with `max_new_tokens` at its
        `output_cap`, because sorting, padding and batching change nothing per segment.
        """
        return self.generate_for_targets(segments, [self])[0]

    def generate_for_targets(
        self,
        segments: Sequence[str],
        targets: Sequence[TokenizedEngine],
        wanted: Sequence[Sequence[bool]] | None = None,
    ) -> list[list[list[int]]]:
        """`generate_token_ids` of each of `targets` (this engine's `for_target` views, of a
        family that `decodes_target`), each batch encoded once and decoded for all targets in one
        `generate`. With `wanted`, target n decodes only the segments i where `wanted[n][i]`
        (the others are left empty): a segment is still encoded once, however many want it."""
        encoded = self.tokens.encode_segments(segments)
        wanted = wanted or [[True] * len(encoded) for _ in targets]
        outputs: list[list[list[int]]] = [[[] for _ in encoded] for _ in targets]
        first_tokens = [target.tokens.forced_bos_token_id for target in targets]
        for batch in self.tokens.batches(encoded):
            pairs = [
                (n, row) for n in range(len(targets)) for row, i in enumerate(batch) if wanted[n][i]
            ]
            if not pairs:
                continue
            generated = self._generate([encoded[i] for i in batch], pairs, first_tokens)
            for (n, row), ids in zip(pairs, generated, strict=True):
                outputs[n][batch[row]] = ids
            check_cancelled()
        return outputs

    def _generate(
        self, rows: list[list[int]], pairs: list[tuple[int, int]], first_tokens: list[int | None]
    ) -> list[list[int]]:
        """The generated ids of each (target, row) of `pairs`, target n's decoding forced to
        start with `first_tokens[n]`. The rows are encoded once; every pair is decoded in one
        `generate`, after its own first token (`SegmentForcedBos`), so each decoding step serves
        every target at once."""
        one_target = len({n for n, _ in pairs}) == 1
        if one_target:
            rows = [rows[row] for _, row in pairs]
            pairs = [(n, position) for position, (n, _) in enumerate(pairs)]
        caps = [self.tokens.output_cap(len(ids)) for ids in rows]
        inputs = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.device)
        row_caps = [caps[row] for _, row in pairs]
        logits_processor = LogitsProcessorList()
        encoded: dict[str, Any] = dict(inputs)
        # the first pair's token as alone, so generate sets up the same processors as for it
        first = first_tokens[pairs[0][0]]
        languages = {} if first is None else {"forced_bos_token_id": first}
        with torch.inference_mode():
            if not one_target:
                hidden = self.model.get_encoder()(**inputs, return_dict=True).last_hidden_state
                picked = torch.tensor([row for _, row in pairs], device=hidden.device)
                encoded = {name: tensor[picked] for name, tensor in inputs.items()}
                encoded["encoder_outputs"] = BaseModelOutput(last_hidden_state=hidden[picked])
                logits_processor.append(SegmentForcedBos([first_tokens[n] for n, _ in pairs]))
            if self._forced_eos_token_ids:
                eos = sorted(self._forced_eos_token_ids)
                logits_processor.append(SegmentForcedEos(row_caps, eos))
            sequences = self.model.generate(
                **encoded,
                **languages,
                num_beams=self.beam,
                do_sample=False,
                num_return_sequences=1,
                max_new_tokens=max(row_caps),
                stopping_criteria=StoppingCriteriaList([SegmentLengthCap(row_caps)]),
                logits_processor=logits_processor,
            )
        return [
            self._trim(row[DECODER_PROMPT_LENGTH:].tolist(), cap)
            for row, cap in zip(sequences, row_caps, strict=True)
        ]

    def _trim(self, ids: list[int], cap: int) -> list[int]:
        # a row that finished early is padded to the batch's longest; it ended at EOS or its cap
        ids = ids[:cap]
        for position, token in enumerate(ids):
            if token in self._eos_token_ids:
                return ids[: position + 1]
        return ids

    def _take_over_length_settings(self) -> set[int]:
        """Hand the model's own length settings to the per-segment cap; return its forced EOS."""
        generation = self.model.generation_config
        forced_eos = token_id_set(generation.forced_eos_token_id)
        # the model would force EOS at the batch's longest cap; SegmentForcedEos does it per row
        generation.forced_eos_token_id = None
        # max_new_tokens replaces it; left set, generate warns on every call
        generation.max_length = None
        return forced_eos


def _pick_devices(device: str) -> list[torch.device]:
    """The device, or the GPUs (`cuda:0,1`) a model is split over with accelerate's device_map."""
    try:
        kind, indices = split_device(device)
    except ValueError as error:
        raise ModelError(str(error)) from error
    if kind == "cuda" and len(indices) > 1:
        return [_pick_device(f"cuda:{index}") for index in indices]
    return [_pick_device(device)]


def _device_name(devices: list[torch.device]) -> str:
    if len(devices) == 1:
        return str(devices[0])
    return "cuda:" + ",".join(str(device.index) for device in devices)


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        picked = torch.device(device)
    except RuntimeError as error:
        raise ModelError(
            f"Device {device!r} is not a device name such as cpu, cuda or cuda:0."
        ) from error
    if picked.type == "cuda" and (picked.index or 0) >= torch.cuda.device_count():
        raise ModelError(
            f"Device {device!r} is not on this machine, which has "
            f"{torch.cuda.device_count()} CUDA devices."
        )
    return picked


def _load_model(
    source: str, dtype: torch.dtype, trust_remote_code: bool, devices: list[torch.device]
) -> PreTrainedModel:
    """The model on `devices`: one, or split layer by layer over several GPUs (accelerate)."""
    if len(devices) == 1:
        split: dict[str, Any] = {}
    else:
        # "balanced" over exactly these GPUs: accelerate places whole layers on each
        memory = {d.index: torch.cuda.get_device_properties(d).total_memory for d in devices}
        split = {"device_map": "balanced", "max_memory": memory}
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=trust_remote_code, **split
        ).eval()
        return model if split else model.to(devices[0])
    except Exception as error:  # missing, truncated or mismatched weights fail in many ways
        raise ModelError(load_failure(source, "its weights", error)) from error
