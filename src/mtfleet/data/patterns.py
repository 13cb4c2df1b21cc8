"""Protect patterns and glossary terms: bounded, checked, and matched in time linear in the text.

Patterns run on RE2, which never backtracks: no pattern a client sends can hold a translator (and
the GIL its heartbeat needs) for minutes. Glossary terms are plain text, found with `str.find`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping, Sequence

import re2

# Long enough for any real list of identifiers, short enough that checking them takes no time.
MAX_PATTERNS = 64
PATTERN_CHARS = 1024
MAX_TERMS = 10_000
TERM_CHARS = 256
# RE2's memory for one compiled pattern; one that needs more is refused, not truncated.
PATTERN_MEMORY_BYTES = 8 << 20

Pattern = re2._Regexp


def compile_patterns(patterns: Sequence[str]) -> list[Pattern]:
    """Each pattern compiled for RE2, or a ValueError that names the first one refused: too many,
    too long, holding a lone surrogate, not RE2 syntax (lookarounds, backreferences) or matching
    empty text."""
    if len(patterns) > MAX_PATTERNS:
        raise ValueError(f"at most {MAX_PATTERNS} patterns, not {len(patterns)}")
    return [_compile(pattern) for pattern in patterns]


def check_glossary(glossary: Mapping[str, str]) -> None:
    """Raises a ValueError naming the first term that is empty, too long or not text."""
    if len(glossary) > MAX_TERMS:
        raise ValueError(f"at most {MAX_TERMS} terms, not {len(glossary)}")
    for source, target in glossary.items():
        if not source.strip():
            raise ValueError("a source term is empty")
        for term in (source, target):
            if len(term) > TERM_CHARS:
                raise ValueError(f"the term {_shown(term)} is longer than {TERM_CHARS} characters")
            _refuse_surrogates(term, "term")


def find_term(term: str, text: str) -> Iterator[tuple[int, int]]:
    """Where `term` stands in `text` as a whole word (no word character on either side), as
    (start, end); the matches do not overlap."""
    start = text.find(term)
    while start >= 0:
        end = start + len(term)
        if not _is_word(text, start - 1) and not _is_word(text, end):
            yield start, end
            start = text.find(term, end)
        else:
            start = text.find(term, start + 1)


def _compile(pattern: str) -> Pattern:
    if len(pattern) > PATTERN_CHARS:
        raise ValueError(f"the pattern {_shown(pattern)} is longer than {PATTERN_CHARS} characters")
    _refuse_surrogates(pattern, "pattern")
    options = re2.Options()
    options.max_mem = PATTERN_MEMORY_BYTES
    options.log_errors = False
    try:
        compiled = re2.compile(pattern, options)
    except re2.error as error:
        reason = (
            error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else error
        )
        raise ValueError(
            f"the pattern {_shown(pattern)} is not one RE2 runs ({reason}); lookarounds and "
            "backreferences are not supported"
        ) from None
    if compiled.fullmatch("") is not None:
        raise ValueError(f"the pattern {_shown(pattern)} matches empty text")
    return compiled


def _refuse_surrogates(text: str, what: str) -> None:
    for character in text:
        if unicodedata.category(character) == "Cs":
            raise ValueError(f"a {what} holds the lone surrogate U+{ord(character):04X}")


def _is_word(text: str, index: int) -> bool:
    """What Python's `\\w` matches: letters, digits (str.isalnum) and the underscore."""
    if not 0 <= index < len(text):
        return False
    character = text[index]
    return character.isalnum() or character == "_"


def _shown(text: str) -> str:
    """A pattern or term as an error names it: quoted, cut to 40 characters."""
    return repr(text if len(text) <= 40 else text[:40] + "...")
