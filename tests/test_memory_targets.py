"""The translation memory in a job into several target languages: each language is kept and
looked up under the key a job into it alone has, at planning (whole units) and at translation
(segments); a unit is filled, and a shard done at planning, only when every language holds it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mtfleet.cluster import run_job
from mtfleet.cluster.parts import read_part
from mtfleet.cluster.plan import UnitFiller, UnitReader, plan_job, units_memory_keys
from mtfleet.store import JobStore
from mtfleet.store.memory import TranslationMemory, segment_sha256
from mtfleet.testing.cluster import reverse_spec

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TARGETS = ["mr", "hi"]


def _dataset(folder: Path, rows: int) -> Path:
    dataset = folder / "rows.jsonl"
    dataset.write_text(
        "".join(json.dumps({"id": i, "text": f"Row {i} says hello."}) + "\n" for i in range(rows))
    )
    return dataset


def _manifest(output: Path) -> dict[str, Any]:
    return json.loads(Path(f"{output}.manifest.json").read_text())


def test_each_target_is_keyed_as_a_job_into_it_alone() -> None:
    together = reverse_spec(
        Path("in.jsonl"), Path("out.{tgt_lang}.jsonl"), ["text"], tgt_lang=TARGETS
    )
    keys = units_memory_keys(together)
    assert keys is not None
    for target in TARGETS:
        alone = reverse_spec(
            Path("in.jsonl"), Path(f"out.{target}.jsonl"), ["text"], tgt_lang=target
        )
        assert keys[target] == (units_memory_keys(alone) or {})[target]
    assert keys["mr"] != keys["hi"]


def test_a_unit_is_filled_only_when_every_target_holds_it_and_its_shard_done_only_then(
    tmp_path: Path,
) -> None:
    dataset = _dataset(tmp_path, 40)
    output = tmp_path / "out.{tgt_lang}.jsonl"
    spec = reverse_spec(dataset, output, ["text"], shard_tokens=50, tgt_lang=TARGETS)
    keys = units_memory_keys(spec)
    assert keys is not None
    texts = [f"Row {i} says hello." for i in range(40)]
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        memory = TranslationMemory(store)
        # every row in mr; in hi, all but rows 0 to 9
        memory.remember(keys["mr"], {segment_sha256(t): (f"mr {t}", []) for t in texts})
        memory.remember(keys["hi"], {segment_sha256(t): (f"hi {t}", []) for t in texts[10:]})
        plan = plan_job(spec, tmp_path / "work", UnitFiller(store, keys, several_targets=True))

    lines = UnitReader(tmp_path / "work").read(0, 40)
    assert [line.row for line in lines if line.filled is None] == list(range(10))
    assert lines[10].filled == {
        "mr": ("mr Row 10 says hello.", ()),
        "hi": ("hi Row 10 says hello.", ()),
    }
    done = [shard for shard in plan if shard.part_path]
    assert done and all(shard.row_start >= 10 for shard in done)
    assert all(shard.est_tokens for shard in plan if shard.row_start < 10)
    part = list(read_part(Path(done[0].part_path or "")))
    text = texts[part[0].row]
    assert part[0].targets == {"mr": (f"mr {text}", ()), "hi": (f"hi {text}", ())}


@pytest.mark.cluster
def test_a_job_into_two_targets_run_again_translates_nothing_and_writes_the_same_bytes(
    tmp_path: Path,
) -> None:
    dataset = _dataset(tmp_path, 30)
    state = tmp_path / "state"

    def job(name: str) -> Any:
        (tmp_path / name).mkdir()
        output = tmp_path / name / "out.{tgt_lang}.jsonl"
        return run_job(reverse_spec(dataset, output, ["text"], tgt_lang=TARGETS), state_dir=state)

    first, again = job("first"), job("again")

    assert first.manifest is not None and again.manifest is not None
    assert first.job_id != again.job_id
    for target in TARGETS:
        counts = again.manifest["targets"][target]
        assert counts["units_from_memory"] == counts["units_translated"] == 30
        assert counts["segments"] == counts["segments_from_memory"] == 0
        written = (tmp_path / "first" / f"out.{target}.jsonl").read_bytes()
        assert (tmp_path / "again" / f"out.{target}.jsonl").read_bytes() == written
    assert again.manifest["engine_signatures"] == []


@pytest.mark.cluster
def test_a_job_into_two_targets_takes_the_one_an_earlier_job_translated_from_memory(
    tmp_path: Path,
) -> None:
    dataset = _dataset(tmp_path, 30)
    state = tmp_path / "state"
    run_job(
        reverse_spec(dataset, tmp_path / "out.mr.jsonl", ["text"], tgt_lang="mr"), state_dir=state
    )

    (tmp_path / "both").mkdir()
    output = tmp_path / "both" / "out.{tgt_lang}.jsonl"
    both = run_job(reverse_spec(dataset, output, ["text"], tgt_lang=TARGETS), state_dir=state)

    assert both.manifest is not None
    marathi, hindi = both.manifest["targets"]["mr"], both.manifest["targets"]["hi"]
    # no unit is in both languages: each is translated, its Marathi segments recalled
    assert marathi["units_from_memory"] == hindi["units_from_memory"] == 0
    assert marathi["segments_from_memory"] == marathi["segments_unique"] == 30
    assert hindi["segments_from_memory"] == 0
    written = (tmp_path / "out.mr.jsonl").read_bytes()
    assert (tmp_path / "both" / "out.mr.jsonl").read_bytes() == written
