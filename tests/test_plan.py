"""The planner cuts a job into shards: every row in one, big ones first, small ones at the end,
as large as the fleet it is planned for can share evenly unless --shard-tokens says otherwise."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from mtfleet.cluster import plan
from mtfleet.cluster.plan import (
    CHARS_PER_TOKEN,
    FILLED_SHARE,
    FLEET_MOST_TOKENS,
    FLEET_SMALLEST_TOKENS,
    ShardCutter,
    ShardRule,
    ShardSizing,
    SpecRule,
    UnitReader,
    cut_shards,
    cut_shards_from_costs,
    plan_job,
    plan_steps,
)
from mtfleet.data import Unit, UnitKind
from mtfleet.spec import FIXED_SHARD_TOKENS, JobSpec, stored_identity
from mtfleet.testing.cluster import write_jsonl


def text_rows(tokens_per_row: list[int]) -> list[Unit]:
    """One text unit per row whose estimate is exactly the given token count."""
    return [
        Unit(
            row=row, location=("text",), kind=UnitKind.TEXT, text="x" * ((n - 1) * CHARS_PER_TOKEN)
        )
        for row, n in enumerate(tokens_per_row)
    ]


def covers_every_row_once(shards: list, rows: int) -> bool:
    ranges = [(s.row_start, s.row_end) for s in shards]
    return (
        ranges[0][0] == 0
        and ranges[-1][1] == rows
        and all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(ranges))
    )


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_every_row_belongs_to_exactly_one_shard_in_order(rows: int) -> None:
    shards = cut_shards(rows, text_rows([13] * rows), ShardSizing.fixed(200))
    assert covers_every_row_once(shards, rows)
    assert sum(s.units for s in shards) == rows
    assert sum(s.est_tokens for s in shards) == 13 * rows


def test_rows_without_text_still_belong_to_a_shard() -> None:
    units = [u for u in text_rows([10] * 10) if u.row % 3 == 0]
    shards = cut_shards(10, units, ShardSizing.fixed(15))
    assert covers_every_row_once(shards, 10)
    assert sum(s.units for s in shards) == 4


def test_a_big_job_gets_full_shards_first_and_shrinking_ones_at_the_end() -> None:
    shards = cut_shards(10_000, text_rows([10] * 10_000), ShardSizing.fixed(4000))  # 100,000 tokens
    sizes = [s.est_tokens for s in shards]
    assert sizes[:10] == [4000] * 10
    assert max(sizes) == 4000
    # no shard takes more than a quarter of what was left when it was cut
    left = sum(sizes)
    for size in sizes[:-1]:
        assert size <= max(4000 // 16, -(-left // 4)) + 10
        left -= size
    # the tail shrinks to the smallest share: 250 tokens, with the last one taking what is left
    assert sizes[-3:-1] == [250, 250]
    assert all(a >= b for a, b in itertools.pairwise(sizes))


def test_a_job_smaller_than_one_shard_is_still_cut_for_several_translators() -> None:
    shards = cut_shards(2000, text_rows([10] * 2000), ShardSizing.fixed(32_000))  # 20,000 tokens
    assert len(shards) >= 4
    assert shards[0].est_tokens == 5000  # a quarter of the job


def test_a_tiny_job_is_one_shard() -> None:
    # below the smallest share (32,000 / 16) there is nothing worth spreading
    assert len(cut_shards(100, text_rows([10] * 100), ShardSizing.fixed(32_000))) == 1


def test_a_row_bigger_than_a_shard_is_a_shard_of_its_own() -> None:
    shards = cut_shards(3, text_rows([5, 500, 5]), ShardSizing.fixed(100))
    assert [(s.row_start, s.row_end) for s in shards] == [(0, 2), (2, 3)]
    assert shards[0].est_tokens == 505


def test_units_filled_from_the_memory_cost_nothing_but_bound_a_shard_for_assembly() -> None:
    # 1,000 rows of 10 tokens, all filled but rows 500 and 501
    costs = [(0, 1, 10)] * 500 + [(10, 1, 0)] * 2 + [(0, 1, 10)] * 498
    shards = cut_shards_from_costs(costs, ShardSizing.fixed(100))

    assert covers_every_row_once(shards, 1000)
    # at most FILLED_SHARE shards' worth of filled tokens in one shard: 40 rows of 10
    assert max(s.row_end - s.row_start for s in shards) <= FILLED_SHARE * 100 // 10 + 2
    # only the shards of rows 500 and 501 have anything to translate
    to_translate = [s for s in shards if s.est_tokens]
    assert sum(s.est_tokens for s in to_translate) == 20
    assert all(s.row_start <= 501 and s.row_end > 500 for s in to_translate)


# --- shards sized to the fleet (no --shard-tokens)


def fleet_shards(total_tokens: int, translators: int) -> list[int]:
    """The estimated tokens of each shard of a job of 10-token rows, sized for the fleet."""
    costs = [(10, 1, 0)] * (total_tokens // 10)
    sizing = ShardSizing.for_fleet(total_tokens, translators)
    return [s.est_tokens for s in cut_shards_from_costs(costs, sizing)]


def test_a_one_translator_job_plans_no_shrinking_tail() -> None:
    assert fleet_shards(200_000, 1) == [200_000]
    # up to twice the memory bound: equal shards
    assert fleet_shards(400_000, 1) == [200_000] * 2
    # past it: shards of the bound, cut as the rows come, and the last two halves of the rest
    assert fleet_shards(1_000_000, 1) == [FLEET_MOST_TOKENS] * 2 + [244_000] * 2


def test_shards_sized_to_the_fleet_never_pass_the_memory_bound() -> None:
    for translators in (1, 2, 8):
        sizes = fleet_shards(10_000_000, translators)
        assert max(sizes) <= FLEET_MOST_TOKENS
        assert sum(sizes) == 10_000_000


def test_n_translators_get_a_tail_only_as_fine_as_n_of_them_need() -> None:
    sizes = fleet_shards(1_000_000, 4)
    # each translator's share (250,000) comes in at least three shards, the first ones full
    assert sizes[:8] == [83_340] * 8
    # then each at most a quarter of what is left, a row past it
    left = 1_000_000
    for size in sizes[:-1]:
        assert size <= max(15_625, -(-left // 4)) + 10
        left -= size
    assert all(a >= b for a, b in itertools.pairwise(sizes))
    # down to a sixteenth of a translator's share, the last one taking what is left
    assert min(sizes[:-1]) == 15_630


def test_a_bigger_fleet_gets_more_and_finer_shards() -> None:
    counts = [len(fleet_shards(1_000_000, n)) for n in (1, 2, 4, 8)]
    assert counts == sorted(counts)
    assert counts[0] == 4 and counts[-1] >= 4 * counts[1]
    assert min(fleet_shards(1_000_000, 8)) < min(fleet_shards(1_000_000, 2))


def test_a_job_a_fleet_would_split_too_finely_is_one_shard() -> None:
    assert fleet_shards(FLEET_SMALLEST_TOKENS, 8) == [FLEET_SMALLEST_TOKENS]


def test_an_explicit_shard_tokens_wins_over_the_fleet() -> None:
    spec = JobSpec(input="in.jsonl", output="out.jsonl", model="m", fields=["text"])
    assert SpecRule.of(spec, 1).sizing(1_000_000) == ShardSizing.for_fleet(1_000_000, 1)
    given = spec.model_copy(update={"shard_tokens": 4000})
    assert SpecRule.of(given, 1).sizing(1_000_000) == ShardSizing.fixed(4000)


def test_a_job_all_filled_from_the_memory_is_cut_by_the_filled_bound_not_row_by_row() -> None:
    costs = [(0, 1, 10)] * 100_000
    shards = cut_shards_from_costs(costs, ShardSizing.for_fleet(0, 1))
    assert covers_every_row_once(shards, 100_000)
    assert len(shards) == -(-100_000 * 10 // (FILLED_SHARE * FLEET_MOST_TOKENS))


def test_a_job_stored_with_the_old_fixed_default_keeps_its_identity_and_its_shards() -> None:
    # rerun after shards were sized to the fleet, its command finds it again (and its stored plan)
    sized = JobSpec(input="in.jsonl", output="out.jsonl", model="m", fields=["text"])
    stored_before = {**sized.model_dump(), "shard_tokens": FIXED_SHARD_TOKENS}
    assert sized.shard_tokens is None
    assert sized.identity() == stored_identity(stored_before)
    assert sized.default_job_id("key") != sized.model_copy(
        update={"shard_tokens": 4000}
    ).default_job_id("key")


# --- shards cut as the rows come, while the rest of the input is read


def random_costs(rng: random.Random, total_tokens: int) -> list[tuple[int, int, int]]:
    """Rows of every shape a dataset has: empty, short, long, a few huge, some filled."""
    costs: list[tuple[int, int, int]] = []
    seen = 0
    while seen < total_tokens:
        shape = rng.random()
        if shape < 0.05:
            row = (0, 0, 0)
        elif shape < 0.10:
            row = (0, 2, rng.randint(1, 400))
        elif shape < 0.11:
            row = (rng.randint(20_000, 300_000), 3, 0)
        else:
            row = (rng.randint(1, 600), rng.randint(1, 4), 0)
        costs.append(row)
        seen += row[0]
    return costs


def cut_as_rows_come(rule: ShardRule, costs: list[tuple[int, int, int]], start_row: int = 0):
    """The shards a cutter hands over while rows come, and those it cuts at the end."""
    cutter = ShardCutter(rule, start_row)
    early = [shard for row in costs for shard in cutter.add(*row)]
    return early, cutter.finish()


@pytest.mark.parametrize(
    ("rule", "total_tokens"),
    [
        (SpecRule(4000, 1), 300_000),
        (SpecRule(100_000, 1), 2_000_000),
        (SpecRule(None, 1), 300_000),
        (SpecRule(None, 1), 3_000_000),
        (SpecRule(None, 2), 1_000_000),
        (SpecRule(None, 2), 4_000_000),
        (SpecRule(None, 4), 9_000_000),
    ],
)
def test_shards_cut_as_the_rows_come_are_those_of_a_cut_that_knew_the_total(
    rule: ShardRule, total_tokens: int
) -> None:
    for seed in range(3):
        costs = random_costs(random.Random(seed), total_tokens)
        early, last = cut_as_rows_come(rule, costs)
        total = sum(row[0] for row in costs)

        assert early + last == cut_shards_from_costs(costs, rule.sizing(total))
        if total >= 6 * (rule.shard_tokens or FLEET_MOST_TOKENS) * rule.translators:
            # most of a big job's shards are handed over before its input is read to the end
            assert len(early) > len(last)


def test_a_fleet_s_shards_wait_for_the_tokens_that_settle_their_size() -> None:
    # under FLEET_BODY_SHARE shards a translator, a fleet's shard size depends on the total
    costs = [(100, 1, 0)] * 10_000  # 1,000,000 tokens for 2 translators
    early, last = cut_as_rows_come(SpecRule(None, 2), costs)
    assert early == []
    assert last == cut_shards_from_costs(costs, ShardSizing.for_fleet(1_000_000, 2))


def test_a_plan_resumed_at_a_stored_shard_s_end_cuts_the_rest_as_the_whole_plan_did() -> None:
    rule = SpecRule(None, 2)
    costs = random_costs(random.Random(7), 4_000_000)
    whole = cut_shards_from_costs(costs, rule.sizing(sum(row[0] for row in costs)))
    stored = len(whole) // 3

    early, last = cut_as_rows_come(rule, costs, start_row=whole[stored - 1].row_end)

    assert early + last == whole[stored:]


def test_each_step_of_a_plan_has_its_shards_units_on_disk_and_the_whole_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plan, "STEP_EVERY_S", 0.0)
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"text": f"Row {i} says something {'long ' * (i % 7)}."} for i in range(3000)],
    )
    spec = JobSpec(
        input=str(source),
        output=str(tmp_path / "out.jsonl"),
        model="m",
        fields=["text"],
        shard_tokens=400,
    )
    work = tmp_path / "work"
    handed = []
    for step in plan_steps(spec, work):
        assert step.first_index == len(handed)
        assert (work / "plan.json").exists() is step.done
        for shard in step.shards:
            # a translator leasing it now reads its rows' units whole
            units = UnitReader(work).read(shard.row_start, shard.row_end)
            assert [unit.row for unit in units] == list(range(shard.row_start, shard.row_end))
            assert step.rows >= shard.row_end
        handed.extend(step.shards)
        if not step.done:
            early = len(handed)

    assert early > len(handed) // 2
    assert handed == plan_job(spec, tmp_path / "again")
    assert (work / "units.jsonl").read_bytes() == (tmp_path / "again" / "units.jsonl").read_bytes()

    # a coordinator gone after storing a third of them: its successor plans the input again and
    # goes on from the last stored shard's end, numbering on
    stored = len(handed) // 3
    steps = list(plan_steps(spec, work, resume=(handed[stored - 1].row_end, stored)))
    assert steps[0].first_index == stored
    assert [shard for step in steps for shard in step.shards] == handed[stored:]
    assert (work / "units.jsonl").read_bytes() == (tmp_path / "again" / "units.jsonl").read_bytes()
