"""The benchmark's inputs: the alpaca sample scaled up, long fields, short unique sentences.

Each workload is a list of rows plus the fields to translate, written to a JSON file so the job
rows read exactly what the in-process rows are given.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
ALPACA_SAMPLE = SHARED_DATA / "alpaca_sample.json"
MULTI30K = SHARED_DATA / "multi30k"
WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    rows: list[dict[str, Any]]
    fields: list[str]
    path: Path

    def head(self, rows: int) -> Workload:
        """The first `rows` rows, saved beside the whole, for the slow pipelines."""
        if rows >= len(self.rows):
            return self
        return _saved(
            Workload(
                self.name,
                f"the first {rows} rows of: {self.description}",
                self.rows[:rows],
                self.fields,
                self.path.with_name(f"{self.path.stem}-head{self.path.suffix}"),
            )
        )

    def texts_by_field(self) -> dict[str, list[str]]:
        """Every field's values in file order, empty ones included (the seed pipeline's view)."""
        return {field: [str(row.get(field) or "") for row in self.rows] for field in self.fields}

    def texts(self) -> list[str]:
        """The values mtfleet translates: non-empty strings, row by row, field by field."""
        return [
            row[field]
            for row in self.rows
            for field in self.fields
            if isinstance(row.get(field), str) and row[field].strip()
        ]


def multi30k_sentences(split: str = "train") -> list[str]:
    """English Multi30k captions of `split`, distinct, in file order."""
    with gzip.open(MULTI30K / f"{split}.en.gz", "rt", encoding="utf-8") as stream:
        return list(dict.fromkeys(line.strip() for line in stream if line.strip()))


def alpaca(rows: int, out_dir: Path) -> Workload:
    """The alpaca sample repeated with its words re-spelt, to `rows` rows.

    Copy k > 0 maps every word of the sample to another English word of the same length, the same
    word to the same word throughout the copy: the copies are new text with the sample's own share
    of empty inputs and repeated segments, its lengths, lists, numbers and code.
    """
    sample = json.loads(ALPACA_SAMPLE.read_text(encoding="utf-8"))
    words_by_length = _english_words_by_length()
    scaled = []
    for index in range(rows):
        copy, position = divmod(index, len(sample))
        row = sample[position]
        scaled.append(
            {key: _respelt(value, copy, words_by_length) for key, value in row.items()}
            if copy
            else dict(row)
        )
    return _saved(
        Workload(
            "alpaca",
            f"alpaca sample scaled to {rows} rows (54 of each 102 inputs empty)",
            scaled,
            ["instruction", "input", "output"],
            out_dir / "alpaca.json",
        )
    )


def long_fields(rows: int, words_per_field: int, out_dir: Path) -> Workload:
    """Rows whose `text` is a document of paragraphs, thousands of tokens long."""
    sentences = multi30k_sentences("val")
    rng = random.Random(1)
    documents = []
    for index in range(rows):
        paragraphs, words = [], 0
        while words < words_per_field:
            paragraph = " ".join(rng.sample(sentences, 6))
            paragraphs.append(paragraph)
            words += len(paragraph.split())
        documents.append({"id": index, "title": f"Report {index}", "text": "\n\n".join(paragraphs)})
    return _saved(
        Workload(
            "long",
            f"{rows} documents of about {words_per_field} words, in paragraphs",
            documents,
            ["title", "text"],
            out_dir / "long.json",
        )
    )


def short_unique(rows: int, out_dir: Path) -> Workload:
    """Distinct one-sentence captions: nothing to deduplicate, nothing to segment."""
    sentences = multi30k_sentences("train")[:rows]
    return _saved(
        Workload(
            "short",
            f"{len(sentences)} distinct Multi30k captions",
            [{"id": index, "text": sentence} for index, sentence in enumerate(sentences)],
            ["text"],
            out_dir / "short.json",
        )
    )


def _saved(workload: Workload) -> Workload:
    workload.path.parent.mkdir(parents=True, exist_ok=True)
    workload.path.write_text(json.dumps(workload.rows, ensure_ascii=False, indent=1), "utf-8")
    return workload


def _english_words_by_length() -> dict[int, list[str]]:
    words = sorted({word.lower() for line in multi30k_sentences() for word in WORD.findall(line)})
    by_length: dict[int, list[str]] = defaultdict(list)
    for word in words:
        by_length[len(word)].append(word)
    return by_length


def _respelt(value: Any, copy: int, words_by_length: dict[int, Sequence[str]]) -> Any:
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        word = match.group()
        choices = words_by_length.get(len(word)) or [word.lower()]
        # a stable hash (not Python's salted one), so every run builds the same rows
        pick = choices[zlib.crc32(f"{copy}:{word.lower()}".encode()) % len(choices)]
        return pick.capitalize() if word[0].isupper() else pick

    return WORD.sub(substitute, value)
