"""What each model family's tests and bench compare the engines with: the family's languages and
its model card's own call of `generate`, one segment at a time."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer


@dataclass(frozen=True)
class Family:
    """A family's tiny model as a job would use it, and how its model card marks the target."""

    src_lang: str | None
    tgt_lang: str | None
    tokenizer_class: str
    target_mark: str | None
    """The target's token: forced first (`forced_bos`), else put before the source."""
    forced_bos: bool = False
    settings: tuple[tuple[str, object], ...] = ()
    """What a job adds for it: `--trust-remote-code`, `--preprocessor`."""


FAMILIES = {
    "marian": Family(None, None, "MarianTokenizer", None),
    "marian-multi": Family(None, "fr", "MarianTokenizer", ">>fr<<"),
    "m2m100": Family("en", "de", "M2M100Tokenizer", "__de__", forced_bos=True),
    "nllb": Family("eng_Latn", "mar_Deva", "NllbTokenizer", "mar_Deva", forced_bos=True),
    "mbart50": Family("en_XX", "mr_IN", "MBart50Tokenizer", "mr_IN", forced_bos=True),
    "t5": Family("en", "de", "T5Tokenizer", "<2de>"),
    "indictrans2": Family(
        "eng_Latn",
        "mar_Deva",
        "MarianTokenizer",
        None,
        settings=(("trust_remote_code", True), ("preprocessor", "indictrans")),
    ),
}


def generate_alone(
    model_dir: Path,
    family: str,
    segments: Sequence[str],
    *,
    max_length_factor: float,
    max_length_offset: int,
) -> list[list[int]]:
    """Each segment through a freshly loaded model's own `generate`, as its model card calls it,
    alone, greedy, with `max_new_tokens` at the engine's cap: the token ids after the decoder's
    start token, up to and including EOS."""
    spec = FAMILIES[family]
    remote = dict(spec.settings).get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, trust_remote_code=remote)
    settings: dict[str, object] = {"num_beams": 1, "do_sample": False}
    tag: list[int] = []
    if spec.forced_bos:
        tokenizer.src_lang = spec.src_lang
        settings["forced_bos_token_id"] = tokenizer.convert_tokens_to_ids(spec.target_mark)
    elif spec.target_mark:
        # the documented `<2xx> text`: the tag's token, then the text's
        tag = [tokenizer.convert_tokens_to_ids(spec.target_mark)]
    outputs = []
    for segment in segments:
        ids = torch.tensor([tag + tokenizer(segment)["input_ids"]])
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        cap = math.ceil(max_length_factor * inputs["input_ids"].shape[1] + max_length_offset)
        sequence = model.generate(**inputs, max_new_tokens=cap, **settings)[0]
        outputs.append(sequence[1:].tolist())
    return outputs
