"""The translation memory: a segment translated once is taken from it by every job after, of the
same model and settings; what changes a translation changes the key; it is bounded, exported and
imported, and a job taken wholly from it equals the job that filled it, byte for byte."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mtfleet.cli.main import app
from mtfleet.cluster import run_job
from mtfleet.cluster.assemble import assemble
from mtfleet.cluster.parts import part_path, write_part
from mtfleet.cluster.plan import UnitFiller, UnitReader, plan_job, units_memory_keys
from mtfleet.cluster.translator import KnownSegments, RelayedMemory
from mtfleet.engines.reverse import FAIL_ON_VARIABLE, ReverseEngine
from mtfleet.pipeline import translate_texts
from mtfleet.spec import JobSpec, memory_settings, stored_spec
from mtfleet.store import JobStore
from mtfleet.store.memory import (
    ENTRY_OVERHEAD_BYTES,
    TOUCH_AFTER_S,
    TranslationMemory,
    memory_key,
    memory_signature,
    segment_sha256,
)
from mtfleet.testing.cluster import reverse_spec, write_jsonl

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def store(store_url: str) -> Iterator[JobStore]:
    with JobStore(store_url) as opened:
        yield opened


class DictMemory:
    """A memory in a dict, as the pipeline sees one."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, list[str]]] = {}

    def recall(self, segments: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
        return {s: self.held[s] for s in segments if s in self.held}

    def remember(self, entries: Mapping[str, tuple[str, list[str]]]) -> None:
        self.held.update(entries)


def test_segments_the_memory_holds_never_reach_the_engine_and_come_back_the_same() -> None:
    memory = DictMemory()
    texts = ["The cat sat. It was late.", "The cat sat.", ""]
    first_engine = ReverseEngine()
    first = translate_texts(texts, first_engine, memory=memory)
    assert first.segments_from_memory == 0
    assert set(memory.held) == {"The cat sat.", "It was late."}

    again_engine = ReverseEngine()
    again = translate_texts([*texts, "New words."], again_engine, memory=memory)

    assert again_engine.calls == [["New words."]]
    assert again.translations[:3] == first.translations
    assert again.segments_from_memory == 2
    assert again.source_tokens == 3  # only what the engine was given


class AskedCoordinator:
    """A coordinator that holds `held` (segment sha256 to its entry) and records what it is
    asked."""

    def __init__(self, held: Mapping[str, tuple[str, list[str]]]) -> None:
        self.held, self.asked = held, []

    def recall(self, key: str, hashes: list[str]) -> dict[str, tuple[str, list[str]]]:
        self.asked.append(hashes)
        return {sha: self.held[sha] for sha in hashes if sha in self.held}


def test_a_translator_asks_its_coordinator_once_for_a_segment_it_recalled_or_had_kept() -> None:
    cat, late, new = (segment_sha256(s) for s in ("The cat sat.", "It was late.", "New words."))
    coordinator = AskedCoordinator({cat: (".tas tac ehT", ["loop"])})
    known = KnownSegments(limit=2)
    first = RelayedMemory(coordinator, "sig", known)  # type: ignore[arg-type]
    translate_texts(["The cat sat. It was late."], ReverseEngine(), memory=first)
    known.add(first.kept)  # its shard's completion was accepted

    engine = ReverseEngine()
    second = RelayedMemory(coordinator, "sig", known)  # type: ignore[arg-type]
    again = translate_texts(["It was late. The cat sat.", "New words."], engine, memory=second)

    assert coordinator.asked == [[cat, late], [new]]
    assert engine.calls == [["New words."]]
    assert again.translations == [".etal saw tI .tas tac ehT", ".sdrow weN"]
    assert again.segments_from_memory == 2
    known.add(second.kept)
    assert list(known.entries) == [late, new], "the first learnt goes first, past the limit"


def test_the_key_changes_with_what_changes_a_translation_and_not_with_where_it_ran() -> None:
    spec = JobSpec(input="in", output="out", model="m", fields=["text"], tgt_lang="de")
    described = {
        "engine": "hf",
        "weights_sha256": "abc",
        "model_dir": "/models/a",
        "settings": {"beam": 1, "threads": 2, "device": "cuda:0", "max_batch_tokens": 8192},
        "versions": {"torch": "2.13.0"},
    }
    key = memory_signature(described, memory_settings(spec))
    elsewhere = {
        **described,
        "model_dir": "/mnt/copy",
        "settings": {"beam": 1, "threads": 8, "device": "cuda:3", "max_batch_tokens": 2048},
    }
    assert memory_signature(elsewhere, memory_settings(spec)) == key
    for changed in (
        {**described, "weights_sha256": "abd"},
        {**described, "settings": {**described["settings"], "beam": 5}},
        {**described, "settings": {**described["settings"], "device": "cpu"}},
    ):
        assert memory_signature(changed, memory_settings(spec)) != key
    for setting in ({"tgt_lang": "fr"}, {"glossary": {"cat": "Katze"}}, {"checks": False}):
        other = spec.model_copy(update=setting)
        assert memory_signature(described, memory_settings(other)) != key


def test_the_memory_keeps_recalls_bounds_and_moves_between_stores(
    store: JobStore, tmp_path: Path
) -> None:
    memory = TranslationMemory(store)
    entries = {
        segment_sha256(f"segment {i}"): (f"Segment {i}", ["loop"] * (i % 2)) for i in range(6)
    }
    assert memory.remember("sig", entries) == 6
    memory.remember("other", {segment_sha256("segment 0"): ("Anders", [])})

    recalled = memory.recall("sig", [segment_sha256("segment 1"), segment_sha256("unknown")])
    assert recalled == {segment_sha256("segment 1"): ("Segment 1", ["loop"])}
    stats = memory.stats()
    assert (stats.entries, stats.signatures) == (7, 2)

    exported = tmp_path / "memory.parquet"
    assert memory.export(exported) == 7
    assert memory.clear("other") == 1
    assert memory.clear() == 6
    assert memory.import_(exported) == 7
    assert memory.recall("other", [segment_sha256("segment 0")]) == {
        segment_sha256("segment 0"): ("Anders", [])
    }

    # segment 1 was used last, long enough after it was kept to count: the least recently used
    # go until three are left
    with JobStore(store.url, clock=lambda: time.time() + 2 * TOUCH_AFTER_S) as later:
        TranslationMemory(later).recall("sig", [segment_sha256("segment 1")])
    three = 3 * (len("Segment 1") + ENTRY_OVERHEAD_BYTES)
    assert memory.evict(three) == 4
    assert memory.recall("sig", [segment_sha256("segment 1")])


def test_an_import_that_holds_a_key_twice_keeps_its_last_row(
    store: JobStore, tmp_path: Path
) -> None:
    keys = [segment_sha256(f"segment {i}") for i in (2, 0, 1)]
    rows = [
        {"signature": "sig", "source_sha256": sha, "target": target, "flags": [], "used_at": 1.0}
        for sha, target in [
            (keys[0], "first"),
            (keys[1], "Zero"),
            (keys[0], "last"),
            (keys[2], "One"),
        ]
    ]
    path = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    memory = TranslationMemory(store)
    assert memory.import_(path) == 4
    assert memory.recall("sig", keys) == {
        keys[0]: ("last", []),
        keys[1]: ("Zero", []),
        keys[2]: ("One", []),
    }


def test_two_entries_whose_keys_meet_share_a_row_and_neither_is_ever_the_others(
    store: JobStore,
) -> None:
    # two sha256s whose first 48 bits are the same: one key under one signature
    first, second = "0123456789ab" + "0" * 52, "0123456789ab" + "f" * 52
    assert memory_key("sig", first) == memory_key("sig", second)
    memory = TranslationMemory(store)
    memory.remember("sig", {first: ("Erste", [])})
    memory.remember("other", {first: ("Andere", [])})
    assert memory.recall("sig", [first, second]) == {first: ("Erste", [])}

    memory.remember("sig", {second: ("Zweite", ["loop"])})

    # the later entry holds the row; the earlier is only no longer found
    assert memory.recall("sig", [first, second]) == {second: ("Zweite", ["loop"])}
    assert memory.recall("other", [first, second]) == {first: ("Andere", [])}
    assert memory.holds(["sig"]) and memory.holds(["nothing", "other"])
    assert not memory.holds(["nothing"])
    assert memory.clear("sig") == 1
    assert not memory.holds(["sig"])
    assert memory.recall("other", [first]) == {first: ("Andere", [])}


def test_planning_fills_the_units_the_memory_holds_and_leases_only_shards_with_others(
    store: JobStore, tmp_path: Path
) -> None:
    rows = [{"id": i, "text": f"Row {i} says hello."} for i in range(200)]
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows)
    spec = JobSpec(
        input=str(dataset),
        output=str(tmp_path / "out.jsonl"),
        model="reverse",
        engine="reverse",
        fields=["text"],
        shard_tokens=50,
    )
    keys = units_memory_keys(spec)
    assert keys is not None
    key = keys[spec.tgt_lang]
    changed = {10, 11, 150}
    # an earlier job of these settings translated every row but three
    TranslationMemory(store).remember(
        key,
        {
            segment_sha256(row["text"]): (row["text"][::-1], ["length_ratio"] if i == 3 else [])
            for i, row in enumerate(rows)
            if i not in changed
        },
    )
    work = tmp_path / "work"
    store.jobs.create("job", stored_spec(spec, "key"), None)
    plan = plan_job(spec, work, UnitFiller(store, keys, several_targets=False))
    store.jobs.add_plan("job", plan)

    units = UnitReader(work)
    translated, leased_rows = [], 0
    while (lease := store.leases.take("job", "here", 60.0)) is not None:
        leased_rows += lease.row_end - lease.row_start
        lines = units.read(lease.row_start, lease.row_end)
        translated += [line.row for line in lines if line.filled is None]
        part = [
            line.with_filled() if line.filled else replace(line, text=line.text[::-1])
            for line in lines
        ]
        path = part_path(work, lease.row_start, lease.row_end, lease.lease_id)
        write_part(path, part)
        filled = sum(line.filled is not None for line in lines)
        store.leases.complete(
            "job", lease.index, lease.lease_id, path, {"units_from_memory": filled}
        )
    manifest = assemble(store, "job", work)

    assert sorted(translated) == sorted(changed)
    # the shards of only remembered rows were done at planning
    assert any(shard.part_path for shard in plan)
    assert leased_rows < len(rows) // 2
    assert manifest["units_from_memory"] == len(rows) - len(changed)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["text"] for row in out] == [row["text"][::-1] for row in rows]
    assert manifest["health"]["units_flagged"] == 1


