"""The Engine protocol: what a translator needs from a model, and nothing of Ray; and the cancel
check its batch loops make, so a translator whose lease is gone stops between two batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
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


class Cancelled(Exception):
    """The translator's lease on the shard is gone (another translator completed it, or it
    expired): the translation stops between two batches. Neither a failure nor a fault."""


@dataclass
class _Guard:
    cancel: threading.Event
    slow_factor: float
    batch_started: float


_guard: ContextVar[_Guard | None] = ContextVar("mtfleet_cancel_guard", default=None)


@contextmanager
def cancellable(cancel: threading.Event, slow_factor: float = 1.0) -> Iterator[None]:
    """Engine calls made inside stop with `Cancelled` at the batch after `cancel` is set.

    `slow_factor` above 1 is a test aid: each batch then takes that many times its own time (a
    deliberately slow translator), waiting on `cancel` so a slow translator still stops at once.
    """
    token = _guard.set(_Guard(cancel, slow_factor, time.monotonic()))
    try:
        yield
    finally:
        _guard.reset(token)


def check_cancelled() -> None:
    """Called by the engines after each batch: raises `Cancelled` once the lease is gone."""
    guard = _guard.get()
    if guard is None:
        return
    if guard.slow_factor > 1:
        guard.cancel.wait((guard.slow_factor - 1) * (time.monotonic() - guard.batch_started))
    if guard.cancel.is_set():
        raise Cancelled("the lease on this shard is gone")
    guard.batch_started = time.monotonic()
