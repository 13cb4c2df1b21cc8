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
