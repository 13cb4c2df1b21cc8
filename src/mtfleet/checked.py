"""An engine whose translations are checked, and a flagged one translated once more, more carefully.

The retry cuts a segment at its clauses (or, for a single clause, decodes with a beam of
RETRY_BEAM where the engine has a beam) and keeps whichever of the two translations the same checks
flag less; a tie keeps the first. Everything depends only on the segments of the call, so a shard
translated again flags and keeps exactly what it did before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mtfleet.data.segment import Piece, reassemble, split_clauses
from mtfleet.engines.base import Engine, EngineWrapper
from mtfleet.health import HealthChecks, LengthBand, log_length_ratio, ordered

RETRY_BEAM = 4


class CheckedEngine(EngineWrapper):
    """Wraps an engine: `translate` checks every segment and retries the flagged ones once;
    `flags_of` then maps each segment of the last call to its flags, `band` is its length band."""

    def __init__(self, engine: Engine, checks: HealthChecks) -> None:
        super().__init__(engine)
        self.checks = checks
        self.flags_of: dict[str, list[str]] = {}
        self.band: LengthBand | None = None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.engine.count_tokens(texts)

    def describe(self) -> dict[str, Any]:
        return self.engine.describe()

    def translate(self, segments: Sequence[str]) -> list[str]:
        translations, capped = translate_watching_caps(self.engine, segments)
        ratios = [log_length_ratio(s, t) for s, t in zip(segments, translations, strict=True)]
        self.band = LengthBand.learn(ratios)
        flags = [
            self._flags(source, translation, was_capped)
            for source, translation, was_capped in zip(segments, translations, capped, strict=True)
        ]
        flagged = [index for index, found in enumerate(flags) if found]
        retried = self._retry([segments[index] for index in flagged])
        for index, (translation, was_capped) in zip(flagged, retried, strict=True):
            again = self._flags(segments[index], translation, was_capped)
            if len(again) < len(flags[index]):
                translations[index], flags[index] = translation, again
        self.flags_of = dict(zip(segments, flags, strict=True))
        return translations

    def _flags(self, source: str, translation: str, capped: bool) -> list[str]:
        flags = self.checks.segment_flags(source, translation, capped=capped)
        if self.band is not None and self.band.outside(log_length_ratio(source, translation)):
            flags = ordered([*flags, "length"])
        return flags

    def _retry(self, segments: Sequence[str]) -> list[tuple[str, bool]]:
        """Each segment translated again: by clauses where it has several, else with a wider beam."""
        clauses = {segment: split_clauses(segment) for segment in segments}
        by_clause = [s for s in segments if sum(p.translate for p in clauses[s]) > 1]
        whole = [s for s in segments if s not in set(by_clause)]
        again: dict[str, tuple[str, bool]] = {}
        pieces = [piece.text for s in by_clause for piece in clauses[s] if piece.translate]
        if pieces:
            translated, capped = translate_watching_caps(self.engine, pieces)
            done = iter(zip(translated, capped, strict=True))
            for segment in by_clause:
                parts = [next(done) for piece in clauses[segment] if piece.translate]
                again[segment] = (
                    reassemble(clauses[segment], [text for text, _ in parts]),
                    any(was_capped for _, was_capped in parts),
                )
        if whole:
            with _wider_beam(self.engine):
                translated, capped = translate_watching_caps(self.engine, whole)
            again.update(zip(whole, zip(translated, capped, strict=True), strict=True))
        return [again[segment] for segment in segments]


def translate_watching_caps(
    engine: Engine, segments: Sequence[str]
) -> tuple[list[str], list[bool]]:
    """The engine's translations, and for each whether its decoding stopped at its length cap.

    The hf and ct2 engines decode token ids under a cap per segment (`tokens.output_cap`); an
    output as long as its cap that does not end its sentence was cut there. An engine without
    token ids (the reverse engine) is never cut. (A sentence that ends exactly at its cap, at
    least twice its source's length, counts as cut too.)
    """
    tokens = getattr(engine, "tokens", None)
    generate = getattr(engine, "generate_token_ids", None)
    if not segments:
        return [], []
    if tokens is None or generate is None:
        return list(engine.translate(segments)), [False] * len(segments)
    outputs = generate(segments)
    capped = [
        len(output) >= tokens.output_cap(len(source))
        for source, output in zip(tokens.encode_segments(segments), outputs, strict=True)
    ]
    return tokens.decode(outputs), capped


class _wider_beam:
    """Raises an engine's beam to RETRY_BEAM for a block, where it has one."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.beam = getattr(engine, "beam", None)

    def __enter__(self) -> None:
        if isinstance(self.beam, int):
            self.engine.beam = max(self.beam, RETRY_BEAM)  # type: ignore[attr-defined]

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.beam, int):
            self.engine.beam = self.beam  # type: ignore[attr-defined]


def value_flags(
    checks: HealthChecks,
    pieces: Sequence[Piece],
    source: str,
    translation: str,
    flags_of: dict[str, list[str]],
) -> list[str]:
    """A value's flags: its segments' and those of the whole value."""
    found = [flag for piece in pieces if piece.translate for flag in flags_of.get(piece.text, [])]
    return ordered([*found, *checks.value_flags(source, translation)])
