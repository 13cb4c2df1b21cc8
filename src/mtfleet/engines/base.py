"""The Engine protocol: what a translator needs from a model, and nothing of Ray."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Engine(Protocol):
    """Translates plain-text segments; knows tokens, batching and devices, never rows or fields."""

    name: str
    max_input_tokens: int
    max_batch_tokens: int
    """Source tokens per batch, padding included; a translator halves it when its device runs out
    of memory."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Source-side token counts (special tokens included), one per text."""
        ...

    def translate(self, segments: Sequence[str]) -> list[str]:
        """Translations of `segments`, in the same order and of the same length."""
        ...

    def describe(self) -> dict[str, Any]:
        """Model, settings and versions: the signature a manifest carries."""
        ...


class EngineWrapper:
    """An engine around another (checks, source detection, a preprocessor): its limits, names and
    signature are the inner engine's, and a translator that halves the batch budget after running
    out of memory halves the inner one's."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.name

    @property
    def max_input_tokens(self) -> int:
        return self.engine.max_input_tokens

    @property
    def max_batch_tokens(self) -> int:
        return self.engine.max_batch_tokens

    @max_batch_tokens.setter
    def max_batch_tokens(self, tokens: int) -> None:
        self.engine.max_batch_tokens = tokens


def split_device(device: str) -> tuple[str, list[int]]:
    """`cuda:0,1` -> ("cuda", [0, 1]): a model split over (HF) or replicated on (CTranslate2)
    several GPUs of one node; `cuda:2` -> ("cuda", [2]); `cpu`, `cuda`, `auto` -> (kind, [])."""
    kind, _, indices = device.partition(":")
    if not indices or "," not in indices:
        return kind, [int(indices)] if indices.isdigit() else []
    parts = indices.split(",")
    if kind != "cuda" or not all(part.isdigit() for part in parts):
        raise ValueError(f"Device {device!r} is not a device name such as cuda:0,1.")
    return kind, [int(part) for part in parts]
