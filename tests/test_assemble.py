"""Planning and assembly stream: one pass each, a shard's rows at a time, parts checked against
their place; a folder of data files is one job whose output mirrors it."""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mtfleet.cluster.assemble import assemble
from mtfleet.cluster.parts import part_path, read_part, write_part
from mtfleet.cluster.plan import UnitReader, plan_job
from mtfleet.errors import JobError
from mtfleet.spec import JobSpec, stored_spec
from mtfleet.store import JobState, JobStore
from mtfleet.testing.cluster import write_jsonl

TTL_S = 60.0


def run_without_ray(
    spec: JobSpec, work_dir: Path, store: JobStore, translate=lambda text: text[::-1]
) -> str:
    """Plans the job, translates every shard in this process, and leaves it ready to assemble."""
    store.jobs.create("job", stored_spec(spec, "key"), None)
    store.jobs.add_plan("job", plan_job(spec, work_dir))
    units = UnitReader(work_dir)
    while (lease := store.leases.take("job", "here", TTL_S)) is not None:
        lines = units.read(lease.row_start, lease.row_end)
        path = part_path(work_dir, lease.row_start, lease.row_end, lease.lease_id)
        write_part(path, [replace(line, text=translate(line.text)) for line in lines])
        store.leases.complete("job", lease.index, lease.lease_id, path, {"segments": len(lines)})
    return "job"


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore.for_state_dir(tmp_path / "state")


def alpaca_rows(count: int) -> list[dict[str, str]]:
    return [
        {
            "instruction": f"Give three tips for staying healthy, number {row}.",
            "input": "" if row % 3 else f"Context of row {row}.",
            "output": f"1. Eat a balanced diet.\n2. Exercise.\n3. Sleep {row} hours.",
        }
        for row in range(count)
    ]


def spec_for(input: Path, output: Path, **settings: object) -> JobSpec:
    return JobSpec(
        input=str(input),
        output=str(output),
        model="reverse",
        engine="reverse",
        fields=["instruction", "input", "output"],
        **settings,
    )


def test_the_assembled_output_puts_every_translation_in_its_row_and_field(
    tmp_path: Path, store: JobStore
) -> None:
    rows = alpaca_rows(500)
    spec = spec_for(
        write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", shard_tokens=300
    )
    run_without_ray(spec, tmp_path / "work", store)

    manifest = assemble(store, "job", tmp_path / "work")

    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == [{key: value[::-1] for key, value in row.items()} for row in rows]
    assert manifest["shards"] > 10
    assert manifest["units_translated"] == sum(1 for row in rows for value in row.values() if value)
    assert manifest["units_skipped_empty"] == sum(1 for row in rows if not row["input"])


def test_a_part_holding_a_unit_outside_its_shard_fails_the_job_loudly_and_writes_nothing(
    tmp_path: Path, store: JobStore
) -> None:
    spec = spec_for(
        write_jsonl(tmp_path / "in.jsonl", alpaca_rows(100)),
        tmp_path / "out.jsonl",
        shard_tokens=300,
    )
    run_without_ray(spec, tmp_path / "work", store)
    second = store.shards.in_row_order("job")[1]
    lines = list(read_part(Path(second.part_path)))
    write_part(Path(second.part_path), [replace(lines[0], row=second.row_end + 5), *lines[1:]])

    with pytest.raises(JobError, match=rf"holds row {second.row_end + 5}, outside its rows"):
        assemble(store, "job", tmp_path / "work")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_part_whose_unit_names_another_field_fails_the_job_loudly(
    tmp_path: Path, store: JobStore
) -> None:
    spec = spec_for(write_jsonl(tmp_path / "in.jsonl", alpaca_rows(20)), tmp_path / "out.jsonl")
    run_without_ray(spec, tmp_path / "work", store)
    (shard,) = store.shards.in_row_order("job")
    lines = list(read_part(Path(shard.part_path)))
    write_part(Path(shard.part_path), [replace(lines[0], location="output"), *lines[1:]])

    with pytest.raises(JobError, match=r"does not hold unit 0 at row 0, field instruction"):
        assemble(store, "job", tmp_path / "work")
    assert not (tmp_path / "out.jsonl").exists()


