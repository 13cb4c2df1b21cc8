"""Segmentation: a value cut into pieces a model can take, and the pieces' translations joined back.

A value becomes a list of pieces whose texts join back to the value exactly. Pieces to translate
are single sentences (or parts of an over-long one) without their surrounding whitespace; every
other piece (whitespace, line ends, list markers, code, URLs, text without letters) is verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import groupby
from typing import NamedTuple

from mtfleet.data.patterns import Pattern, compile_patterns, find_term

CountTokens = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Piece:
    """A run of a value's text: sent to the model when `translate`, kept verbatim otherwise."""

    text: str
    translate: bool
    output: str | None = None
    """What the output holds in a verbatim piece's place when not its text: a <dnt> span without
    its tags, a glossary term's target."""


class ProtectedSpan(NamedTuple):
    start: int
    end: int
    output: str | None
    kind: str
    """protected (a --protect match or a <dnt> span) or glossary."""


@dataclass(frozen=True)
class Protection:
    """Spans kept verbatim besides code and URLs: `patterns` (RE2 expressions), <dnt>...</dnt>
    (whose tags the output drops) and glossary terms (replaced by their target terms)."""

    patterns: Sequence[str] = ()
    glossary: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def _compiled(self) -> list[Pattern]:
        return compile_patterns(self.patterns)

    @cached_property
    def _terms(self) -> list[tuple[str, str]]:
        longest_first = sorted(self.glossary.items(), key=lambda term: -len(term[0]))
        return [(source, target) for source, target in longest_first if source]

    def spans(self, text: str) -> list[ProtectedSpan]:
        """Every protected span of `text`, overlapping ones included."""
        found = [
            ProtectedSpan(match.start(), match.end(), None, "protected")
            for pattern in self._compiled
            for match in pattern.finditer(text)
            if match.end() > match.start()
        ]
        found += [
            ProtectedSpan(match.start(), match.end(), match.group(1), "protected")
            for match in _DNT.finditer(text)
        ]
        found += [
            ProtectedSpan(start, end, target, "glossary")
            for source, target in self._terms
            for start, end in find_term(source, text)
        ]
        return found


NO_PROTECTION = Protection()


# Spans never sent to a model. A fence opening a line runs to its closing fence or, like
# Markdown, to the end of the value; backticks closed on the same line are inline code.
_VERBATIM = re.compile(
    r"""
      (?P<fence>^[ \t]*(?P<marks>`{3,}|~{3,})[^`\n]*(?=\n|\Z)
                [\s\S]*?(?:\n[ \t]*(?P=marks)[ \t]*(?=\r?\n|\Z)|\Z))
    | ```[\s\S]+?```
    | ``[^\n]+?``
    | `[^`\n]+`
    | (?P<url>\b(?:(?:https?|ftp)://|www\.)[^\s<>"'`]+)
    | (?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+
    """,
    re.MULTILINE | re.VERBOSE,
)
# Characters a URL may hold but that, at its end, more likely belong to the sentence around it.
_URL_TRAILERS = ".,;:!?'\"]}>"

_NEWLINE = re.compile(r"\r\n|\r|\n")
# IndicTrans2's do-not-translate tags: the span is kept, the tags are not.
_DNT = re.compile(r"<dnt>([\s\S]*?)</dnt>")

# Bullets, numbers, headings and quote marks opening a line: kept verbatim so the model
# neither drops nor renumbers them.
_LIST_MARKER = re.compile(
    r"""[ \t]*
    (?: [-*+•‣◦] | \#{1,6} | >+
      | \d{1,3}(?:\.\d{1,3})*[.)] | \(\d{1,3}\)
      | [A-Za-z][.)] | \([A-Za-z]\) | (?:[ivxIVX]{1,5})[.)]
    )[ \t]+""",
    re.VERBOSE,
)
LIST_MARKER = _LIST_MARKER

