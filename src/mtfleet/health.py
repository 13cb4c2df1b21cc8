"""Health checks: does a translation look wrong, and why.

Every translated segment is checked for what machine translation gets wrong at scale (repetition
loops, output cut at its decode cap, a length far from the job's own norm, the source copied back,
the wrong language, numbers, placeholders, markup, code, URLs and addresses lost or changed); a
whole value is checked again for what reassembly must keep (lines and list markers, protected
spans, glossary terms). The checks are cheap, need no model (the language check uses lingua, whose
models ship in its wheel) and are deterministic, so a resumed job flags exactly what a clean one
does.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtfleet.data.atomic import AtomicFile
from mtfleet.data.segment import LIST_MARKER, NO_PROTECTION, Protection

# Every check, in the order reports list them.
CHECKS = (
    "loop",
    "capped",
    "length",
    "untranslated",
    "language",
    "numbers",
    "placeholders",
    "markup",
    "code",
    "urls",
    "emails",
    "lost_symbols",
    "markdown",
    "lines",
    "protected",
    "glossary",
)

# An n-gram (n >= 2) repeated this many times in a row, or one token this many times, is a loop
# when the source does not repeat as much.
LOOP_REPEATS = 3
LOOP_TOKEN_REPEATS = 4
LOOP_MAX_N = 6
# Character stutter ("Issssss", "ausgewinininin", "wähtelteltelte"): one letter this many times in a
# row, or a unit of 2-4 letters this many times, when the source has no run as long.
STUTTER_LETTER_REPEATS = 4
STUTTER_UNIT_REPEATS = 3
# Length ratio band: a segment is an outlier when its log length ratio lies further from the
# job's median than LENGTH_Z robust deviations (1.4826 * MAD, floored at LENGTH_MIN_SPREAD so a
# job of near-identical ratios does not flag every small wobble), over at least LENGTH_MIN_SAMPLES.
LENGTH_Z = 4.0
LENGTH_MIN_SPREAD = 0.15
LENGTH_MIN_SAMPLES = 20
# Characters added to both lengths: a 3-character source may well become 9 characters.
LENGTH_SMOOTHING = 10
# A translation this similar to a source of at least UNTRANSLATED_MIN_WORDS words is a copy.
UNTRANSLATED_SIMILARITY = 0.9
UNTRANSLATED_MIN_WORDS = 3
# The language check needs this many letters to be reliable, and this much confidence elsewhere.
LANGUAGE_MIN_LETTERS = 20
LANGUAGE_MIN_CONFIDENCE = 0.5
# Languages the detector weighs the target against (besides the target and source).
LANGUAGE_RIVALS = ("en", "de", "fr", "es", "it", "pt", "nl", "ru", "zh", "ja", "pl", "tr")

_WORD = re.compile(r"\w+")
_LETTERS = re.compile(r"[^\W\d_]")
_LETTER_WORD = re.compile(r"[^\W\d_]{2,}")
_NUMBER = re.compile(r"\d+")
_PLACEHOLDER = re.compile(
    r"\{\{[^{}\n]{0,40}\}\}"
    r"|\{[A-Za-z0-9_.:!\[\]-]{0,40}\}"
    r"|%(?:\([A-Za-z_]\w*\))?[-+#0]*\d*(?:\.\d+)?[sdifxXeEgGcr]"
    r"|\$\{\w+\}"
)
_TAG = re.compile(r"<(/?)([A-Za-z][\w-]*)\b[^<>\n]*?(/?)>")
_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]+")
_URL_TRAILERS = ".,;:!?'\")]}>"
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_STUTTER = re.compile(
    rf"([^\W\d_])\1{{{STUTTER_LETTER_REPEATS - 1},}}"
    rf"|([^\W\d_]{{2,4}}?)\2{{{STUTTER_UNIT_REPEATS - 1},}}"
)
# Markdown that must survive translation: emphasis and strike markers, table pipes, tabs.
_MARKDOWN = re.compile(r"\*\*|__|~~|\||\t")
# Tags of the do-not-translate convention (IndicTrans2), removed from the output.
_DNT_TAG = "dnt"


class HealthChecks:
    """The checks of one job: its target language, protected patterns and glossary."""

    def __init__(
        self,
        *,
        tgt_lang: str | None = None,
        src_lang: str | None = None,
        protection: Protection = NO_PROTECTION,
    ) -> None:
        self.language = LanguageCheck.for_codes(tgt_lang, src_lang)
        self.protection = protection

    def segment_flags(self, source: str, translation: str, *, capped: bool = False) -> list[str]:
        """What looks wrong with one segment's translation, in CHECKS order."""
        flags = set(_survival_flags(source, translation))
        if capped:
            flags.add("capped")
        if repetition_loop(source, translation):
            flags.add("loop")
        if untranslated(source, translation):
            flags.add("untranslated")
        elif self.language is not None and self.language.wrong(translation):
            flags.add("language")
        return ordered(flags)

    def value_flags(self, source: str, translation: str) -> list[str]:
        """What reassembly must have kept in a whole value: lines, markup, protected spans, terms."""
        flags = set(_survival_flags(source, translation))
        if not same_lines(source, translation):
            flags.add("lines")
        for span in self.protection.spans(source):
            kept = source[span.start : span.end] if span.output is None else span.output
            if kept not in translation:
                flags.add(span.kind)
        return ordered(flags)


