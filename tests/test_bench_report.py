"""How the bench reads its ratios (bench/report.py): one run of each row against the other, or,
run in rounds by turns (`bench/run.py --rounds N`), the median of the rounds' own ratios."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def row(report: ModuleType, system: str, seconds: float, **detail: Any) -> Any:
    return report.Row("alpaca", system, seconds, 2040, 250_000, 100.0, detail)


def test_one_run_a_row_gives_the_ratio_of_their_speeds_and_whether_it_met_its_target(
    report: ModuleType,
) -> None:
    found = report.ratios(
        [row(report, "mtfleet-job-ct2", 40.0), row(report, "mtfleet-job-ct2 x2", 25.0)]
    )

    two = found["two_translators_vs_one"]
    assert two["value"] == 1.6
    assert (two["target"], two["met"]) == (1.7, False)
    assert "rounds" not in two


def test_rounds_by_turns_give_the_median_of_each_rounds_own_ratio(report: ModuleType) -> None:
    # the host slowed in round 2: both rows alike, so that round's ratio holds
    rows = [
        row(report, "mtfleet-job-ct2", 40.0, rounds_s=[40.0, 60.0, 41.0]),
        row(report, "mtfleet-job-ct2 x2", 24.0, rounds_s=[23.0, 35.0, 24.0]),
    ]

    two = report.ratios(rows)["two_translators_vs_one"]

    assert two["rounds"] == [round(40 / 23, 3), round(60 / 35, 3), round(41 / 24, 3)]
    assert two["value"] == round(60 / 35, 3)  # the median round's
    assert two["met"] is True
    assert "(1.74, 1.71, 1.71)" in report.ratio_lines({"two_translators_vs_one": two})


def test_a_ratio_of_seconds_is_met_at_most_its_target_round_by_round_too(
    report: ModuleType,
) -> None:
    rows = [
        row(report, "mtfleet-job-ct2", 40.0, rounds_s=[40.0, 44.0]),
        row(report, "mtfleet-job-ct2 mixed", 47.0, rounds_s=[44.0, 50.0]),
    ]

    mixed = report.ratios(rows)["mixed_fleet_vs_fast_alone"]

    assert mixed["rounds"] == [1.1, round(50 / 44, 3)]
    assert mixed["value"] == round((1.1 + 50 / 44) / 2, 3)
    assert (mixed["target"], mixed["met"]) == (1.1, False)


def test_rows_of_unequal_rounds_or_a_missing_row_are_not_paired(report: ModuleType) -> None:
    rows = [
        row(report, "mtfleet-job-ct2", 40.0, rounds_s=[40.0, 41.0]),
        row(report, "mtfleet-job-ct2 x2", 25.0, rounds_s=[25.0]),
    ]

    found = report.ratios(rows)

    assert found["two_translators_vs_one"]["value"] == 1.6
    assert "rounds" not in found["two_translators_vs_one"]
    assert found["warm_hf_job_vs_engine"] == {
        "value": None,
        "target": 0.95,
        "met": None,
        "of": "mtfleet-job-hf warm / mtfleet-engine-hf rows/s, alpaca workload",
    }
