"""Waiting out what passes: exponential backoff with jitter, and a call retried within a budget."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def backoff_s(attempt: int, *, first_s: float, max_s: float) -> float:
    """How long to wait before retry number `attempt` (1, 2, ...): doubling from `first_s` up to
    `max_s`, each wait drawn from its upper half so that many waiters do not retry in step."""
    ceiling = min(max_s, first_s * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def retry(
    call: Callable[[], T],
    *,
    on: type[BaseException] | tuple[type[BaseException], ...],
    budget_s: float,
    first_s: float = 0.05,
    max_s: float = 2.0,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """`call()`, called again while it raises `on` and `budget_s` seconds have not passed; the last
    error is raised. `on_retry(error, wait_s)` hears of each retry before its wait."""
    deadline = time.monotonic() + budget_s
    attempt = 0
    while True:
        try:
            return call()
        except on as error:
            attempt += 1
            wait_s = backoff_s(attempt, first_s=first_s, max_s=max_s)
            if time.monotonic() + wait_s > deadline:
                raise
            if on_retry is not None:
                on_retry(error, wait_s)
            time.sleep(wait_s)