def test_planning_tells_of_work_once_when_the_memory_lacks_units_and_never_when_it_holds_all(
    store: JobStore, tmp_path: Path
) -> None:
    rows = [{"id": i, "text": f"Row {i} says hello."} for i in range(3000)]
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows)
    spec = reverse_spec(dataset, tmp_path / "out.jsonl", ["text"])
    keys = units_memory_keys(spec)
    assert keys is not None
    held = {segment_sha256(row["text"]): (row["text"][::-1], []) for row in rows}
    TranslationMemory(store).remember(keys[spec.tgt_lang], held)
    told: list[int] = []

    def plan(units_planned: int) -> None:
        filler = UnitFiller(store, keys, False, on_work=lambda: told.append(units_planned))
        plan_job(spec, tmp_path / f"work-{units_planned}", filler)

    plan(0)
    assert told == []  # the memory holds every unit: no translator is wanted
    write_jsonl(
        dataset, [*rows[:2000], *({**row, "text": row["text"] + " Again."} for row in rows[2000:])]
    )
    plan(1)
    assert told == [1]  # once, though 1,000 units are not held


@pytest.mark.cluster
def test_a_second_job_over_the_same_text_is_taken_wholly_from_memory_byte_for_byte(
    tmp_path: Path,
) -> None:
    rows = [{"id": i, "text": f"Sentence {i % 7} is here. And another one."} for i in range(30)]
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows)
    state = tmp_path / "state"

    # one translator, no backups: its shards one after another
    first = run_job(
        reverse_spec(
            dataset,
            tmp_path / "first.jsonl",
            ["text"],
            cpu_translators_per_node=1,
            speculative_tail=False,
        ),
        state_dir=state,
    )
    second = run_job(reverse_spec(dataset, tmp_path / "second.jsonl", ["text"]), state_dir=state)
    # a v2: two rows edited, two appended; its fresh translation is the memory's too
    rows[4]["text"] = "Sentence 4 was edited. And another one."
    rows[17]["text"] = "A new sentence. Sentence 3 is here."
    rows += [{"id": 30, "text": "Appended here."}, {"id": 31, "text": "Sentence 5 is here."}]
    v2 = write_jsonl(tmp_path / "rows-v2.jsonl", rows)
    mixed = run_job(reverse_spec(v2, tmp_path / "mixed.jsonl", ["text"]), state_dir=state)
    unremembered = run_job(
        reverse_spec(v2, tmp_path / "third.jsonl", ["text"], memory=False), state_dir=state
    )

    assert first.manifest is not None and second.manifest is not None
    # its later shards take what its first ones translated: 8 distinct segments in all
    assert first.manifest["segments_from_memory"] == first.manifest["segments_unique"] - 8
    # planning filled every unit of the second from the memory: no shard was leased, no segment
    # recalled or translated
    assert second.manifest["units_from_memory"] == second.manifest["units_translated"] == 30
    assert second.manifest["segments"] == second.manifest["segments_from_memory"] == 0
    assert second.manifest["engine_signatures"] == []
    assert unremembered.manifest is not None and mixed.manifest is not None
    assert unremembered.manifest["segments_from_memory"] == 0
    assert unremembered.manifest["units_from_memory"] == 0
    # the v2's unchanged rows were filled at planning, its edited ones translated
    assert mixed.manifest["units_from_memory"] == 28
    assert mixed.manifest["units_translated"] == 32
    assert (tmp_path / "second.jsonl").read_bytes() == (tmp_path / "first.jsonl").read_bytes()
    assert (tmp_path / "mixed.jsonl").read_bytes() == (tmp_path / "third.jsonl").read_bytes()

    result = CliRunner().invoke(app, ["memory", "stats", "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    # 11 distinct segments under the engine's key (8, and the v2's 3 new ones), 11 distinct texts
    # under planning's (7, and the v2's 4 new ones)
    assert "22 entries" in result.output


def test_planning_leaves_the_memory_alone_for_a_test_engine_that_must_be_reached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mtfleet.cluster.tasks import fills_from_memory

    spec = reverse_spec(tmp_path / "rows.jsonl", tmp_path / "out.jsonl", ["text"])
    assert fills_from_memory(spec)
    monkeypatch.setenv(FAIL_ON_VARIABLE, "boom")
    assert not fills_from_memory(spec)


def _hub_snapshot(cache: Path, model_id: str, commit: str, weights: bytes) -> None:
    """A snapshot of `model_id` in a Hugging Face hub cache's layout: blobs, a snapshot folder of
    links to them, and refs/main naming it."""
    repo = cache / ("models--" + model_id.replace("/", "--"))
    blob = repo / "blobs" / commit
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(weights)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_a_hub_model_is_keyed_by_its_cached_snapshot_and_not_by_its_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = JobSpec(input="in", output="out", model="org/mt-model", fields=["text"], tgt_lang="de")
    # not in the cache: its name says nothing of its weights, so planning fills nothing
    assert units_memory_keys(spec) is None

    _hub_snapshot(tmp_path / "hf" / "hub", "org/mt-model", "a" * 40, b"first weights")
    first = units_memory_keys(spec)
    _hub_snapshot(tmp_path / "hf" / "hub", "org/mt-model", "b" * 40, b"other weights")
    second = units_memory_keys(spec)
    # HF_HUB_CACHE names the cache itself
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    by_cache = units_memory_keys(spec)

    assert first is not None and second is not None
    assert first["de"] != second["de"]
    assert by_cache == second


@pytest.mark.cluster
def test_a_job_filled_wholly_at_planning_is_assembled_without_placing_a_translator(
    tmp_path: Path,
) -> None:
    rows = [{"id": i, "text": f"Row {i % 4} of the set."} for i in range(20)]
    dataset = write_jsonl(tmp_path / "rows.jsonl", rows)
    state = tmp_path / "state"
    first = run_job(reverse_spec(dataset, tmp_path / "first.jsonl", ["text"]), state_dir=state)

    again = run_job(reverse_spec(dataset, tmp_path / "again.jsonl", ["text"]), state_dir=state)

    assert again.state == "succeeded"
    with JobStore.for_state_dir(state) as store:
        kinds = [event.kind for event in store.events.page(again.job_id)]
        assert store.jobs.get(first.job_id).counters["translators_placed"] >= 1
        assert "translators_placed" not in store.jobs.get(again.job_id).counters
    assert kinds.index("planned") < kinds.index("succeeded")
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "first.jsonl").read_bytes()
