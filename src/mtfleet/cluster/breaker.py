"""The failure breaker: a systematic error told apart from poison rows, before bisection runs.

A poison row fails the shards that hold it, and bisection narrows it down: those shards nest in one
another. An error of the engine or the model (a wrong translation count, a device assert, a broken
tokenizer) fails every shard, each of other rows. So when shards of disjoint row ranges keep failing
with the same kind of error and none is done in between, no row explains it: the job stops with one
sentence instead of bisecting every shard down to single rows (which at the default `keep-source`
would end `succeeded` with source text everywhere). Plain and Ray-free: the coordinator feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Shards of disjoint row ranges failing with the same kind of error, none done in between.
DISJOINT_FAILURES_TO_STOP = 8


def error_kind(error: str) -> str:
    """The kind of a failure's error: its exception class, as the translator names it first."""
    head, colon, _ = error.partition(":")
    return head.strip() if colon and head.strip().isidentifier() else error.strip()[:80]


@dataclass
class FailureBreaker:
    """Counts, per kind of error, the disjoint row ranges that failed since a shard was done."""

    disjoint_to_stop: int = DISJOINT_FAILURES_TO_STOP
    _failing: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def failed(self, row_start: int, row_end: int, error: str) -> str | None:
        """Records a shard's failure; the sentence that stops the job when no row explains the
        failures any more, else None."""
        ranges = self._failing.setdefault(error_kind(error), [])
        if not any(start < row_end and row_start < end for start, end in ranges):
            ranges.append((row_start, row_end))
        if len(ranges) < self.disjoint_to_stop:
            return None
        return (
            f"{len(ranges)} shards of different rows failed in a row with the same error and none "
            f"was done, so the engine or model is broken, not a row; nothing was bisected. "
            f"The error: {error.strip().rstrip('.')}."
        )

    def done(self) -> None:
        """A shard was done: the engine works, and failures count afresh."""
        self._failing.clear()
