"""What a coordinator and its translators say to each other, typed: one module, read by both.

A translator asks `lease` and gets a `LeaseReply`: a shard to translate (`Lease`), `wait` (the
job is paused, planned, or every shard is leased) or `stop` (the job ended, or this translator is
no longer one of its fleet). Its other calls (`heartbeat`, `complete`, `fail`, `fault`) name the
lease by its shard's index and its lease id.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


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