# A sentence end: closing punctuation (and quotes or brackets after it) followed by a space,
# or CJK closing punctuation, which takes no space.
_SENTENCE_END = re.compile(
    r"(?<![.!?…।॥])[.!?…।॥]+[\"'”’»)\]]*(?=\s+\S)"
    r"|(?<![。！？])[。！？]+[」』”’）]*(?=\S)"
)
# Words whose period does not end a sentence; initials, dotted forms ("U.S", "e.g") and
# list numbers are recognised by their shape.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "fig", "approx"}
)
_DOTTED_ABBREVIATION = re.compile(r"(?:\w\.)+\w")
_NEXT_CHARACTER = re.compile(r"\s*(\S)")

# Brackets that cannot open or close the sentence they touch: they belong to the verbatim
# span beside it, like the brackets around a URL.
_STRAY_BEFORE = ")]}"
_STRAY_AFTER = "([{"

# Where an over-long sentence may be cut, most natural first; the last resort is characters.
_CUT_LEVELS = (
    re.compile(r"(?<=[,;:–—])\s+|(?<=[，；：、])\s*"),
    re.compile(r"\s+"),
)

Span = tuple[int, int]


def segment(
    text: str, max_tokens: int, count_tokens: CountTokens, protection: Protection = NO_PROTECTION
) -> list[Piece]:
    """Pieces of `text`; those to translate are within `max_tokens` by `count_tokens`."""
    return segment_texts([text], max_tokens, count_tokens, protection)[0]


def segment_texts(
    texts: Sequence[str],
    max_tokens: int,
    count_tokens: CountTokens,
    protection: Protection = NO_PROTECTION,
) -> list[list[Piece]]:
    """`segment` for many texts at once, counting the tokens of distinct sentences in one call."""
    drafts = [_draft_pieces(text, protection) for text in texts]
    sentences = list(dict.fromkeys(p.text for pieces in drafts for p in pieces if p.translate))
    tokens = dict(zip(sentences, count_tokens(sentences) if sentences else [], strict=True))
    fitter = _Fitter(max_tokens, count_tokens)
    refits = {
        sentence: fitter.fit(sentence, count)
        for sentence, count in tokens.items()
        if count > max_tokens
    }
    return [_merge_verbatim(_expand(pieces, refits)) for pieces in drafts]


def reassemble(pieces: Sequence[Piece], translations: Iterable[str]) -> str:
    """The value again, with the translations (one per translate piece, in order) in place."""
    remaining = iter(translations)
    parts = []
    for piece in pieces:
        if not piece.translate:
            parts.append(piece.text if piece.output is None else piece.output)
            continue
        translation = next(remaining, None)
        if translation is None:
            raise ValueError("fewer translations than pieces to translate")
        # The verbatim pieces around it hold the whitespace; a model's own would double it.
        parts.append(translation.strip())
    if next(remaining, None) is not None:
        raise ValueError("more translations than pieces to translate")
    return "".join(parts)


def _draft_pieces(text: str, protection: Protection) -> list[Piece]:
    """Pieces at verbatim spans, line ends and sentence ends, before any length is known."""
    pieces: list[Piece] = []
    position = 0
    for start, end, output in _verbatim_spans(text, protection):
        pieces += _prose_pieces(text, position, start)
        pieces.append(Piece(text[start:end], translate=False, output=output))
        position = end
    pieces += _prose_pieces(text, position, len(text))
    return pieces


def _verbatim_spans(text: str, protection: Protection) -> list[tuple[int, int, str | None]]:
    """Code, URLs and protected spans, in order; of overlapping ones the first and longest."""
    spans = [(match.start(), _verbatim_end(match), None) for match in _VERBATIM.finditer(text)]
    spans += [(span.start, span.end, span.output) for span in protection.spans(text)]
    chosen: list[tuple[int, int, str | None]] = []
    for start, end, output in sorted(spans, key=lambda span: (span[0], -span[1])):
        if not chosen or start >= chosen[-1][1]:
            chosen.append((start, end, output))
    return chosen