def ordered(flags: Iterable[str]) -> list[str]:
    """Flags in CHECKS order, each once."""
    present = set(flags)
    return [check for check in CHECKS if check in present]


# --- the checks themselves


def repetition_loop(source: str, translation: str) -> bool:
    """The translation repeats an n-gram (or one token) in a row more than its source does, or
    stutters within words (a letter or a few letters over and over) where its source does not."""
    return stutter(source, translation) or word_loop(source, translation)


def stutter(source: str, translation: str) -> bool:
    """A run of one letter, or of a few letters, in the translation longer than any the source has."""
    return _stutter(translation) > _stutter(source)


def word_loop(source: str, translation: str) -> bool:
    """The translation repeats an n-gram (or one token) in a row more than its source does."""
    found = _repeats(_loop_tokens(translation))
    if not found:
        return False
    allowed = _repeats(_loop_tokens(source))
    return any(
        count >= (LOOP_TOKEN_REPEATS if n == 1 else LOOP_REPEATS) and count > allowed.get(n, 1)
        for n, count in found.items()
    )


def _stutter(text: str) -> int:
    """The longest stutter of `text` in characters (0 for none); case is ignored."""
    return max((len(match.group()) for match in _STUTTER.finditer(text.lower())), default=0)


def _loop_tokens(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    # text without spaces between words (Chinese, Japanese, Thai) loops in characters
    if len(text) > 20 and len(text.split()) * 20 < len(text):
        return [character for character in text if not character.isspace()]
    return words


def _repeats(tokens: Sequence[str]) -> dict[int, int]:
    """For each n, the most times an n-gram of `tokens` occurs in a row."""
    most: dict[int, int] = {}
    for n in range(1, LOOP_MAX_N + 1):
        streak = 0
        for index in range(n, len(tokens)):
            if tokens[index] == tokens[index - n]:
                streak += 1
                most[n] = max(most.get(n, 1), streak // n + 1)
            else:
                streak = 0
    return most


def untranslated(source: str, translation: str) -> bool:
    """The translation is (nearly) the source, and the source is prose, not a name or code."""
    words = _LETTER_WORD.findall(source)
    if len(words) < UNTRANSLATED_MIN_WORDS or all(word[0].isupper() for word in words):
        return False
    a, b = " ".join(_WORD.findall(source.lower())), " ".join(_WORD.findall(translation.lower()))
    if a == b:
        return True
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= UNTRANSLATED_SIMILARITY


def log_length_ratio(source: str, translation: str) -> float:
    return math.log(
        (len(translation.strip()) + LENGTH_SMOOTHING) / (len(source.strip()) + LENGTH_SMOOTHING)
    )


@dataclass(frozen=True)
class LengthBand:
    """The job's own norm of translation length over source length, robustly: median and MAD."""

    median: float
    spread: float

    @classmethod
    def learn(cls, ratios: Sequence[float]) -> LengthBand | None:
        """The band of `ratios` (log length ratios); None when there are too few to say."""
        if len(ratios) < LENGTH_MIN_SAMPLES:
            return None
        median = statistics.median(ratios)
        mad = statistics.median(abs(ratio - median) for ratio in ratios)
        return cls(median, max(1.4826 * mad, LENGTH_MIN_SPREAD))

    def outside(self, ratio: float) -> bool:
        return abs(ratio - self.median) > LENGTH_Z * self.spread

    def to_json(self) -> dict[str, float]:
        return {"median": round(self.median, 4), "spread": round(self.spread, 4)}


def _survival_flags(source: str, translation: str) -> Iterator[str]:
    if _missing(_NUMBER.findall(source), _NUMBER.findall(translation)):
        yield "numbers"
    if _missing(_PLACEHOLDER.findall(source), _PLACEHOLDER.findall(translation)):
        yield "placeholders"
    if Counter(_tags(source)) != Counter(_tags(translation)):
        yield "markup"
    if _missing(_CODE.findall(source), _CODE.findall(translation)):
        yield "code"
    if _missing(_urls(source), _urls(translation)):
        yield "urls"
    if _missing(_EMAIL.findall(source), _EMAIL.findall(translation)):
        yield "emails"
    if _missing(symbols(source), symbols(translation)):
        yield "lost_symbols"
    if _missing(_MARKDOWN.findall(source), _MARKDOWN.findall(translation)):
        yield "markdown"


def symbols(text: str) -> list[str]:
    """The emoji and other symbols of `text` (Unicode's So and Sc: 🐶, ❄, ©, €), which most
    translation vocabularies lack and so drop or turn into their unknown token."""
    return [character for character in text if unicodedata.category(character) in ("So", "Sc")]


def _missing(expected: list[str], found: list[str]) -> bool:
    """Some of `expected` (counted) is not in `found`."""
    return bool(Counter(expected) - Counter(found))


def _tags(text: str) -> list[str]:
    return [
        f"{closing}{name.lower()}{empty}"
        for closing, name, empty in _TAG.findall(text)
        if name.lower() != _DNT_TAG
    ]


def _urls(text: str) -> list[str]:
    return [match.group().rstrip(_URL_TRAILERS) for match in _URL.finditer(text)]


def same_lines(source: str, translation: str) -> bool:
    """The same number of lines, each opening with the same list marker (bullet, number, heading)."""
    source_lines, translated_lines = source.splitlines(), translation.splitlines()
    if len(source_lines) != len(translated_lines):
        return False
    return all(
        _marker(a) == _marker(b) for a, b in zip(source_lines, translated_lines, strict=True)
    )


def _marker(line: str) -> str:
    match = LIST_MARKER.match(line)
    return match.group().strip() if match else ""


class LanguageCheck:
    """Target-language identification with lingua, over the target and a few rival languages."""

    def __init__(self, target: Any, rivals: Sequence[Any], *, preloaded: bool = False) -> None:
        from lingua import LanguageDetectorBuilder

        self.target = target
        builder = LanguageDetectorBuilder.from_languages(target, *rivals)
        # lingua keeps the models it loads for the whole process: loaded here once, or at the
        # first check (about 1.2 s on one core for the target and its rivals)
        if preloaded:
            builder = builder.with_preloaded_language_models()
        self._detector = builder.build()

    @classmethod
    def for_codes(
        cls, tgt_lang: str | None, src_lang: str | None, *, preloaded: bool = False
    ) -> LanguageCheck | None:
        """The check for a target language code (ISO 639-1 or -3, or NLLB's eng_Latn); None when
        no target is named or lingua does not know it. `preloaded` loads its models now."""
        target = language_of(tgt_lang)
        if target is None:
            return None
        rivals = {language_of(code) for code in (*LANGUAGE_RIVALS, src_lang)}
        rivals.discard(None)
        rivals.discard(target)
        return cls(target, sorted(rivals, key=str), preloaded=preloaded)

    def wrong(self, translation: str) -> bool:
        if len(_LETTERS.findall(translation)) < LANGUAGE_MIN_LETTERS:
            return False
        top = self._detector.compute_language_confidence_values(translation)[0]
        return top.language != self.target and top.value >= LANGUAGE_MIN_CONFIDENCE


def language_of(code: str | None) -> Any:
    """lingua's Language for a code such as de, deu, de_DE or deu_Latn; None when unknown."""
    if not code:
        return None
    from lingua import IsoCode639_1, IsoCode639_3, Language

    base = re.split(r"[_-]", code.strip())[0].lower()
    try:
        if len(base) == 2:
            return Language.from_iso_code_639_1(IsoCode639_1.from_str(base))
        if len(base) == 3:
            return Language.from_iso_code_639_3(IsoCode639_3.from_str(base))
    except ValueError:
        return None
    return None


def job_checks(spec: Any, engine: Any) -> tuple[Protection, HealthChecks | None]:
    """A job's protected spans and its checks; no checks for an engine whose output is not a
    translation (the reverse engine, unless it injects faults) or for a job that turned them off.
    A job with several target languages has its checks made per language (`spec.for_target`)."""
    protection = Protection(patterns=tuple(spec.protect), glossary=dict(spec.glossary))
    if isinstance(spec.tgt_lang, list) or not _checked(spec, engine):
        return protection, None
    return protection, HealthChecks(
        tgt_lang=spec.tgt_lang, src_lang=spec.src_lang, protection=protection
    )


def preload_language_models(spec: Any, engine: Any) -> None:
    """Loads lingua's models for the language checks of job `spec` on `engine`, each of its
    targets, into this process, where every later check finds them; nothing for a job whose
    output is not checked (`job_checks`)."""
    if not _checked(spec, engine):
        return
    for tgt_lang in spec.targets():
        LanguageCheck.for_codes(tgt_lang, spec.src_lang, preloaded=True)


def _checked(spec: Any, engine: Any) -> bool:
    """Whether job `spec`'s output on `engine` is checked: its checks are on, and the engine's
    output is a translation (a multi-target engine's, when any target's is)."""
    return bool(spec.checks) and getattr(engine, "health_checked", True)


# --- the report: what assembly tells of the flags

# Flagged units listed in the manifest; OUT.flags.jsonl lists them all.
MANIFEST_FLAGGED = 100
EXCERPT_CHARS = 120
_INDEX = re.compile(r"\[\d+\]")


def flags_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".flags.jsonl")


class HealthReport:
    """Counts flags per check and per field while assembly applies the parts, and writes every
    flagged unit to OUT.flags.jsonl (through a temporary file renamed in place at `close`)."""

    def __init__(
        self,
        output: str | Path,
        on_flag: str,
        *,
        checks: bool = True,
        confine_to: Path | None = None,
    ) -> None:
        self.path = flags_path(output)
        self.on_flag = on_flag
        self.checks = checks
        self.units_checked = 0
        self.units_flagged = 0
        self.rows_dropped = 0
        self.per_check: Counter[str] = Counter()
        self.per_field: dict[str, Counter[str]] = {}
        self.flagged: list[dict[str, Any]] = []
        self._file = AtomicFile(self.path, confine_to=confine_to)

    def add(
        self, row: int, location: str, flags: Sequence[str], source: str, translation: str
    ) -> None:
        """One translated unit and its flags (none for a healthy one, or with the checks off)."""
        if not self.checks:
            return
        self.units_checked += 1
        if not flags:
            return
        self.units_flagged += 1
        field_name = _INDEX.sub("[]", location)
        self.per_check.update(flags)
        self.per_field.setdefault(field_name, Counter()).update(flags)
        entry = {"row": row, "field": location, "checks": list(flags)}
        if len(self.flagged) < MANIFEST_FLAGGED:
            self.flagged.append(
                {**entry, "source": _excerpt(source), "translation": _excerpt(translation)}
            )
        record = {**entry, "source": source, "translation": translation}
        self._file.handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode())

    def close(self) -> None:
        """Puts OUT.flags.jsonl in place when a unit was flagged, else removes an older one."""
        if self.units_flagged:
            self._file.commit()
        else:
            self._file.remove()

    def discard(self) -> None:
        self._file.abort()

    def to_json(self) -> dict[str, Any]:
        return {
            "checks": "on" if self.checks else "off",
            "on_flag": self.on_flag,
            "units_checked": self.units_checked,
            "units_flagged": self.units_flagged,
            "rows_dropped": self.rows_dropped,
            "per_check": {
                check: self.per_check[check] for check in CHECKS if check in self.per_check
            },
            "per_field": {
                name: {check: counts[check] for check in CHECKS if check in counts}
                for name, counts in sorted(self.per_field.items())
            },
            "flagged": self.flagged,
            "flagged_listed": len(self.flagged),
            "flags_file": str(self.path) if self.units_flagged else None,
        }


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def read_glossary(path: str | Path) -> dict[str, str]:
    """A glossary file: one `source term<TAB>target term` a line; blank lines and # comments skipped."""
    from mtfleet.errors import DatasetError

    terms: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"Cannot read the glossary {path}: {error}.") from None
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        source, tab, target = line.partition("\t")
        if not tab or not source.strip() or not target.strip():
            raise DatasetError(
                f"Line {number} of the glossary {path} is not 'source term<TAB>target term'."
            )
        terms[source.strip()] = target.strip()
    return terms
