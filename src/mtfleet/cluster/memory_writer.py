"""The translation memory's writer in a coordinator: what an accepted completion asks the memory to
keep is written by a thread of its own, so that the translator leases its next shard at once.

A completion's entries are first written to a journal file in the job's work dir (`JOURNAL`, one
MessagePack file a completion, without fsync: SQLite's own NORMAL gives no more), and only then is
the completion answered. The writer's thread gathers completions for up to GATHER_S or until
GATHER_ENTRIES wait, then keeps what waits (up to BATCH_ENTRIES at once) and removes those files:
many completions written together in key order cost far less an entry than each alone (on SQLite
the memory writes them in transactions of a few thousand, `memory._upsert`, so that a lease or a
completion waits for one of those, never for the whole batch). Until
then the coordinator's recall answers from what waits (`waiting_for`), so a job's later shards take
what its earlier ones translated at once. A coordinator that starts again keeps what an earlier
one's files still hold (`replay`) before its first lease. The job's end waits for the writer
(`flush`, which writes what waits at once), so a job that succeeded has its every translation in
the memory before the next one plans. The memory is advice: a batch the store refuses is logged
and left to the next replay.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import msgpack

from mtfleet.store.memory import Remembered, TranslationMemory

log = logging.getLogger(__name__)

# The journal's folder in a job's work dir.
JOURNAL = "memory-journal"
# A journal file's suffix: MessagePack, which packs a shard's entries in a sixth of the time JSON
# took, in the completion's answer; JSON, an earlier coordinator's, is still read.
_PACKED, _JSON = ".msgpack", ".json"
# Entries kept at once at most (the memory cuts them into transactions of its own on SQLite).
BATCH_ENTRIES = 50_000
# The writer waits for this many entries, or this long after the first, before it writes: on
# SQLite, in one process, 320,000 entries took 5.1 s in transactions of 7,800 (an alpaca shard's
# of bench/scale.py) and 2.5 s in transactions of 39,000: a commit writes every page it changed,
# and random sha256 keys change a page an entry unless many share it.
GATHER_ENTRIES = 40_000
GATHER_S = 2.0

# A completion's entries: segment sha256 to its translation and flags, by memory signature.
Entries = Mapping[str, Mapping[str, Remembered]]


class MemoryWriter:
    """Keeps accepted completions' entries in `memory`, journaled under `work_dir`."""

    def __init__(self, memory: TranslationMemory, work_dir: Path) -> None:
        self.memory = memory
        self.folder = work_dir / JOURNAL
        self.changed = threading.Condition()
        self.waiting: list[tuple[Path, Entries]] = []
        # the batch being written (empty while none is): recalled from here until it is stored
        self.in_flight: list[tuple[Path, Entries]] = []
        self.flushing = 0
        self.thread: threading.Thread | None = None

    def keep(self, entries: Entries) -> None:
        """Journals `entries` and hands them to the writer's thread; returns before they are
        written."""
        if not any(entries.values()):
            return
        self.folder.mkdir(exist_ok=True)
        # named by the clock, so that a replay keeps them in the order they came
        path = self.folder / f"{time.time_ns():020d}-{threading.get_ident()}{_PACKED}"
        path.write_bytes(msgpack.packb(entries))
        self._hand_over([(path, entries)])

    def replay(self) -> int:
        """Hands the writer what an earlier coordinator's journal holds still; how many files."""
        found = []
        journaled = self.folder.glob("*") if self.folder.is_dir() else []
        for path in sorted(p for p in journaled if p.suffix in (_PACKED, _JSON)):
            try:
                found.append((path, _read_journal(path)))
            except Exception:  # a file cut short by a crash: its shard's entries are lost
                log.warning("the memory journal %s cannot be read; skipped", path)
                path.unlink(missing_ok=True)
        self._hand_over(found)
        if found:
            log.info("the translation memory keeps %d completions journaled before", len(found))
        return len(found)

    def flush(self) -> None:
        """Writes what waits at once, and waits until everything handed over so far is written
        (or was refused by the store)."""
        with self.changed:
            self.flushing += 1
            self.changed.notify_all()
            try:
                self.changed.wait_for(lambda: not self.waiting and not self.in_flight)
            finally:
                self.flushing -= 1

    def waiting_for(self, signature: str, hashes: Sequence[str]) -> dict[str, Remembered]:
        """What the completions handed over and not yet written keep of these segments (sha256)
        under `signature`; of two, the later one's."""
        with self.changed:
            pending = [entries.get(signature) for _, entries in [*self.in_flight, *self.waiting]]
        found: dict[str, Remembered] = {}
        for kept in filter(None, pending):
            found.update((sha, kept[sha]) for sha in hashes if sha in kept)
        return found

    def _hand_over(self, journaled: list[tuple[Path, Entries]]) -> None:
        if not journaled:
            return
        with self.changed:
            self.waiting.extend(journaled)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="memory", daemon=True)
                self.thread.start()
            self.changed.notify_all()

    def _gathered(self) -> bool:
        """Whether what waits is to be written before GATHER_S is up (the lock held)."""
        return bool(self.flushing) or sum(_size(e) for _, e in self.waiting) >= GATHER_ENTRIES

    def _run(self) -> None:
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.waiting)
                self.changed.wait_for(self._gathered, GATHER_S)
                batch = _first_batch(self.waiting)
                del self.waiting[: len(batch)]
                self.in_flight = batch
            try:
                self.memory.remember_all(_merged(entries for _, entries in batch))
                for path, _ in batch:
                    path.unlink(missing_ok=True)
            except Exception:
                log.exception("the translation memory could not keep %d completions", len(batch))
            finally:
                with self.changed:
                    self.in_flight = []
                    self.changed.notify_all()


def _read_journal(path: Path) -> dict[str, dict[str, Remembered]]:
    """A journal file's entries (MessagePack or JSON: data, never code, whoever could write the
    work dir)."""
    if path.suffix == _JSON:
        entries = json.loads(path.read_text(encoding="utf-8"))
    else:
        entries = msgpack.unpackb(path.read_bytes())
    return {
        signature: {sha: (text, list(flags)) for sha, (text, flags) in kept.items()}
        for signature, kept in entries.items()
    }


def _first_batch(waiting: list[tuple[Path, Entries]]) -> list[tuple[Path, Entries]]:
    """The oldest completions waiting, as many as BATCH_ENTRIES holds (one at least)."""
    size = 0
    for n, (_, entries) in enumerate(waiting):
        size += _size(entries)
        if size > BATCH_ENTRIES and n:
            return waiting[:n]
    return list(waiting)


def _size(entries: Entries) -> int:
    return sum(len(kept) for kept in entries.values())


def _merged(completions: Iterable[Entries]) -> dict[str, dict[str, Remembered]]:
    """The entries of several completions by signature; a later one's translation of a segment
    replaces an earlier one's, as their writes one after the other would."""
    merged: dict[str, dict[str, Remembered]] = {}
    for entries in completions:
        for signature, kept in entries.items():
            merged.setdefault(signature, {}).update(kept)
    return merged
