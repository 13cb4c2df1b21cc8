"""What a benchmark run leaves behind: the printed table, the ratios, latest.json, a chart, the README."""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# ratio name -> (numerator system, denominator system, workload, target): rows/s over rows/s,
# at least the target (None: recorded, no target). Issue 26 set the targets of the two-translator
# and warm ratios.
RATIOS: dict[str, tuple[str, str, str, float | None]] = {
    "best_vs_seed": ("best mtfleet job", "seed-baseline", "alpaca", 10.0),
    "hf_job_vs_seed_same_decoding": ("mtfleet-job-hf beam5", "seed-baseline", "alpaca", 1.5),
    "ct2_job_vs_ct2_direct": ("mtfleet-job-ct2", "ct2-direct", "short", 0.9),
    "job_vs_engine": ("mtfleet-job-hf", "mtfleet-engine-hf", "alpaca", 0.85),
    "two_translators_vs_one": ("mtfleet-job-ct2 x2", "mtfleet-job-ct2", "alpaca", 1.7),
    # what two cores give two ct2 processes with nothing else running: the ceiling of the above
    "two_ct2_processes_vs_one": ("ct2-direct x2", "ct2-direct", "alpaca", None),
    # the two above without the translators' start, which both jobs pay once
    "two_warm_translators_vs_one": (
        "mtfleet-job-ct2 x2 warm",
        "mtfleet-job-ct2 warm",
        "alpaca",
        None,
    ),
    "warm_hf_job_vs_engine": ("mtfleet-job-hf warm", "mtfleet-engine-hf", "alpaca", 0.95),
    "warm_ct2_job_vs_ct2_direct": ("mtfleet-job-ct2 warm", "ct2-direct", "short", 1.0),
}
# ratio name -> (numerator system, denominator system, workload, target): seconds over seconds,
# at most the target (None: recorded, no target)
TIME_RATIOS: dict[str, tuple[str, str, str, float | None]] = {
    "mixed_fleet_vs_fast_alone": ("mtfleet-job-ct2 mixed", "mtfleet-job-ct2", "alpaca", 1.1),
    # what the health checks cost a job (language ID per unit, a flagged segment translated again)
    "checked_vs_unchecked_hf_job": ("mtfleet-job-hf checked", "mtfleet-job-hf", "alpaca", None),
    "mixed_fleet_no_tail_vs_fast_alone": (
        "mtfleet-job-ct2 mixed no-tail",
        "mtfleet-job-ct2",
        "alpaca",
        None,
    ),
}
TABLE_START, TABLE_END = "<!-- latest table -->", "<!-- /latest table -->"


@dataclass(frozen=True)
class Row:
    """One system on one workload."""

    workload: str
    system: str
    seconds: float
    rows: int
    source_tokens: int
    peak_rss_mb: float
    detail: dict[str, Any]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    @property
    def source_tokens_per_s(self) -> float:
        return self.source_tokens / self.seconds


