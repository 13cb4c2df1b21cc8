"""The planner cuts a job into shards: every row in one, big ones first, small ones at the end."""

from __future__ import annotations

import itertools

import pytest

from mtfleet.cluster.plan import CHARS_PER_TOKEN, FILLED_SHARE, cut_shards, cut_shards_from_costs
from mtfleet.data import Unit, UnitKind


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
    shards = cut_shards(rows, text_rows([13] * rows), 200)
    assert covers_every_row_once(shards, rows)
    assert sum(s.units for s in shards) == rows
    assert sum(s.est_tokens for s in shards) == 13 * rows


def test_rows_without_text_still_belong_to_a_shard() -> None:
    units = [u for u in text_rows([10] * 10) if u.row % 3 == 0]
    shards = cut_shards(10, units, 15)
    assert covers_every_row_once(shards, 10)
    assert sum(s.units for s in shards) == 4


def test_a_big_job_gets_full_shards_first_and_shrinking_ones_at_the_end() -> None:
    shards = cut_shards(10_000, text_rows([10] * 10_000), 4000)  # 100,000 tokens
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
    shards = cut_shards(2000, text_rows([10] * 2000), 32_000)  # 20,000 tokens
    assert len(shards) >= 4
    assert shards[0].est_tokens == 5000  # a quarter of the job


def test_a_tiny_job_is_one_shard() -> None:
    # below the smallest share (32,000 / 16) there is nothing worth spreading
    assert len(cut_shards(100, text_rows([10] * 100), 32_000)) == 1


def test_a_row_bigger_than_a_shard_is_a_shard_of_its_own() -> None:
    shards = cut_shards(3, text_rows([5, 500, 5]), 100)
    assert [(s.row_start, s.row_end) for s in shards] == [(0, 2), (2, 3)]
    assert shards[0].est_tokens == 505


def test_units_filled_from_the_memory_cost_nothing_but_bound_a_shard_for_assembly() -> None:
    # 1,000 rows of 10 tokens, all filled but rows 500 and 501
    costs = [(0, 1, 10)] * 500 + [(10, 1, 0)] * 2 + [(0, 1, 10)] * 498
    shards = cut_shards_from_costs(costs, 20, 100)

    assert covers_every_row_once(shards, 1000)
    # at most FILLED_SHARE shards' worth of filled tokens in one shard: 40 rows of 10
    assert max(s.row_end - s.row_start for s in shards) <= FILLED_SHARE * 100 // 10 + 2
    # only the shards of rows 500 and 501 have anything to translate
    to_translate = [s for s in shards if s.est_tokens]
    assert sum(s.est_tokens for s in to_translate) == 20
    assert all(s.row_start <= 501 and s.row_end > 500 for s in to_translate)