def test_an_input_changed_after_planning_is_refused_at_assembly(
    tmp_path: Path, store: JobStore
) -> None:
    input = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(20))
    spec = spec_for(input, tmp_path / "out.jsonl")
    run_without_ray(spec, tmp_path / "work", store)
    input.write_text(input.read_text().replace("healthy", "wealthy"))

    with pytest.raises(JobError, match=r"in\.jsonl changed while job job ran"):
        assemble(store, "job", tmp_path / "work")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_folder_of_jsonl_files_is_one_job_whose_output_folder_mirrors_it(
    tmp_path: Path, store: JobStore
) -> None:
    rows = alpaca_rows(90)
    data = tmp_path / "data"
    for part, start in (("train/part-0.jsonl", 0), ("train/part-1.jsonl", 40), ("test.jsonl", 70)):
        write_jsonl(data / part, rows[start : start + {0: 40, 40: 30, 70: 20}[start]])
    (data / ".hidden.jsonl").write_text("not data\n")
    spec = spec_for(data, tmp_path / "out", shard_tokens=200)
    run_without_ray(spec, tmp_path / "work", store)

    manifest = assemble(store, "job", tmp_path / "work")

    names = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*"))
    assert names == ["test.jsonl", "train", "train/part-0.jsonl", "train/part-1.jsonl"]
    first = json.loads((tmp_path / "out/train/part-1.jsonl").read_text().splitlines()[0])
    assert first["instruction"] == rows[40]["instruction"][::-1]
    assert [(Path(f["input"]).name, f["rows"]) for f in manifest["files"]] == [
        ("test.jsonl", 20),
        ("part-0.jsonl", 40),
        ("part-1.jsonl", 30),
    ]
    assert manifest["rows"] == 90
    assert Path(str(tmp_path / "out") + ".manifest.json").is_file()


def test_a_parquet_glob_comes_out_mirrored_with_its_schema(tmp_path: Path, store: JobStore) -> None:
    schema = pa.schema([("id", pa.int32()), ("instruction", pa.string()), ("input", pa.string()),
                        ("output", pa.string())])  # fmt: skip
    rows = [{"id": n, **row} for n, row in enumerate(alpaca_rows(60))]
    for shard in range(3):
        table = pa.Table.from_pylist(rows[shard * 20 : (shard + 1) * 20], schema=schema)
        pq.write_table(table, tmp_path / f"train-{shard:05d}-of-00003.parquet")
    spec = spec_for(Path(f"{tmp_path}/train-*.parquet"), tmp_path / "out", shard_tokens=200)
    run_without_ray(spec, tmp_path / "work", store)

    assemble(store, "job", tmp_path / "work")

    second = pq.read_table(tmp_path / "out/train-00001-of-00003.parquet")
    assert second.schema == schema
    assert second.to_pylist()[0] == {
        "id": 20,
        **{key: value[::-1] for key, value in rows[20].items() if key != "id"},
    }


def test_assembling_60k_rows_holds_a_shard_at_a_time_not_the_dataset(
    tmp_path: Path, store: JobStore
) -> None:
    input = write_jsonl(tmp_path / "in.jsonl", alpaca_rows(60_000))
    spec = spec_for(input, tmp_path / "out.jsonl")
    run_without_ray(spec, tmp_path / "work", store)
    tracemalloc.start()
    try:
        assemble(store, "job", tmp_path / "work")
        _, assembled_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # The input is 10 MB; held as Python rows (as assembly once did) it takes ten times that.
    assert input.stat().st_size > 9_000_000
    assert assembled_peak < 30_000_000, assembled_peak
    assert store.jobs.get("job").state is JobState.RUNNING
    assert (tmp_path / "out.jsonl").stat().st_size == input.stat().st_size


def test_the_manifest_lists_the_first_failed_rows_and_counts_them_all(
    tmp_path: Path, store: JobStore
) -> None:
    rows = alpaca_rows(150)
    spec = spec_for(
        write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl", shard_tokens=16
    )
    store.jobs.create("job", stored_spec(spec, "key"), None)
    store.jobs.add_plan("job", plan_job(spec, tmp_path / "work"))
    # every row its own shard (a row is over 16 tokens), and every shard failed as a broken engine fails
    while (lease := store.leases.take("job", "here", TTL_S)) is not None:
        store.shards.fail("job", lease.index, lease.lease_id, "ValueError: broken")

    manifest = assemble(store, "job", tmp_path / "work")

    assert manifest["rows_failed"] == 150
    assert [failure["row"] for failure in manifest["failures"]] == list(range(100))
