"""The reverse engine: a model-free dry run (`--engine reverse`) that shows exactly what a job
would send to a model and how it is put back; deterministic and instant, the tests' oracle."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

# Tests of a cluster under disturbance set this so a job lasts long enough to be disturbed.
DELAY_VARIABLE = "MTFLEET_REVERSE_DELAY_S"
# Tests of poison rows set this: a segment containing its value makes translate raise.
FAIL_ON_VARIABLE = "MTFLEET_REVERSE_FAIL_ON"


class ReverseEngine:
    """Reverses each segment's characters as its translation.

    Tokens are whitespace-separated words plus one (an end-of-sentence token). With `record_calls`
    (tests), `calls` holds the segments of each `translate` call, one list per call; a job's engine
    (`load_engine`) records none, as it would keep every segment of the job. A translate call sleeps `delay_s`
    (default: the MTFLEET_REVERSE_DELAY_S environment variable, else 0), and raises on any segment
    that contains `fail_on` (default: the MTFLEET_REVERSE_FAIL_ON environment variable, else never).
    """

    name = "reverse"

    def __init__(
        self,
        max_input_tokens: int = 128,
        delay_s: float | None = None,
        fail_on: str | None = None,
        record_calls: bool = True,
        **settings: Any,
    ) -> None:
        self.max_input_tokens = max_input_tokens
        self.delay_s = float(os.environ.get(DELAY_VARIABLE, 0)) if delay_s is None else delay_s
        self.fail_on = os.environ.get(FAIL_ON_VARIABLE) if fail_on is None else fail_on
        # What a real engine would be given (languages, beam...), echoed by describe().
        self.settings = settings
        self.record_calls = record_calls
        self.calls: list[list[str]] = []

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) + 1 for text in texts]

    def translate(self, segments: Sequence[str]) -> list[str]:
        if self.record_calls:
            self.calls.append(list(segments))
        if self.delay_s:
            time.sleep(self.delay_s)
        for segment in segments:
            if self.fail_on and self.fail_on in segment:
                raise ValueError(f"the reverse engine refuses {segment!r}")
        return [segment[::-1] for segment in segments]

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": "reverse",
            "max_input_tokens": self.max_input_tokens,
            "settings": self.settings,
        }
