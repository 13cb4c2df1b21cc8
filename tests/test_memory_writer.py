"""The coordinator's memory writer: a completion's entries are journaled before it is answered and
written by a thread of their own, and found by a recall until they are; the job's end waits for
them, and a coordinator that starts again keeps what an earlier one journaled and never wrote."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgpack
import pytest

from mtfleet.cluster.memory_writer import JOURNAL, MemoryWriter
from mtfleet.store import JobStore
from mtfleet.store.memory import Remembered, TranslationMemory, segment_sha256


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    with JobStore(store_url) as opened:
        TranslationMemory(opened).clear()
        yield opened


class RefusingMemory(TranslationMemory):
    """A memory whose store refuses every write, as one that went away would."""

    def remember_all(self, entries: Mapping[str, Mapping[str, Remembered]]) -> int:
        raise OSError("the store went away")


class HeldMemory(TranslationMemory):
    """A memory whose writes wait until the test lets them go."""

    def __init__(self, store: JobStore) -> None:
        super().__init__(store)
        self.writing = threading.Event()
        self.go = threading.Event()

    def remember_all(self, entries: Mapping[str, Mapping[str, Remembered]]) -> int:
        self.writing.set()
        self.go.wait()
        return super().remember_all(entries)


def shard(n: int) -> dict[str, dict[str, Remembered]]:
    return {"sig": {segment_sha256(f"segment {n}"): (f"Segment {n}", ["loop"] * (n % 2))}}


def test_what_completions_hand_over_is_in_the_memory_once_flushed(
    store: JobStore, tmp_path: Path
) -> None:
    writer = MemoryWriter(TranslationMemory(store), tmp_path)
    for n in range(5):
        writer.keep(shard(n))
    writer.keep(shard(0) | {"sig": {segment_sha256("segment 0"): ("Again", [])}})
    writer.flush()

    held = TranslationMemory(store).recall(
        "sig", [segment_sha256(f"segment {n}") for n in range(5)]
    )
    assert len(held) == 5
    assert held[segment_sha256("segment 0")] == ("Again", [])
    assert held[segment_sha256("segment 1")] == ("Segment 1", ["loop"])
    assert not list((tmp_path / JOURNAL).iterdir())


def test_a_coordinator_started_again_keeps_what_an_earlier_one_journaled_and_never_wrote(
    store: JobStore, tmp_path: Path
) -> None:
    lost = MemoryWriter(RefusingMemory(store), tmp_path)
    lost.keep(shard(1))
    lost.keep(shard(2))
    lost.flush()
    assert not TranslationMemory(store).recall("sig", [segment_sha256("segment 1")])

    again = MemoryWriter(TranslationMemory(store), tmp_path)
    assert again.replay() == 2
    again.flush()

    held = TranslationMemory(store).recall(
        "sig", [segment_sha256("segment 1"), segment_sha256("segment 2")]
    )
    assert held == {
        segment_sha256("segment 1"): ("Segment 1", ["loop"]),
        segment_sha256("segment 2"): ("Segment 2", []),
    }
    assert again.replay() == 0


@pytest.mark.parametrize(
    ("name", "cut"),
    [("1-1.msgpack", msgpack.packb(shard(1))[:-5]), ("1-1.json", b'{"sig": {"ab')],
)
def test_a_journal_file_cut_short_by_a_crash_is_skipped(
    store: JobStore, tmp_path: Path, name: str, cut: bytes
) -> None:
    (tmp_path / JOURNAL).mkdir()
    (tmp_path / JOURNAL / name).write_bytes(cut)
    writer = MemoryWriter(TranslationMemory(store), tmp_path)

    assert writer.replay() == 0
    assert not list((tmp_path / JOURNAL).iterdir())


def test_what_an_earlier_coordinator_journaled_as_json_is_kept_in_order_with_the_rest(
    store: JobStore, tmp_path: Path
) -> None:
    (tmp_path / JOURNAL).mkdir()
    (tmp_path / JOURNAL / "00000000000000000001-1.json").write_text(json.dumps(shard(1)))
    later = {"sig": {segment_sha256("segment 1"): ("Later", [])}}
    (tmp_path / JOURNAL / "00000000000000000002-1.msgpack").write_bytes(msgpack.packb(later))
    writer = MemoryWriter(TranslationMemory(store), tmp_path)

    assert writer.replay() == 2
    writer.flush()

    assert TranslationMemory(store).recall("sig", [segment_sha256("segment 1")]) == {
        segment_sha256("segment 1"): ("Later", [])
    }
    assert not list((tmp_path / JOURNAL).iterdir())


def test_what_waits_to_be_written_is_found_until_the_store_holds_it(
    store: JobStore, tmp_path: Path
) -> None:
    memory = HeldMemory(store)
    writer = MemoryWriter(memory, tmp_path)
    hashes = [segment_sha256(f"segment {n}") for n in range(3)]
    writer.keep(shard(0))
    writer.keep(shard(1) | {"other": {hashes[2]: ("Elsewhere", [])}})
    flushed = threading.Thread(target=writer.flush)
    flushed.start()
    memory.writing.wait()

    # being written: not in the store yet, found where it waits
    assert not TranslationMemory(store).recall("sig", hashes)
    assert writer.waiting_for("sig", hashes) == {
        hashes[0]: ("Segment 0", []),
        hashes[1]: ("Segment 1", ["loop"]),
    }
    assert writer.waiting_for("other", hashes) == {hashes[2]: ("Elsewhere", [])}

    memory.go.set()
    flushed.join()
    assert writer.waiting_for("sig", hashes) == {}
    assert len(TranslationMemory(store).recall("sig", hashes)) == 2
