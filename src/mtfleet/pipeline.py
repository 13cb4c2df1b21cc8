"""One batch of texts through an engine: segmented, deduplicated, translated once, reassembled."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mtfleet.data.segment import reassemble, segment_texts
from mtfleet.engines.base import Engine
from mtfleet.errors import ModelError


@dataclass
class TranslationOutcome:
    """The translations (translations[i] belongs to texts[i]) and what it took to make them."""

    translations: list[str]
    segments: int
    """Pieces sent for translation, counting repeats."""
    segments_unique: int
    """Distinct pieces: what the engine actually translated."""
    source_tokens: int
    """Source tokens of the distinct pieces, by the engine's count."""


def translate_texts(texts: Sequence[str], engine: Engine) -> TranslationOutcome:
    """Translates `texts` with one engine call over their distinct segments."""
    count_tokens = _RememberedCounts(engine.count_tokens)
    pieces_per_text = segment_texts(texts, engine.max_input_tokens, count_tokens)
    segments = [piece.text for pieces in pieces_per_text for piece in pieces if piece.translate]
    unique = list(dict.fromkeys(segments))
    translated = engine.translate(unique) if unique else []
    if len(translated) != len(unique):
        raise ModelError(
            f"Engine {engine.name} returned {len(translated)} translations "
            f"for {len(unique)} segments."
        )
    translation_of = dict(zip(unique, translated, strict=True))
    return TranslationOutcome(
        translations=[
            reassemble(pieces, [translation_of[p.text] for p in pieces if p.translate])
            for pieces in pieces_per_text
        ],
        segments=len(segments),
        segments_unique=len(unique),
        source_tokens=sum(count_tokens(unique)),
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
