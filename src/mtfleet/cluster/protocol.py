"""What a coordinator and its translators say to each other, typed: one module, read by both.

A translator asks `lease` and gets a `LeaseReply`: a shard to translate (`Lease`), `wait` (the
job is paused, planned, or every shard is leased) or `stop` (the job ended, or this translator is
no longer one of its fleet). Its other calls (`heartbeat`, `complete`, `fail`, `fault`) name the
lease by its shard's index and its lease id. A completion carries the shard's `ShardStats` (kept
with the shard in the store, as JSON) and what the translation memory is to keep of it
(`KeptSegments`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    TRANSLATE = "translate"
    WAIT = "wait"
    STOP = "stop"


@dataclass(frozen=True)
class Lease:
    """A shard leased to one translator: its rows, under which lease id. A backup lease runs
    beside the shard's primary lease; the first of the two to complete wins the shard."""

    index: int
    lease_id: str
    row_start: int
    row_end: int
    backup: bool = False


@dataclass(frozen=True)
class LeaseReply:
    action: Action
    lease: Lease | None = None

    @classmethod
    def translate(cls, lease: Lease) -> LeaseReply:
        return cls(Action.TRANSLATE, lease)


WAIT = LeaseReply(Action.WAIT)
STOP = LeaseReply(Action.STOP)


@dataclass(frozen=True)
class SegmentCounts:
    """What translating a shard's units into one target language counted."""

    segments: int = 0
    segments_unique: int = 0
    segments_from_memory: int = 0
    units_skipped_target_language: int = 0
    source_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> SegmentCounts:
        """The counts in `stored` (a shard's stats, or one target's); a count missing is 0."""
        return cls(**{field.name: int(stored.get(field.name, 0)) for field in fields(cls)})


# the names of the counts, as a shard's stats hold them beside its rows and units
COUNT_NAMES = tuple(field.name for field in fields(SegmentCounts))


@dataclass(frozen=True)
class ShardStats:
    """What a shard's completion says of it: its rows and units, what translating them counted,
    who translated them, how long it took, with which engine. Stored with the shard as the JSON
    object that `to_json` writes and `from_json` reads (stores written before this type read the
    same), in the order and with the names a completion has always had."""

    rows: int = 0
    units: int = 0
    # units filled from the translation memory at planning, not translated
    units_from_memory: int = 0
    # None: no engine ran (every unit of the shard was filled at planning)
    counts: SegmentCounts | None = None
    node_id: str | None = None
    worker_id: str | None = None
    elapsed_s: float | None = None
    # the engine's signature (`Engine.describe`): the manifest lists each one the job ran
    engine: dict[str, Any] | None = None
    # by target language, when the job translates into several (`counts` is the first one's)
    targets: dict[str, SegmentCounts] | None = None

    @property
    def segments(self) -> int:
        return self.counts.segments if self.counts is not None else 0

    def counts_for(self, target: str | None) -> SegmentCounts:
        """The shard's counts in language `target`: its own when the job has several targets."""
        if self.targets is not None and target in self.targets:
            return self.targets[target]
        return self.counts or SegmentCounts()

    def recalled(self) -> int:
        """Segments taken from the translation memory, in all the shard's target languages."""
        if self.targets:
            return sum(counts.segments_from_memory for counts in self.targets.values())
        return self.counts_for(None).segments_from_memory

    def to_json(self) -> dict[str, Any]:
        stored: dict[str, Any] = {
            "rows": self.rows,
            "units": self.units,
            "units_from_memory": self.units_from_memory,
        }
        if self.counts is not None:
            stored.update(self.counts.to_json())
        told = {
            "node_id": self.node_id,
            "worker_id": self.worker_id,
            "elapsed_s": self.elapsed_s,
            "engine": self.engine,
        }
        stored.update({name: value for name, value in told.items() if value is not None})
        if self.targets is not None:
            stored["targets"] = {
                target: counts.to_json() for target, counts in self.targets.items()
            }
        return stored

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> ShardStats:
        """The stats a shard holds in the store; those of a shard not done yet are empty."""
        targets = stored.get("targets")
        elapsed_s = stored.get("elapsed_s")
        return cls(
            rows=int(stored.get("rows", 0)),
            units=int(stored.get("units", 0)),
            units_from_memory=int(stored.get("units_from_memory", 0)),
            counts=(
                SegmentCounts.from_json(stored)
                if any(name in stored for name in COUNT_NAMES)
                else None
            ),
            node_id=stored.get("node_id"),
            worker_id=stored.get("worker_id"),
            elapsed_s=float(elapsed_s) if elapsed_s is not None else None,
            engine=stored.get("engine"),
            targets=(
                {target: SegmentCounts.from_json(found) for target, found in targets.items()}
                if targets is not None
                else None
            ),
        )


@dataclass(frozen=True)
class KeptSegments:
    """What a completed shard asks the translation memory to keep in one target language, once
    its completion is accepted: each by its text's sha256, its translation and flags."""

    # None: the job's only target language
    tgt_lang: str | None
    # the memory's signature of the language's engine and settings (`memory_signature`)
    key: str
    # segments, as the engine translated them
    entries: dict[str, tuple[str, list[str]]]
    # whole units: what planning fills a later job's units from
    units: dict[str, tuple[str, list[str]]]
