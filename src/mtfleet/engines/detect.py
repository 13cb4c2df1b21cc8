"""`--src-lang auto`: each unit's language detected, units already in the target language kept.

Detection is lingua's (`lingua-language-detector`, whose language models ship in its wheel), over
the languages the model knows (all of lingua's 75 for a model that names none). A unit counts as
already in the target language only when lingua gives the target a confidence of at least
SKIP_CONFIDENCE: a short or mixed text it cannot place is translated, never silently copied.
Models whose tokenizer marks the source (M2M100, NLLB, mBART-50) get each segment's detected
language as its source code; the others take no source language and translate whatever comes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, TypeVar

from mtfleet.engines.base import Engine, EngineWrapper
from mtfleet.errors import ModelError
from mtfleet.health import language_of

T = TypeVar("T")
AUTO = "auto"
PACKAGE = "lingua-language-detector"
# lingua's confidence (0 to 1, relative to the other candidates) a unit needs in the target
# language to be copied instead of translated
SKIP_CONFIDENCE = 0.9


def _lingua() -> Any:
    try:
        import lingua
    except ImportError as missing:
        raise ModelError(
            f"--src-lang {AUTO} needs lingua to detect languages: pip install {PACKAGE}."
        ) from missing
    return lingua


class SourceDetector:
    """Tells, per text, whether it is already in the target language and which of the model's
    source codes it is in."""

    def __init__(self, tgt_lang: str, model_codes: Sequence[str] = ()) -> None:
        lingua = _lingua()  # before language_of, which needs it too
        self.target = language_of(tgt_lang)
        if self.target is None:
            raise ModelError(
                f"--src-lang {AUTO} cannot recognise text in {tgt_lang!r}: lingua, which detects "
                f"the source language, knows no language of that ISO 639 code."
            )
        self.code_of: dict[Any, str] = {}
        for code in model_codes:
            language = language_of(code)
            if language is not None:
                # the first of a language's codes (zho_Hans before zho_Hant) stands for it
                self.code_of.setdefault(language, code)
        candidates = {*self.code_of, self.target}
        builder = (
            lingua.LanguageDetectorBuilder.from_languages(*candidates)
            if len(candidates) > 1
            else lingua.LanguageDetectorBuilder.from_all_languages()
        )
        self.detector = builder.build()

    def in_target_language(self, texts: Sequence[str]) -> list[bool]:
        confidences = self.detector.compute_language_confidence_in_parallel(
            list(texts), self.target
        )
        return [confidence >= SKIP_CONFIDENCE for confidence in confidences]

    def source_codes(self, texts: Sequence[str]) -> list[str | None]:
        """The model's code for each text's detected language; None where it has none."""
        detected = self.detector.detect_languages_in_parallel_of(list(texts))
        return [self.code_of.get(language) for language in detected]


class AutoSourceEngine(EngineWrapper):
    """An engine whose source language is detected: units in the target language are the
    pipeline's to copy (`in_target_language`), and a model that takes a source code gets each
    segment's own."""

    def __init__(self, engine: Engine, *, tgt_lang: str | None) -> None:
        if tgt_lang is None:
            raise ModelError(
                f"--src-lang {AUTO} needs --tgt-lang, so that text already in it is kept."
            )
        super().__init__(engine)
        tokens = getattr(engine, "tokens", None)
        scheme = tokens.languages if tokens is not None else None
        # only a tokenizer that marks the source needs to be told each segment's language
        self._source_tokenizer = tokens.tokenizer if scheme and scheme.mark == "code" else None
        self.detector = SourceDetector(tgt_lang, list(scheme.codes) if scheme else [])

    def in_target_language(self, texts: Sequence[str]) -> list[bool]:
        return self.detector.in_target_language(texts)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        # a source code is one token whichever it is: counts do not depend on it
        return self.engine.count_tokens(texts)

    def translate(self, segments: Sequence[str]) -> list[str]:
        return self._by_source(segments, self.engine.translate)

    def generate_token_ids(self, segments: Sequence[str]) -> list[list[int]]:
        """The engine's token ids, each segment under its detected source code (hf, ct2)."""
        return self._by_source(segments, self.engine.generate_token_ids)  # type: ignore[attr-defined]

    @property
    def tokens(self) -> Any:
        # decoding and caps do not depend on the source code: the engine's own serve
        return self.engine.tokens  # type: ignore[attr-defined]

    @property
    def health_checked(self) -> bool:
        return getattr(self.engine, "health_checked", True)

    @property
    def beam(self) -> int | None:
        return getattr(self.engine, "beam", None)

    @beam.setter
    def beam(self, beam: int) -> None:
        self.engine.beam = beam  # type: ignore[attr-defined]

    def _by_source(self, segments: Sequence[str], run: Callable[[list[str]], list[T]]) -> list[T]:
        """`run` over the segments, a call per detected source code where the model takes one."""
        if self._source_tokenizer is None or not segments:
            return list(run(list(segments)))
        codes = self.detector.source_codes(segments)
        # a segment lingua cannot place takes the code most of its neighbours have
        known = [code for code in codes if code is not None]
        fallback = max(set(known), key=known.count) if known else self._source_tokenizer.src_lang
        by_code: dict[str, list[int]] = {}
        for i, code in enumerate(codes):
            by_code.setdefault(code or fallback, []).append(i)
        results: dict[int, T] = {}
        for code, members in sorted(by_code.items()):
            self._source_tokenizer.src_lang = code
            results.update(zip(members, run([segments[i] for i in members]), strict=True))
        return [results[i] for i in range(len(segments))]

    def describe(self) -> dict[str, Any]:
        signature = self.engine.describe()
        return {
            **signature,
            "source_detection": {
                "package": PACKAGE,
                "version": metadata.version(PACKAGE),
                "skip_confidence": SKIP_CONFIDENCE,
            },
        }
