"""Segmentation: a value cut into pieces a model can take, and the pieces' translations joined back.

A value becomes a list of pieces whose originals join back to the value exactly. Pieces to
translate are single sentences (or parts of an over-long one) without their surrounding
whitespace; every other piece (whitespace, line ends, list markers, fenced code, table pipes, tabs,
text without letters) is verbatim. Spans inside a sentence that a model must not touch (inline
code, URLs, e-mails, `{x}`/`%s` placeholders, tags, emphasis markers, emoji and other symbols,
`--protect` and <dnt> spans, glossary terms) are taken out of it: the model is sent the sentence
whole without them, and each is put back at its place in the translation (a `Hole`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from operator import methodcaller
from typing import NamedTuple

from mtfleet.bulk import collector_paused
from mtfleet.data.patterns import Pattern, compile_patterns, find_term

CountTokens = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class Hole:
    """A span taken out of a sentence to translate, and where it goes back.

    `start` and `end` are its place in the sentence's original; `words_before` counts the words of
    the text sent before it. `glue_before` / `glue_after`: no space between it and the text before
    / after it in the original (an emphasis marker, a tag, punctuation after a URL).
    """

    start: int
    end: int
    output: str
    words_before: int
    glue_before: bool
    glue_after: bool


class Piece(NamedTuple):
    """A run of a value's text: sent to the model when `translate`, kept verbatim otherwise.

    A named tuple: a value's pieces are many, and a frozen dataclass took a fifth of
    segmentation's time to make them."""

    text: str
    translate: bool
    output: str | None = None
    """What the output holds in a verbatim piece's place when not its text: a <dnt> span without
    its tags, a glossary term's target."""
    holes: tuple[Hole, ...] = ()
    """Spans taken out of a piece to translate: `text` is what the model is sent without them."""
    source: str | None = None
    """The piece's original text when holes were taken out of it."""

    @property
    def original(self) -> str:
        """The run of the value this piece stands for."""
        return self.text if self.source is None else self.source


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
        if "<dnt>" in text:
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
    | (?P<inline>
        \{\{[^{}\n]{0,40}\}\}
      | \{[A-Za-z0-9_.:!\[\]-]{0,40}\}
      | %(?:\([A-Za-z_]\w*\))?[-+\#0]*\d*(?:\.\d+)?[sdifxXeEgGcr](?![A-Za-z])
      | \$\{\w+\} | \$[A-Za-z_]\w*
      | </?[A-Za-z][\w-]*\b[^<>\n]*?/?>
      | (?<![\w*])\*\*(?=\S) | (?<=\S)\*\*(?![\w*])
      | (?<![\w_])__(?=\S) | (?<=\S)__(?![\w_])
      | (?<!~)~~(?=\S) | (?<=\S)~~(?!~)
      )
    """,
    re.MULTILINE | re.VERBOSE,
)
# A text without any of these holds nothing _VERBATIM finds: not tried. Looked for one by one
# with `in`: a regex of them all searched 3x slower.
_VERBATIM_MARKS = ("`", "~", "@", "{", "%", "$", "<", "*", "_", "://", "www.")
# `*italic*` and `_italic_`: their markers are spans, the words between them are translated.
_ITALIC = re.compile(
    r"(?<![\w*])([*_])(?=[^\s*_])[^*_\n]*?[^\s*_]\1(?![\w*])|(?<![\w*])([*_])[^\s*_]\2(?![\w*])"
)
# Characters a URL may hold but that, at its end, more likely belong to the sentence around it.
_URL_TRAILERS = ".,;:!?'\"]}>"
# A symbol run (emoji with their joiners, variation selectors and skin tones, dingbats, arrows):
# most translation vocabularies have none of them and drop them or make them unknown tokens.
_SYMBOL_JOINERS = frozenset("\u200d\ufe0e\ufe0f\u20e3") | frozenset(
    map(chr, range(0x1F3FB, 0x1F400))
)
_SYMBOLS_FROM = 0x2000
_FROM_SYMBOLS = re.compile(f"[{chr(_SYMBOLS_FROM)}-{chr(0x10FFFF)}]+")
# A Markdown table row: its cells are translated one by one, the pipes kept.
_TABLE_ROW = re.compile(r"[ \t]*\|.*\|[ \t]*$")
# Brackets and quotes that, around a span alone, go with it.
_PAIRS = frozenset(
    {("(", ")"), ("[", "]"), ("{", "}"), ('"', '"'), ("'", "'"), ("“", "”"), ("«", "»")}
)
# Punctuation a span's sentence may end with after it: the span goes back before it.
_CLOSING = ".,;:!?…。！？、)]}\"'”’»"

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
# Each opens with its punctuation, not a lookbehind, so that the regex engine skips to it: one
# expression of both was 5x slower. Their matches never overlap (no character opens both).
# Group 1 is the character that follows (a lowercase one continues the sentence).
_SENTENCE_END = re.compile(r"[.!?…।॥](?<![.!?…।॥]{2})[.!?…।॥]*[\"'”’»)\]]*(?=\s+(\S))")
_CJK_MARKS = frozenset("。！？")
_CJK_SENTENCE_END = re.compile(r"[。！？](?<![。！？]{2})[。！？]*[」』”’）]*(?=(\S))")
# Words whose period does not end a sentence; initials, dotted forms ("U.S", "e.g") and
# list numbers are recognised by their shape.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "fig", "approx"}
)
_DOTTED_ABBREVIATION = re.compile(r"(?:\w\.)+\w")
_LONGEST_ABBREVIATION = max(map(len, _ABBREVIATIONS))

# Brackets that cannot open or close the sentence they touch: they belong to the verbatim
# span beside it, like the brackets around a URL.
_STRAY_BEFORE = ")]}"
_STRAY_AFTER = "([{"
# What str.strip() strips (the characters str.isspace() holds: a test checks it), with those
# brackets: one lstrip or rstrip takes off both.
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_LEADING = WHITESPACE + _STRAY_BEFORE
_TRAILING = WHITESPACE + _STRAY_AFTER

# Where an over-long sentence may be cut, most natural first; the last resort is characters.
_CUT_LEVELS = (
    re.compile(r"(?<=[,;:–—])\s+|(?<=[，；：、])\s*"),
    re.compile(r"\s+"),
)

Span = tuple[int, int]


class _Span(NamedTuple):
    """A span no model may touch: its place, its output when not its text, and whether it is a
    block (a fence, or a span over lines) that cuts the value, or one inside a line."""

    start: int
    end: int
    output: str | None
    block: bool


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
    """`segment` for many texts at once, counting the tokens of distinct sentences in one call.

    A sentence with holes that is over the limit is cut at its spans instead (as before holes),
    and its parts fitted like any other sentence. Each distinct text is segmented once: equal
    texts share one list of pieces.
    """
    with collector_paused():
        drafted = {text: _draft_pieces(text, protection) for text in dict.fromkeys(texts)}
    drafts = [drafted[text] for text in texts]
    tokens = _count_new({}, drafted.values(), count_tokens)
    if all(count <= max_tokens for count in tokens.values()):
        # nothing to cut or fit: each text's drafted pieces are its pieces
        return drafts
    drafts = [
        [
            cut
            for piece in pieces
            for cut in (
                cut_at_holes(piece) if piece.holes and tokens[piece.text] > max_tokens else (piece,)
            )
        ]
        for pieces in drafts
    ]
    tokens = _count_new(tokens, drafts, count_tokens)
    fitter = _Fitter(max_tokens, count_tokens)
    refits = {
        sentence: fitter.fit(sentence, count)
        for sentence, count in tokens.items()
        if count > max_tokens
    }
    return [_merge_verbatim(_expand(pieces, refits)) for pieces in drafts]


def _count_new(
    tokens: dict[str, int], drafts: Iterable[list[Piece]], count_tokens: CountTokens
) -> dict[str, int]:
    """`tokens` with the counts of the drafts' distinct sentences it lacks, counted in one call."""
    new = list(
        dict.fromkeys(
            p.text for pieces in drafts for p in pieces if p.translate and p.text not in tokens
        )
    )
    if new:
        tokens = {**tokens, **dict(zip(new, count_tokens(new), strict=True))}
    return tokens


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
        parts.append(put_back_holes(piece, translation.strip()))
    if next(remaining, None) is not None:
        raise ValueError("more translations than pieces to translate")
    return "".join(parts)


def put_back_holes(piece: Piece, translation: str) -> str:
    """`translation` of a piece with each of its holes' spans put back where it was: before the
    word at the same share of the words, glued to a word where it was glued, before the
    sentence's closing punctuation where it stood before the source's; a span that closes what
    the one before it opened (`**`, `</b>`) never goes before it."""
    if not piece.holes:
        return translation
    words = [match.span() for match in _WORD_RUN.finditer(translation)]
    sent_words = len(piece.text.split())
    insertions: list[tuple[int, int, str]] = []
    previous: tuple[Hole, int] | None = None
    for order, hole in enumerate(piece.holes):
        index = _word_index(hole, len(words), sent_words)
        if previous is not None:
            opener, opened_at = previous
            closes = opener.glue_after and hole.glue_before and not opener.glue_before
            index = max(index, min(opened_at + 1, len(words)) if closes else opened_at)
        offset, text = _hole_place(piece, hole, translation, words, index)
        insertions.append((offset, order, text))
        previous = (hole, index)
    out = translation
    for offset, _, text in sorted(insertions, reverse=True):
        out = out[:offset] + text + out[offset:]
    return out


_WORD_RUN = re.compile(r"\S+")


def _word_index(hole: Hole, count: int, sent_words: int) -> int:
    """The word of the translation a hole goes before (`count`: after the last)."""
    if hole.words_before >= sent_words:
        return count
    if hole.words_before == 0 or count == 0:
        return 0
    index = round(hole.words_before * count / sent_words)
    return min(max(index, 1), count - 1 if count > 1 else count)


def _hole_place(
    piece: Piece, hole: Hole, translation: str, words: list[tuple[int, int]], index: int
) -> tuple[int, str]:
    """Where in `translation` a hole's span goes, before word `index`, and the span with the
    space it needs."""
    count = len(words)
    if count == 0:
        return len(translation), (" " if translation and not hole.glue_before else "") + hole.output
    if index >= count:
        # after the last word: before the closing punctuation the source had after the span too
        start, end = words[-1]
        after = len(piece.original[hole.end :].strip())
        closing = _closing_length(translation[start:end])
        if hole.glue_before:
            return end - closing, hole.output
        return end - min(after, closing), " " + hole.output
    punctuation_after = piece.original[hole.end : hole.end + 1] in tuple(_CLOSING)
    if (hole.glue_before or punctuation_after) and index > 0:
        # glued to the word before, or to the punctuation after it: after that word's letters
        start, end = words[index - 1]
        space = "" if hole.glue_before else " "
        return end - _closing_length(translation[start:end]), space + hole.output
    return words[index][0], hole.output + ("" if hole.glue_after else " ")


def _closing_length(word: str) -> int:
    """How many characters of closing punctuation end `word` (all of them for punctuation alone)."""
    stripped = word.rstrip(_CLOSING)
    return len(word) - len(stripped) if stripped else 0


def _draft_pieces(text: str, protection: Protection) -> list[Piece]:
    """Pieces at block spans, line ends and sentence ends, before any length is known, verbatim
    ones merged; spans inside a sentence become its holes."""
    spans = _verbatim_spans(text, protection)
    if not spans and "\t" not in text and "|" not in text and "\r" not in text:
        return _plain_pieces(text)
    pieces: list[Piece] = []
    position = 0
    inline: list[_Span] = []
    for span in spans:
        if not span.block:
            inline.append(span)
            continue
        _prose_pieces(text, position, span.start, inline, pieces)
        pieces.append(Piece(text[span.start : span.end], translate=False, output=span.output))
        position, inline = span.end, []
    _prose_pieces(text, position, len(text), inline, pieces)
    return _merge_verbatim(pieces)


def _plain_pieces(text: str) -> list[Piece]:
    """`_draft_pieces` of a text without spans, tabs, table pipes or carriage returns (most
    prose): the same pieces, made in one pass over its lines, verbatim text gathered as it
    goes instead of pieces merged after."""
    pieces: list[Piece] = []
    verbatim = ""
    for number, line in enumerate(text.split("\n")):
        if number:
            verbatim += "\n"
        marker = _LIST_MARKER.match(line)
        if marker is not None:
            verbatim += marker.group()
            line = line[marker.end() :]
        cut = 0
        for end in _sentence_cuts(line):
            verbatim = _plain_sentence(line[cut:end], verbatim, pieces)
            cut = end
        verbatim = _plain_sentence(line[cut:], verbatim, pieces)
    if verbatim:
        pieces.append(Piece(verbatim, False))
    return pieces


def _plain_sentence(chunk: str, verbatim: str, pieces: list[Piece]) -> str:
    """A sentence without spans added to `pieces` after the verbatim text before it: its core
    to translate when it has a letter; the verbatim text after it returned."""
    head = chunk.lstrip(_LEADING)
    core = head.rstrip(_TRAILING)
    if not core or not (core[0].isalpha() or any(map(str.isalpha, core))):
        return verbatim + chunk
    verbatim += chunk[: len(chunk) - len(head)]
    if verbatim:
        pieces.append(Piece(verbatim, False))
    pieces.append(Piece(core, True))
    return head[len(core) :]


def _verbatim_spans(text: str, protection: Protection) -> list[_Span]:
    """Code, URLs, placeholders, markup, symbols and protected spans, in order; of overlapping
    ones the first and longest."""
    spans = []
    if any(map(text.__contains__, _VERBATIM_MARKS)):
        spans += [
            _Span(
                match.start(),
                _verbatim_end(match),
                None,
                match.lastgroup == "fence" or "\n" in match.group() or "\r" in match.group(),
            )
            for match in _VERBATIM.finditer(text)
        ]
    if "*" in text or "_" in text:
        spans += [
            _Span(marker, marker + 1, None, False)
            for match in _ITALIC.finditer(text)
            for marker in (match.start(), match.end() - 1)
        ]
    if not text.isascii():
        spans += _symbol_spans(text)
    # without patterns or a glossary, only a <dnt> span is protected: most texts ask for nothing
    if protection.patterns or protection.glossary or "<dnt>" in text:
        spans += [
            _Span(span.start, span.end, span.output, "\n" in text[span.start : span.end])
            for span in protection.spans(text)
        ]
    if len(spans) < 2:
        return spans
    chosen: list[_Span] = []
    for span in sorted(spans, key=lambda span: (span.start, -span.end)):
        if not chosen or span.start >= chosen[-1].end:
            chosen.append(span)
    return chosen


def _symbol_spans(text: str) -> list[_Span]:
    """Runs of emoji and other symbols (with their joiners), each one span."""
    spans: list[_Span] = []
    # symbols and joiners are all at or past _SYMBOLS_FROM: only runs of such characters hold them
    for candidates in _FROM_SYMBOLS.finditer(text):
        start: int | None = None
        has_symbol = False
        offset = candidates.start()
        for index, character in enumerate([*candidates.group(), ""], offset):
            symbol = character != "" and unicodedata.category(character) == "So"
            if symbol or (character != "" and character in _SYMBOL_JOINERS):
                if start is None:
                    start, has_symbol = index, False
                has_symbol = has_symbol or symbol
                continue
            if start is not None and has_symbol:
                spans.append(_Span(start, index, None, False))
            start = None
    return spans


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


# The functions below add their pieces to `out`: a value's pieces are many, generators nested
# four deep cost a third of segmentation's time.


def _prose_pieces(
    text: str, start: int, end: int, spans: Sequence[_Span], out: list[Piece]
) -> None:
    line_start = start
    for newline in _NEWLINE.finditer(text, start, end):
        _line_pieces(text, line_start, newline.start(), spans, out)
        out.append(Piece(newline.group(), translate=False))
        line_start = newline.end()
    _line_pieces(text, line_start, end, spans, out)


def _line_pieces(text: str, start: int, end: int, spans: Sequence[_Span], out: list[Piece]) -> None:
    """A line's pieces: its list marker, then its cells (a table row) or the runs between its
    tabs, each cut at sentence ends."""
    if start == end:
        return
    if spans:
        spans = [span for span in spans if start <= span.start and span.end <= end]
    if start == 0 or text[start - 1] in "\r\n":
        marker = _LIST_MARKER.match(text, start, end)
        if marker and not any(span.start < marker.end() for span in spans):
            out.append(Piece(marker.group(), translate=False))
            start = marker.end()
    separator = "|" if _TABLE_ROW.match(text, start, end) else "\t"
    run_start = start
    index = text.find(separator, start, end)
    while index != -1:
        if not any(s.start <= index < s.end for s in spans):
            _sentence_pieces(text, run_start, index, spans, out)
            out.append(Piece(separator, translate=False))
            run_start = index + 1
        index = text.find(separator, index + 1, end)
    _sentence_pieces(text, run_start, end, spans, out)


def _sentence_pieces(
    text: str, start: int, end: int, spans: Sequence[_Span], out: list[Piece]
) -> None:
    """A run cut at its sentence ends, found as if each span were a word."""
    if start == end:
        return
    spans = [
        _bracketed(text, span, start, end)
        for span in spans
        if start <= span.start and span.end <= end
    ]
    line = text[start:end]
    if spans:
        probe = list(line)
        for span in spans:
            probe[span.start - start : span.end - start] = "X" * (span.end - span.start)
        line = "".join(probe)
    cut = 0
    for sentence_end in _sentence_cuts(line):
        _chunk_pieces(text, start + cut, start + sentence_end, spans, out)
        cut = sentence_end
    _chunk_pieces(text, start + cut, end, spans, out)


def _sentence_cuts(line: str) -> list[int]:
    """Where the sentences of `line` end, in order."""
    ends: Iterable[re.Match[str]] = _SENTENCE_END.finditer(line)
    if not line.isascii() and not _CJK_MARKS.isdisjoint(line):
        ends = sorted([*ends, *_CJK_SENTENCE_END.finditer(line)], key=_START)
    return [match.end() for match in ends if _ends_sentence(line, match)]


_START = methodcaller("start")


def _bracketed(text: str, span: _Span, start: int, end: int) -> _Span:
    """The span with the brackets or quotes that enclose nothing but it: "(https://x.org)"."""
    first, last = span.start, span.end
    while start < first and last < end and (text[first - 1], text[last]) in _PAIRS:
        first, last = first - 1, last + 1
    if (first, last) == (span.start, span.end) or span.output is not None:
        return span
    return _Span(first, last, None, span.block)


def _chunk_pieces(
    text: str, start: int, end: int, spans: Sequence[_Span], out: list[Piece]
) -> None:
    """A sentence's core as a piece to translate, its inner spans as holes; the whitespace,
    stray brackets and spans around the core as verbatim pieces."""
    inside = [span for span in spans if start <= span.start and span.end <= end]
    if not inside:
        _plain_chunk_pieces(text, start, end, out)
        return
    starting = {span.start: span for span in inside}
    ending = {span.end: span for span in inside}
    core_start, core_end = start, end
    while core_start < core_end:
        if text[core_start].isspace() or text[core_start] in _STRAY_BEFORE:
            core_start += 1
        elif core_start in starting:
            core_start = starting[core_start].end
        else:
            break
    while core_end > core_start:
        if text[core_end - 1].isspace() or text[core_end - 1] in _STRAY_AFTER:
            core_end -= 1
        elif core_end in ending and ending[core_end].start >= core_start:
            core_end = ending[core_end].start
        else:
            break
    out += _verbatim_run(text, start, core_start, inside)
    if core_start < core_end:
        inner = [span for span in inside if core_start <= span.start and span.end <= core_end]
        out += _core_pieces(text, core_start, core_end, inner)
    out += _verbatim_run(text, core_end, end, inside)


def _plain_chunk_pieces(text: str, start: int, end: int, out: list[Piece]) -> None:
    """`_chunk_pieces` of a sentence without spans: its core, and what is around it verbatim."""
    after = _plain_sentence(text[start:end], "", out)
    if after:
        out.append(Piece(after, False))


def _verbatim_run(text: str, start: int, end: int, spans: Sequence[_Span]) -> Iterator[Piece]:
    """Verbatim pieces of text[start:end], a span with an output of its own as a piece apart."""
    position = start
    for span in spans:
        if start <= span.start and span.end <= end and span.output is not None:
            if span.start > position:
                yield Piece(text[position : span.start], False)
            yield Piece(text[span.start : span.end], False, span.output)
            position = span.end
    if end > position:
        yield Piece(text[position:end], False)


def _core_pieces(text: str, start: int, end: int, spans: Sequence[_Span]) -> Iterator[Piece]:
    """The core of a sentence: one piece to translate with its spans as holes, or verbatim
    pieces when nothing is left to translate without them."""
    core = text[start:end]
    kept = [
        span
        for span in spans
        if not (
            span.start > start
            and span.end < end
            and text[span.start - 1].isalnum()
            and text[span.end].isalnum()
        )
    ]
    sent = ""
    holes: list[Hole] = []
    position = start
    for span in kept:
        sent = _joined(sent, text[position : span.start])
        holes.append(
            Hole(
                start=span.start - start,
                end=span.end - start,
                output=text[span.start : span.end] if span.output is None else span.output,
                words_before=len(sent.split()),
                glue_before=not text[span.start - 1].isspace(),
                glue_after=span.end < end and not text[span.end].isspace(),
            )
        )
        position = span.end
    sent = _joined(sent, text[position:end])
    if not any(character.isalpha() for character in sent):
        yield from cut_at_holes(Piece(sent, True, holes=tuple(holes), source=core))
    elif holes:
        yield Piece(sent, True, holes=tuple(holes), source=core)
    else:
        yield Piece(core, True)


def _joined(left: str, right: str) -> str:
    """`left` and `right` as one text where a span stood between them: one space where both had
    one, none before punctuation that closes the sentence."""
    if left and left[-1].isspace() and right[:1].isspace():
        return left + right.lstrip()
    if left and left[-1].isspace() and right[:1] and right[0] in _CLOSING:
        return left.rstrip() + right
    return left + right


def cut_at_holes(piece: Piece) -> list[Piece]:
    """A piece with holes cut at them instead, as segmentation did before holes: its spans
    verbatim, the text between them translated in parts."""
    pieces: list[Piece] = []
    position = 0
    original = piece.original
    for hole in piece.holes:
        pieces += _stripped_pieces(original[position : hole.start])
        output = None if hole.output == original[hole.start : hole.end] else hole.output
        pieces.append(Piece(original[hole.start : hole.end], False, output))
        position = hole.end
    pieces += _stripped_pieces(original[position:])
    return _merge_verbatim(pieces)


def _ends_sentence(line: str, match: re.Match[str]) -> bool:
    if match[1].islower():
        return False
    if match[0] != ".":
        return True
    start = match.start()
    space = max(line.rfind(" ", 0, start), line.rfind("\t", 0, start))
    word = line[space + 1 : start].lstrip("\"'“‘([")
    if len(word) > _LONGEST_ABBREVIATION and "." not in word:
        # longer than any abbreviation or list number, and not dotted: most words
        return True
    return not (
        word.lower() in _ABBREVIATIONS
        or (len(word) == 1 and word.isalpha())
        or ("." in word and _DOTTED_ABBREVIATION.fullmatch(word) is not None)
        or (word.isdigit() and len(word) <= 3)
    )


def _stripped_pieces(chunk: str) -> Iterator[Piece]:
    """The chunk's core as a piece, and the whitespace and stray brackets around it as others."""
    head = chunk.lstrip(_LEADING)
    core = head.rstrip(_TRAILING)
    if not core:
        if chunk:
            yield Piece(chunk, translate=False)
        return
    start = len(chunk) - len(head)
    end = start + len(core)
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
    run: list[Piece] = []
    for piece in pieces:
        if not piece.translate:
            run.append(piece)
            continue
        if run:
            merged.append(_merged_run(run))
            run = []
        merged.append(piece)
    if run:
        merged.append(_merged_run(run))
    return merged


def _merged_run(run: list[Piece]) -> Piece:
    """One verbatim piece for consecutive ones; a verbatim piece alone is itself (it is its text
    and output, nothing else)."""
    if len(run) == 1:
        return run[0]
    output = (
        None
        if all(piece.output is None for piece in run)
        else "".join(piece.text if piece.output is None else piece.output for piece in run)
    )
    return Piece("".join(piece.text for piece in run), False, output)


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