def _verbatim_end(match: re.Match[str]) -> int:
    """The end of a verbatim span, leaving a URL's trailing punctuation to the sentence."""
    end = match.end()
    if match.lastgroup != "url":
        return end
    url = match.group()
    while url and (
        url[-1] in _URL_TRAILERS or (url[-1] == ")" and url.count("(") < url.count(")"))
    ):
        url = url[:-1]
        end -= 1
    return end


def _prose_pieces(text: str, start: int, end: int) -> Iterator[Piece]:
    line_start = start
    for newline in _NEWLINE.finditer(text, start, end):
        yield from _line_pieces(text, line_start, newline.start())
        yield Piece(newline.group(), translate=False)
        line_start = newline.end()
    yield from _line_pieces(text, line_start, end)


def _line_pieces(text: str, start: int, end: int) -> Iterator[Piece]:
    if start == end:
        return
    if start == 0 or text[start - 1] in "\r\n":
        marker = _LIST_MARKER.match(text, start, end)
        if marker:
            yield Piece(marker.group(), translate=False)
            start = marker.end()
    cut = start
    for match in _SENTENCE_END.finditer(text, start, end):
        if _ends_sentence(text, match, start):
            yield from _stripped_pieces(text[cut : match.end()])
            cut = match.end()
    yield from _stripped_pieces(text[cut:end])


def _ends_sentence(text: str, match: re.Match[str], line_start: int) -> bool:
    following = _NEXT_CHARACTER.match(text, match.end())
    if following and following.group(1).islower():
        return False
    if match.group() != ".":
        return True
    space = max(
        text.rfind(" ", line_start, match.start()), text.rfind("\t", line_start, match.start())
    )
    word = text[max(space + 1, line_start) : match.start()].lstrip("\"'“‘([")
    return not (
        word.lower() in _ABBREVIATIONS
        or (len(word) == 1 and word.isalpha())
        or _DOTTED_ABBREVIATION.fullmatch(word) is not None
        or (word.isdigit() and len(word) <= 3)
    )


def _stripped_pieces(chunk: str) -> Iterator[Piece]:
    """The chunk's core as a piece, and the whitespace and stray brackets around it as others."""
    start, end = 0, len(chunk)
    while start < end and (chunk[start].isspace() or chunk[start] in _STRAY_BEFORE):
        start += 1
    while end > start and (chunk[end - 1].isspace() or chunk[end - 1] in _STRAY_AFTER):
        end -= 1
    if start == end:
        if chunk:
            yield Piece(chunk, translate=False)
        return
    core = chunk[start:end]
    if start:
        yield Piece(chunk[:start], translate=False)
    yield Piece(core, translate=any(character.isalpha() for character in core))
    if end < len(chunk):
        yield Piece(chunk[end:], translate=False)


def _expand(pieces: list[Piece], refits: dict[str, list[Piece]]) -> Iterator[Piece]:
    for piece in pieces:
        if piece.translate and piece.text in refits:
            yield from refits[piece.text]
        else:
            yield piece


def _merge_verbatim(pieces: Iterable[Piece]) -> list[Piece]:
    merged: list[Piece] = []
    for translate, run in groupby(pieces, key=lambda piece: piece.translate):
        if translate:
            merged += run
        else:
            run = list(run)
            output = (
                None
                if all(piece.output is None for piece in run)
                else "".join(piece.text if piece.output is None else piece.output for piece in run)
            )
            merged.append(Piece("".join(piece.text for piece in run), False, output))
    return merged


