"""Faults machine translation makes, injected on purpose: what the health checks must catch.

A segment is faulty when the crc32 of its text is a multiple of `every`; its fault is one of those
that apply to it (numbers where it has them, else the others), picked by the same hash. The rest
are "translated" by reversing their words, which keeps every number. So which segments are
faulty, and how, is known from the text alone.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

# No "placeholders" fault: segmentation takes placeholders out of a sentence (holes) before any
# engine sees it, so an engine cannot drop them.
FAULTS = ("loop", "drop", "copy", "numbers", "language", "stutter")
# What each fault should be caught as.
CAUGHT_AS = {
    "loop": "loop",
    "drop": "length",
    "copy": "untranslated",
    "numbers": "numbers",
    "language": "language",
    "stutter": "loop",
}
# The wrong language: French, whatever the target (the bench's target is German).
WRONG_LANGUAGE = "Le chat dort tranquillement sur le canapé pendant que les enfants jouent dehors."

_LONG_WORD = re.compile(r"[^\W\d_]{4,}")


class FaultInjector:
    def __init__(self, faults: Sequence[str], every: int = 10) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; there are {', '.join(FAULTS)}")
        self.faults = tuple(faults)
        self.every = every

    def fault_of(self, segment: str) -> str | None:
        """The fault this segment gets, or None."""
        digest = zlib.crc32(segment.encode())
        if digest % self.every:
            return None
        # a segment with numbers gets a fault of those: they are rare in text
        if "numbers" in self.faults and re.search(r"\d", segment):
            return "numbers"
        applicable = [
            fault
            for fault in self.faults
            if fault != "numbers"
            and (fault not in ("loop", "drop") or len(segment.split()) >= 3)
            and (fault != "stutter" or _LONG_WORD.search(segment))
        ]
        return applicable[digest // self.every % len(applicable)] if applicable else None

    def translate(self, segment: str) -> str:
        clean = " ".join(reversed(segment.split()))
        fault = self.fault_of(segment)
        if fault == "loop":
            words = clean.split()
            return " ".join([*words, *(words[:2] * 5)])
        if fault == "drop":
            return clean.split()[0]
        if fault == "copy":
            return segment
        if fault == "numbers":
            return re.sub(r"\d", lambda digit: str((int(digit.group()) + 1) % 10), clean)
        if fault == "language":
            return WRONG_LANGUAGE
        if fault == "stutter":
            # a word's last letters over and over, as small models do: "spielenenenennnnnn"
            return _LONG_WORD.sub(
                lambda word: word.group() + word.group()[-2:] * 3 + word.group()[-1] * 5, clean, 1
            )
        return clean
