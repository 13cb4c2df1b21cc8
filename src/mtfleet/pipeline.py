"""One batch of texts through an engine: segmented, deduplicated, translated once, reassembled."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mtfleet.checked import CheckedEngine, check_targets, value_flags
from mtfleet.data.segment import NO_PROTECTION, Protection, reassemble, segment_texts
from mtfleet.engines.base import Engine
from mtfleet.engines.targets import TargetEngines
from mtfleet.errors import ModelError
from mtfleet.health import HealthChecks


@dataclass
class TranslationOutcome:
    """The translations (translations[i] belongs to texts[i]) and what it took to make them."""

    translations: list[str]
    segments: int
    """Pieces sent for translation, counting repeats."""
    segments_unique: int
    """Distinct pieces: what was translated, by the engine or the translation memory."""
    source_tokens: int
    """Source tokens of the distinct pieces the engine was given, by its count."""
    flags: list[list[str]] = field(default_factory=list)
    """What the health checks found in each translation (flags[i] for texts[i]), when asked."""
    skipped_target_language: list[bool] = field(default_factory=list)
    """skipped_target_language[i]: texts[i] was already in the target language, and is copied."""
    segments_from_memory: int = 0
    """Distinct pieces taken from the translation memory, never given to the engine."""

    @property
    def units_skipped_target_language(self) -> int:
        """Texts copied because they were already in the target language (`--src-lang auto`)."""
        return sum(self.skipped_target_language)


class SegmentMemory(Protocol):
    """A translation memory for one engine signature: what it holds of some segments (their
    translation and health flags), and what it is to keep."""

    def recall(self, segments: Sequence[str]) -> dict[str, tuple[str, list[str]]]: ...

    def remember(self, entries: Mapping[str, tuple[str, list[str]]]) -> None: ...


def translate_texts(
    texts: Sequence[str],
    engine: Engine,
    *,
    protection: Protection = NO_PROTECTION,
    checks: HealthChecks | None = None,
    memory: SegmentMemory | None = None,
) -> TranslationOutcome:
    """Translates `texts` with one engine call over their distinct segments; with `checks`, each
    flagged segment is translated once more and the flags of each text are returned. With
    `memory`, the segments it holds are taken from it (their flags too) and only the others are
    given to the engine, whose translations it is then given to keep.

    An engine that detects the source language (`--src-lang auto`) first says which texts are
    already in the target language: those are copied, never sent to the model, and flagged.
    """
    in_target_language = getattr(engine, "in_target_language", None)
    if in_target_language is None or not texts:
        return _translate(texts, engine, protection, checks, memory)
    skipped = in_target_language(texts)
    kept = [i for i, skip in enumerate(skipped) if not skip]
    outcome = _translate([texts[i] for i in kept], engine, protection, checks, memory)
    translations = list(texts)
    flags: list[list[str]] = [[] for _ in texts] if checks is not None else []
    for position, i in enumerate(kept):
        translations[i] = outcome.translations[position]
        if flags:
            flags[i] = outcome.flags[position]
    outcome.translations, outcome.flags = translations, flags
    outcome.skipped_target_language = list(skipped)
    return outcome


def translate_to_targets(
    texts: Sequence[str],
    engines: TargetEngines,
    *,
    protection: Protection = NO_PROTECTION,
    checks: dict[str, HealthChecks | None] | None = None,
    memories: Mapping[str, SegmentMemory] | None = None,
    on_step: Callable[[], None] | None = None,
) -> dict[str, TranslationOutcome]:
    """`translate_texts` into each target language of `engines`, by target, each with its own
    translation memory of `memories` (as a job into it alone). Where one encoding serves every
    target, each memory is asked first and the distinct segments it does not hold are decoded
    for those targets together, a batch encoded once; each target's translation then takes its
    own from them, as if it were translated alone; with health checks, the retries the checks
    ask for are decoded for every target together too (`check_targets`). `on_step` is called
    after that and after each target: a shard's progress, for the watchdog.
    """
    step = on_step or (lambda: None)
    engine_of = engines.engines
    memory_of = dict(memories or {})
    if engines.shared is not None and texts:
        first = engines.engines[engines.targets[0]]
        counts = _RememberedCounts(first.count_tokens)
        pieces = segment_texts(texts, first.max_input_tokens, counts, protection)
        unique = list(
            dict.fromkeys(piece.text for found in pieces for piece in found if piece.translate)
        )
        fresh_of = {}
        for target in engines.targets:
            memory = memory_of.get(target)
            held = memory.recall(unique) if memory is not None and unique else {}
            if memory is not None:
                memory_of[target] = RecalledMemory(memory, held)
            fresh_of[target] = [segment for segment in unique if segment not in held]
        engine_of = engines.prefetched(fresh_of)
        checked = {
            target: CheckedEngine(engine_of[target], health)
            for target, health in (checks or {}).items()
            if health is not None and target in engine_of
        }
        if len(checked) > 1:
            check_targets(engines, checked, {target: fresh_of[target] for target in checked})
            engine_of.update(checked)
        step()
    outcomes = {}
    for target, engine in engine_of.items():
        outcomes[target] = translate_texts(
            texts,
            engine,
            protection=protection,
            checks=(checks or {}).get(target),
            memory=memory_of.get(target),
        )
        step()
    return outcomes


class RecalledMemory:
    """A memory asked once already: recalls answer from what it held then, and what is to be
    kept goes to it."""

    def __init__(self, memory: SegmentMemory, held: Mapping[str, tuple[str, list[str]]]) -> None:
        self.memory, self.held = memory, held

    def recall(self, segments: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
        return {segment: self.held[segment] for segment in segments if segment in self.held}

    def remember(self, entries: Mapping[str, tuple[str, list[str]]]) -> None:
        self.memory.remember(entries)


def _translate(
    texts: Sequence[str],
    engine: Engine,
    protection: Protection,
    checks: HealthChecks | None,
    memory: SegmentMemory | None = None,
) -> TranslationOutcome:
    if isinstance(engine, CheckedEngine):
        checked: CheckedEngine | None = engine
    else:
        checked = CheckedEngine(engine, checks) if checks is not None else None
    engine = checked or engine
    count_tokens = _RememberedCounts(engine.count_tokens)
    pieces_per_text = segment_texts(texts, engine.max_input_tokens, count_tokens, protection)
    segments = [piece.text for pieces in pieces_per_text for piece in pieces if piece.translate]
    unique = list(dict.fromkeys(segments))
    remembered = memory.recall(unique) if memory is not None and unique else {}
    fresh = [segment for segment in unique if segment not in remembered]
    translated = engine.translate(fresh) if fresh else []
    if len(translated) != len(fresh):
        raise ModelError(
            f"Engine {engine.name} returned {len(translated)} translations "
            f"for {len(fresh)} segments."
        )
    translation_of = {segment: text for segment, (text, _) in remembered.items()}
    translation_of.update(zip(fresh, translated, strict=True))
    if checked is not None:
        checked.flags_of.update({segment: flags for segment, (_, flags) in remembered.items()})
    if memory is not None and fresh:
        flags_of = checked.flags_of if checked is not None else {}
        memory.remember({s: (translation_of[s], flags_of.get(s, [])) for s in fresh})
    translations = [
        reassemble(pieces, [translation_of[p.text] for p in pieces if p.translate])
        for pieces in pieces_per_text
    ]
    return TranslationOutcome(
        translations=translations,
        segments=len(segments),
        segments_unique=len(unique),
        source_tokens=sum(count_tokens(fresh)),
        flags=[
            value_flags(checked.checks, *found, checked.flags_of)
            for found in zip(pieces_per_text, texts, translations, strict=True)
        ]
        if checked is not None
        else [],
        skipped_target_language=[False] * len(texts),
        segments_from_memory=len(remembered),
    )


class _RememberedCounts:
    """An engine's token counter that tokenizes each distinct text once, in batches."""

    def __init__(self, count_tokens: Callable[[Sequence[str]], list[int]]) -> None:
        self._count_tokens = count_tokens
        self._counts: dict[str, int] = {}

    def __call__(self, texts: Sequence[str]) -> list[int]:
        missing = [text for text in dict.fromkeys(texts) if text not in self._counts]
        if missing:
            self._counts.update(zip(missing, self._count_tokens(missing), strict=True))
        return [self._counts[text] for text in texts]