class _Fitter:
    """Cuts over-long sentences into parts within the token limit, never dropping a character."""

    def __init__(self, max_tokens: int, count_tokens: CountTokens) -> None:
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self._overhead: int | None = None

    @property
    def overhead(self) -> int:
        """Tokens the engine adds to every text (end of sentence, language codes)."""
        if self._overhead is None:
            self._overhead = self.count_tokens([""])[0]
        return self._overhead

    def fit(self, text: str, tokens: int, level: int = 0) -> list[Piece]:
        """Pieces of the stripped `text` (`tokens` long) that each fit the limit."""
        if level < len(_CUT_LEVELS):
            atoms = _atoms(text, _CUT_LEVELS[level])
            if len(atoms) == 1:
                return self.fit(text, tokens, level + 1)
            atom_tokens = self.count_tokens([text[start:end] for start, end in atoms])
            groups = self._pack(atoms, atom_tokens)
        else:
            groups = self._character_groups(text, tokens)
        pieces: list[Piece] = []
        previous_end = 0
        for group, group_tokens in self._split_until_fit(text, groups):
            start, end = group[0][0], group[-1][1]
            if start > previous_end:
                pieces.append(Piece(text[previous_end:start], translate=False))
            if group_tokens <= self.max_tokens:
                pieces += _stripped_pieces(text[start:end])
            elif level < len(_CUT_LEVELS):
                pieces += self.fit(text[start:end], group_tokens, level + 1)
            else:
                raise ValueError(
                    f"max_tokens={self.max_tokens} cannot hold even the one character "
                    f"{text[start:end]!r}"
                )
            previous_end = end
        return pieces

    def _pack(self, atoms: list[Span], atom_tokens: list[int]) -> list[list[Span]]:
        """Consecutive atoms grouped greedily; a group's tokens estimated as its atoms' sum."""
        budget = self.max_tokens - self.overhead
        groups: list[list[Span]] = [[]]
        used = 0
        for atom, tokens in zip(atoms, atom_tokens, strict=True):
            cost = tokens - self.overhead
            if groups[-1] and used + cost > budget:
                groups.append([])
                used = 0
            groups[-1].append(atom)
            used += cost
        return groups

    def _character_groups(self, text: str, tokens: int) -> list[list[Span]]:
        """Runs of characters sized by the text's average tokens per character."""
        per_character = max(tokens - self.overhead, 1) / len(text)
        size = max(1, int((self.max_tokens - self.overhead) / per_character))
        characters = [(index, index + 1) for index in range(len(text))]
        return [characters[start : start + size] for start in range(0, len(text), size)]

    def _split_until_fit(self, text: str, groups: list[list[Span]]) -> list[tuple[list[Span], int]]:
        """Groups counted for real; one over the limit is halved until it fits or is one atom."""
        fitted: list[tuple[list[Span], int]] = []
        pending = groups
        while pending:
            counts = self.count_tokens([text[group[0][0] : group[-1][1]] for group in pending])
            halves: list[list[Span]] = []
            for group, tokens in zip(pending, counts, strict=True):
                if tokens <= self.max_tokens or len(group) == 1:
                    fitted.append((group, tokens))
                else:
                    middle = len(group) // 2
                    halves += [group[:middle], group[middle:]]
            pending = halves
        return sorted(fitted, key=lambda item: item[0][0])


def _atoms(text: str, separator: re.Pattern[str]) -> list[Span]:
    """The non-empty spans of `text` between matches of `separator`."""
    atoms = []
    start = 0
    for match in separator.finditer(text):
        if match.start() > start:
            atoms.append((start, match.start()))
        start = max(start, match.end())
    if start < len(text):
        atoms.append((start, len(text)))
    return atoms


def split_clauses(text: str) -> list[Piece]:
    """`text` cut at clause ends (commas, semicolons, colons, dashes): a finer segmentation to
    translate a sentence again by."""
    pieces: list[Piece] = []
    previous_end = 0
    for start, end in _atoms(text, _CUT_LEVELS[0]):
        if start > previous_end:
            pieces.append(Piece(text[previous_end:start], translate=False))
        pieces += _stripped_pieces(text[start:end])
        previous_end = end
    if previous_end < len(text):
        pieces.append(Piece(text[previous_end:], translate=False))
    return _merge_verbatim(pieces)