def ratios(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Each ratio of rows/s (and of seconds) taken side by side, with its target and whether it
    was met. Two systems run in rounds by turns (`rounds_s`) give the median of their rounds'
    own ratios, the rounds listed beside it."""
    by_key = {(row.workload, row.system): row for row in rows}
    kinds = ((RATIOS, True, "rows/s"), (TIME_RATIOS, False, "seconds (at most the target)"))
    found = {}
    for named, speed, unit in kinds:
        for name, (numerator, denominator, workload, target) in named.items():
            if numerator == "best mtfleet job":
                jobs = {
                    r.system: r.rows_per_s
                    for r in rows
                    if r.workload == workload and "-job-" in r.system
                }
                numerator = max(jobs, key=jobs.__getitem__, default=numerator)
            found[name] = _ratio(
                by_key.get((workload, numerator)),
                by_key.get((workload, denominator)),
                target,
                speed,
            ) | {"of": f"{numerator} / {denominator} {unit}, {workload} workload"}
    return found


def _ratio(
    top: Row | None, bottom: Row | None, target: float | None, speed: bool
) -> dict[str, Any]:
    """`top` against `bottom`: rows/s over rows/s (`speed`, met at least the target) or seconds
    over seconds (met at most the target)."""
    if top is None or bottom is None:
        return {"value": None, "target": target, "met": None}

    def one(top_s: float, bottom_s: float) -> float:
        return (top.rows / top_s) / (bottom.rows / bottom_s) if speed else top_s / bottom_s

    paired: dict[str, Any] = {}
    top_rounds, bottom_rounds = top.detail.get("rounds_s"), bottom.detail.get("rounds_s")
    if top_rounds and bottom_rounds and len(top_rounds) == len(bottom_rounds):
        each = [one(t, b) for t, b in zip(top_rounds, bottom_rounds, strict=True)]
        value = round(statistics.median(each), 3)
        paired = {"rounds": [round(r, 3) for r in each]}
    else:
        value = round(one(top.seconds, bottom.seconds), 3)
    met = None if target is None else (value >= target if speed else value <= target)
    return {"value": value, "target": target, "met": met, **paired}


def table(rows: Sequence[Row]) -> str:
    """A Markdown table per workload: each system's speed, memory and speed against the seed."""
    lines = []
    for workload in dict.fromkeys(row.workload for row in rows):
        mine = [row for row in rows if row.workload == workload]
        seed = next((row for row in mine if row.system == "seed-baseline"), None)
        lines += [
            f"**{workload}**",
            "",
            "| system | rows | seconds | rows/s | source tokens/s | peak RSS MB | x seed |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in mine:
            versus = f"{row.rows_per_s / seed.rows_per_s:.1f}" if seed else "-"
            lines.append(
                f"| {row.system} | {row.rows} | {row.seconds:.1f} | {row.rows_per_s:.2f} | "
                f"{row.source_tokens_per_s:.0f} | {row.peak_rss_mb:.0f} | {versus} |"
            )
        lines.append("")
    return "\n".join(lines)


def ratio_lines(found: dict[str, dict[str, Any]]) -> str:
    lines = ["| ratio | value | target | met | of |", "| --- | ---: | ---: | --- | --- |"]
    for name, ratio in found.items():
        value = "-" if ratio["value"] is None else f"{ratio['value']:.2f}"
        met = {True: "yes", False: "NO", None: "-"}[ratio["met"]]
        target = "-" if ratio["target"] is None else ratio["target"]
        rounds = ratio.get("rounds")
        if rounds:  # the rounds' own ratios, of which the value is the median
            value += " (" + ", ".join(f"{each:.2f}" for each in rounds) + ")"
        lines.append(f"| {name} | {value} | {target} | {met} | {ratio['of']} |")
    return "\n".join(lines) + "\n"


def write_json(path: Path, header: dict[str, Any], rows: Sequence[Row]) -> dict[str, Any]:
    results = {
        **header,
        "results": [
            {
                **asdict(row),
                "rows_per_s": round(row.rows_per_s, 3),
                "source_tokens_per_s": round(row.source_tokens_per_s, 1),
            }
            for row in rows
        ],
        "ratios": ratios(rows),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".json.tmp")
    scratch.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    scratch.replace(path)
    return results


def write_chart(path: Path, rows: Sequence[Row], title: str) -> None:
    """One panel per workload: rows/s of each system on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import NullFormatter

    workloads = list(dict.fromkeys(row.workload for row in rows))
    figure, axes = pyplot.subplots(
        1, len(workloads), figsize=(5 * len(workloads), 4.5), squeeze=False
    )
    for axis, workload in zip(axes[0], workloads, strict=True):
        mine = [row for row in rows if row.workload == workload]
        colors = [_color(row.system) for row in mine]
        axis.barh([row.system for row in mine], [row.rows_per_s for row in mine], color=colors)
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.invert_yaxis()
        axis.set_xlabel("rows/s (log)")
        axis.set_title(workload)
        for index, row in enumerate(mine):
            speed = row.rows_per_s
            label = f" {speed:,.0f}" if speed >= 10 else f" {speed:.2g}"
            axis.annotate(label, (speed, index), va="center", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    pyplot.close(figure)


def update_readme(readme: Path, text: str) -> None:
    """Puts `text` between the README's latest-table markers."""
    content = readme.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.DOTALL)
    replacement = f"{TABLE_START}\n{text}\n{TABLE_END}"
    readme.write_text(pattern.sub(lambda _: replacement, content), encoding="utf-8")


def _color(system: str) -> str:
    if system.startswith("mtfleet-job"):
        return "tab:green"
    if system.startswith("mtfleet-engine"):
        return "tab:olive"
    return "tab:gray"
