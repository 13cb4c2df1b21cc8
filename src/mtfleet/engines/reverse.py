"""The reverse engine: a model-free dry run (`--engine reverse`) that shows exactly what a job
would send to a model and how it is put back; deterministic and instant, the tests' oracle.

Tests switch on its delays, failures, hangs, out-of-memory errors and injected faults through
the environment variables below, so that a job's translators, in other processes, do it too."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from mtfleet.engines.base import check_cancelled

# Tests of a cluster under disturbance set this so a job lasts long enough to be disturbed.
DELAY_VARIABLE = "MTFLEET_REVERSE_DELAY_S"
# Tests of poison rows set this: a segment containing its value makes translate raise.
FAIL_ON_VARIABLE = "MTFLEET_REVERSE_FAIL_ON"
# Tests of the watchdog set this: a segment containing its value makes translate hang for good.
HANG_ON_VARIABLE = "MTFLEET_REVERSE_HANG_ON"
# Tests of the watchdog set this: a segment containing its value makes translate spin for good
# in a regular expression that backtracks, holding the GIL: no other thread of the process runs.
SPIN_ON_VARIABLE = "MTFLEET_REVERSE_SPIN_ON"
# Tests of a device out of memory set this: a batch of more tokens raises OutOfMemoryError.
OOM_ABOVE_VARIABLE = "MTFLEET_REVERSE_OOM_ABOVE"
# Tests of the health checks set these: faults (comma-separated, of FAULTS) injected into one
# segment in FAULT_EVERY, chosen by the segment's text (see engines/faulty.py).
FAULTS_VARIABLE = "MTFLEET_REVERSE_FAULTS"
FAULT_EVERY_VARIABLE = "MTFLEET_REVERSE_FAULT_EVERY"


class OutOfMemoryError(RuntimeError):
    """Named as torch's CUDA out-of-memory error, which translators know by its name."""


def injects_faults() -> bool:
    """A test set this process's reverse engines to slow, fail, hang, spin, run out of memory or
    inject faults: such a test wants every unit to reach the engine, never the memory's answer."""
    return any(
        os.environ.get(name)
        for name in (
            DELAY_VARIABLE,
            FAIL_ON_VARIABLE,
            HANG_ON_VARIABLE,
            SPIN_ON_VARIABLE,
            OOM_ABOVE_VARIABLE,
            FAULTS_VARIABLE,
        )
    )


class ReverseEngine:
    """Reverses each segment's characters as its translation; records every segment it is sent.

    Tokens are whitespace-separated words plus one (an end-of-sentence token). `calls` holds the
    segments of each `translate` call, one list per call. A translate call sleeps `delay_s`
    (default: the MTFLEET_REVERSE_DELAY_S environment variable, else 0), raises on any segment
    that contains `fail_on` (default: MTFLEET_REVERSE_FAIL_ON, else never), hangs for good on one
    that contains `hang_on` (MTFLEET_REVERSE_HANG_ON), spins holding the GIL on one that contains
    MTFLEET_REVERSE_SPIN_ON's value, and raises OutOfMemoryError when one of its
    batches (segments in order, at most `max_batch_tokens` tokens each) holds more than
    `oom_above` tokens (MTFLEET_REVERSE_OOM_ABOVE), as a device with that much memory would.
    With MTFLEET_REVERSE_FAULTS set it reverses the order of words instead (a clean "translation"
    that keeps every number and placeholder) and injects those faults into some segments.
    """

    name = "reverse"
    health_checked = False
    """Reversed characters are no translation: the health checks leave them alone."""

    def __init__(
        self,
        max_input_tokens: int = 128,
        delay_s: float | None = None,
        fail_on: str | None = None,
        max_batch_tokens: int = 8192,
        hang_on: str | None = None,
        oom_above: int | None = None,
        record_calls: bool = True,
        **settings: Any,
    ) -> None:
        self.max_input_tokens = max_input_tokens
        self.max_batch_tokens = max_batch_tokens
        self.delay_s = float(os.environ.get(DELAY_VARIABLE, 0)) if delay_s is None else delay_s
        self.fail_on = os.environ.get(FAIL_ON_VARIABLE) if fail_on is None else fail_on
        self.hang_on = os.environ.get(HANG_ON_VARIABLE) if hang_on is None else hang_on
        self.spin_on = os.environ.get(SPIN_ON_VARIABLE)
        oom_env = os.environ.get(OOM_ABOVE_VARIABLE)
        self.oom_above = int(oom_env) if oom_above is None and oom_env else oom_above
        # What a real engine would be given (languages, beam...), echoed by describe().
        self.settings = settings
        # Tests read what each call was sent; a job's translator keeps nothing (it grew by 340 MB
        # over a million rows).
        self.record_calls = record_calls
        self.calls: list[list[str]] = []
        faults = os.environ.get(FAULTS_VARIABLE)
        self.faults = None
        if faults:
            # a test's switch: only a test imports the injector
            from mtfleet.engines.faulty import FaultInjector

            self.faults = FaultInjector(
                faults.split(","), int(os.environ.get(FAULT_EVERY_VARIABLE, 10))
            )
        self.health_checked = self.faults is not None
        # a test that slows, fails, hangs or starves the engine wants every segment to reach it:
        # the translation memory would answer instead
        self.memorable = not (
            self.delay_s
            or self.fail_on
            or self.hang_on
            or self.spin_on
            or self.oom_above is not None
            or self.faults is not None
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(text.split()) + 1 for text in texts]

    def translate(self, segments: Sequence[str]) -> list[str]:
        if self.record_calls:
            self.calls.append(list(segments))
        if self.delay_s:
            time.sleep(self.delay_s)
        # a call is one batch: a cancelled or slowed translator stops or waits here
        check_cancelled()
        for segment in segments:
            if self.fail_on and self.fail_on in segment:
                raise ValueError(f"the reverse engine refuses {segment!r}")
            if self.hang_on and self.hang_on in segment:
                threading.Event().wait()
            if self.spin_on and self.spin_on in segment:
                # 2^60 steps of backtracking in C, the GIL held throughout: the process's other
                # threads (its heartbeat) never run again
                re.match(r"(a+)+$", "a" * 60 + "!")
        if self.oom_above is not None:
            for batch_tokens in self._batch_tokens(segments):
                if batch_tokens > self.oom_above:
                    raise OutOfMemoryError(
                        f"a batch of {batch_tokens} tokens does not fit in {self.oom_above}"
                    )
        if self.faults is not None:
            return [self.faults.translate(segment) for segment in segments]
        return [segment[::-1] for segment in segments]

    def _batch_tokens(self, segments: Sequence[str]) -> Iterator[int]:
        """The tokens of each batch: segments in order, a batch closed before it would pass
        `max_batch_tokens` (a segment bigger than that is a batch of its own)."""
        batch = 0
        for tokens in self.count_tokens(segments):
            if batch and batch + tokens > self.max_batch_tokens:
                yield batch
                batch = 0
            batch += tokens
        if batch:
            yield batch

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": "reverse",
            "max_input_tokens": self.max_input_tokens,
            "settings": self.settings,
        }
