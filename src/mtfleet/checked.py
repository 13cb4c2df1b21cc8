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
from mtfleet.engines.targets import TargetEngines
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
        self._answered: tuple[list[str], list[str]] | None = None

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.engine.count_tokens(texts)

    def describe(self) -> dict[str, Any]:
        return self.engine.describe()

    def answer(self, segments: Sequence[str], translations: list[str]) -> None:
        """Hold the checked translations of `segments`, checked beside other targets' (see
        `check_targets`): the call that asks for exactly those segments takes them."""
        self._answered = (list(segments), translations)

    def translate(self, segments: Sequence[str]) -> list[str]:
        if self._answered is not None and list(segments) == self._answered[0]:
            return self._answered[1]
        checking = self.check(segments, *translate_watching_caps(self.engine, segments))
        by_clause = translate_watching_caps(self.engine, checking.by_clause)
        with _wider_beam(self.engine):
            whole = translate_watching_caps(self.engine, checking.whole)
        return checking.finish(by_clause, whole)

    def check(
        self, segments: Sequence[str], translations: list[str], capped: list[bool]
    ) -> Checking:
        """The check of one call's first translations: its flags and the retries they ask for."""
        ratios = [log_length_ratio(s, t) for s, t in zip(segments, translations, strict=True)]
        self.band = LengthBand.learn(ratios)
        flags = [
            self._flags(source, translation, was_capped)
            for source, translation, was_capped in zip(segments, translations, capped, strict=True)
        ]
        return Checking(self, list(segments), translations, flags)

    def _flags(self, source: str, translation: str, capped: bool) -> list[str]:
        flags = self.checks.segment_flags(source, translation, capped=capped)
        if self.band is not None and self.band.outside(log_length_ratio(source, translation)):
            flags = ordered([*flags, "length"])
        return flags


class Checking:
    """One call's check between its first translations and its retries. Each flagged segment is
    translated again: by clauses where it has several (`by_clause`, the clauses to translate),
    else with a wider beam (`whole`); `finish` takes those translations, each with whether it
    stopped at its cap, and keeps whichever of the two a segment's checks flag less."""

    def __init__(
        self,
        checked: CheckedEngine,
        segments: list[str],
        translations: list[str],
        flags: list[list[str]],
    ) -> None:
        self.checked, self.segments = checked, segments
        self.translations, self.flags = translations, flags
        self.flagged = [index for index, found in enumerate(flags) if found]
        retried = list(dict.fromkeys(segments[index] for index in self.flagged))
        self.clauses = {segment: split_clauses(segment) for segment in retried}
        several = [s for s in retried if sum(p.translate for p in self.clauses[s]) > 1]
        self.by_clause = [p.text for s in several for p in self.clauses[s] if p.translate]
        cut = set(several)
        self.whole = [s for s in retried if s not in cut]
        self._several = several

    def finish(
        self, by_clause: tuple[list[str], list[bool]], whole: tuple[list[str], list[bool]]
    ) -> list[str]:
        """The call's translations, each flagged one replaced by its retry where that is flagged
        less; the checked engine's `flags_of` is set to the flags kept."""
        again = dict(zip(self.whole, zip(*whole, strict=True), strict=True))
        done = iter(zip(*by_clause, strict=True))
        for segment in self._several:
            parts = [next(done) for piece in self.clauses[segment] if piece.translate]
            again[segment] = (
                reassemble(self.clauses[segment], [text for text, _ in parts]),
                any(was_capped for _, was_capped in parts),
            )
        translations, flags = list(self.translations), list(self.flags)
        for index in self.flagged:
            translation, was_capped = again[self.segments[index]]
            kept = self.checked._flags(self.segments[index], translation, was_capped)
            if len(kept) < len(flags[index]):
                translations[index], flags[index] = translation, kept
        self.checked.flags_of = dict(zip(self.segments, flags, strict=True))
        return translations


def translate_watching_caps(
    engine: Engine, segments: Sequence[str]
) -> tuple[list[str], list[bool]]:
    """The engine's translations, and for each whether its decoding stopped at its length cap.

    The hf and ct2 engines decode token ids under a cap per segment (`tokens.output_cap`); an
    output as long as its cap that does not end its sentence was cut there. An engine without
    token ids (the reverse engine) is never cut. (A sentence that ends exactly at its cap, at
    least twice its source's length, counts as cut too.)
    """
    if not segments:
        return [], []
    # the ct2 engine's own, which decodes each call while the next runs
    own = getattr(engine, "translate_watching_caps", None)
    if own is not None:
        return own(segments)  # type: ignore[no-any-return]
    tokens = getattr(engine, "tokens", None)
    generate = getattr(engine, "generate_token_ids", None)
    if tokens is None or generate is None:
        return list(engine.translate(segments)), [False] * len(segments)
    return decoded_watching_caps(tokens, segments, generate(segments))


def decoded_watching_caps(
    tokens: Any, segments: Sequence[str], outputs: list[list[int]]
) -> tuple[list[str], list[bool]]:
    """The texts of the token ids generated for `segments`, and for each whether it stopped at
    its cap (see `translate_watching_caps`)."""
    capped = [
        tokens.stopped_at_cap(source, output)
        for source, output in zip(tokens.encode_segments(segments), outputs, strict=True)
    ]
    return tokens.decode(outputs), capped


def check_targets(
    engines: TargetEngines, checked: dict[str, CheckedEngine], segments: dict[str, list[str]]
) -> None:
    """Checks each target's translations of its `segments` (its checked engine translating
    them), with the retries of every target decoded together: the clauses in one
    `generate_for_targets` call, each segment encoded once however many targets retry it, and
    the wider-beam retries in another. Each checked engine then holds its answer."""
    checkings = {
        target: engine.check(
            segments[target], *translate_watching_caps(engine.engine, segments[target])
        )
        for target, engine in checked.items()
    }
    by_clause = _retries_together(engines, {t: c.by_clause for t, c in checkings.items()})
    with _wider_beam(engines.shared):
        whole = _retries_together(engines, {t: c.whole for t, c in checkings.items()})
    for target, checking in checkings.items():
        translations = checking.finish(by_clause[target], whole[target])
        checked[target].answer(segments[target], translations)


def _retries_together(
    engines: TargetEngines, requests: dict[str, list[str]]
) -> dict[str, tuple[list[str], list[bool]]]:
    union = list(dict.fromkeys(segment for asked in requests.values() for segment in asked))
    if not union:
        return {target: ([], []) for target in requests}
    views = [engines.engines[target] for target in requests]
    asked_sets = [set(asked) for asked in requests.values()]
    wanted = [[segment in asked for segment in union] for asked in asked_sets]
    decoded = engines.shared.generate_for_targets(union, views, wanted)
    answers = {}
    for (target, asked), view, ids in zip(requests.items(), views, decoded, strict=True):
        ids_of = dict(zip(union, ids, strict=True))
        answers[target] = decoded_watching_caps(view.tokens, asked, [ids_of[s] for s in asked])
    return answers


class _wider_beam:
    """Raises an engine's beam to RETRY_BEAM for a block, where it has one."""

    def __init__(self, engine: Any) -> None:
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
