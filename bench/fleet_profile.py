"""Where a second translator loses (issue 26, item 4): one job's time, phase by phase.

Runs the bench's alpaca job on ct2 (one thread a translator, the model `bench/run.py` builds) with
1 and with 2 translators, in turns, `--rounds` times, on one local Ray cluster, and cuts each
job's wall time (from `run_job` until it returns) into phases read from the logs of its
coordinator and translators (the job keeps its work files: `keep_work`) and its store:

- start: until the first lease a translator takes (coordinator, planning, translator processes,
  engine loads), with the time to each of its milestones (the coordinator up, the translators
  placed, their processes up, their engines loaded, the first lease);
- translating: first lease to the last shard's completion; in it, each translator's engine
  busy time (`ShardStats.elapsed_s`, summed) and its idle rest;
- to assembly: the last completion until the fleet loop starts assembling;
- assembly: the assembly task;
- to the driver: the assembly's end until `run_job` returns (the `succeeded` record, the
  driver hearing of it, the coordinator stopped, the work files removed).

Beside them, the CPU seconds the job's other processes used meanwhile (`psutil`): the coordinator,
the planning and assembly worker (`ray::IDLE`), the warm pool, Ray's servers, this driver. On 2
cores, 2 translators leave none of them a core of its own.

Prints a table per run and the medians, and the ratio of 1 translator's median wall time to 2's
(`two_translators_vs_one`, the bench's ratio), and writes bench/results/fleet_profile.json and
fleet_profile.png (stacked phases). Runs labelled with `--label` are kept side by side in the
JSON (a change: run with `--label before`, change, then `--label after`).

    .venv/bin/python bench/fleet_profile.py [--rounds 3] [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labels import other_labels
from phases import PHASES, job_phases
from run import PROFILES, bench_settings, build_workloads
from systems import Settings, convert_for_ct2, job_spec, start_cluster, stop_cluster

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "results" / "fleet_profile.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", default="now")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mtfleet-fleet-profile-"))
    profile = PROFILES["full"]
    settings = bench_settings(profile, work)
    workload = build_workloads(profile, work / "data", ["alpaca"])["alpaca"][0]
    load_before = os.getloadavg()
    start_cluster()
    convert_for_ct2(settings)
    runs = []
    try:
        for round_ in range(args.rounds):
            for translators in (1, 2):
                run = profile_job(settings, workload, translators)
                run["round"] = round_
                runs.append(run)
                print(_line(run), flush=True)
    finally:
        stop_cluster()
    summary = _summary(runs)
    _print_summary(summary)
    result = {
        "label": args.label,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "rows": len(workload.rows),
        "runs": runs,
        "median": summary,
    }
    kept = other_labels(args.out, args.label)
    args.out.write_text(json.dumps([*kept, result], indent=2) + "\n")
    _plot([*kept, result], args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png').name}")


def profile_job(settings: Settings, workload: Any, translators: int) -> dict[str, Any]:
    """One job's wall time and its phases (seconds), with each translator's busy time."""
    from mtfleet.cluster import run_job
    from mtfleet.cluster.protocol import ShardStats
    from mtfleet.store import JobStore

    job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=settings.work_dir))
    spec = job_spec(
        workload,
        settings,
        job_dir,
        "ct2",
        cpu_translators_per_node=translators,
        checks=False,
        keep_work=True,  # its logs: the phases' times
    )
    cpu_before = _cpu_by_process()
    started = time.time()
    result = run_job(spec, state_dir=job_dir / "state")
    returned = time.time()
    cpu_after = _cpu_by_process()
    if result.state != "succeeded":
        raise RuntimeError(f"the {translators}-translator job ended {result.state}")
    with JobStore.for_state_dir(job_dir / "state") as store:
        busy: dict[str, float] = defaultdict(float)
        for shard in store.shards.in_row_order(result.job_id):
            stats = ShardStats.from_json(shard.stats)
            busy[stats.worker_id or "?"] += stats.elapsed_s or 0.0
    timed = job_phases(job_dir / "state", result.job_id, started, returned)
    translating = timed["phases_s"]["translating"]
    return {
        "translators": translators,
        "wall_s": round(returned - started, 3),
        **timed,
        "busy_s": sorted(round(seconds, 3) for seconds in busy.values()),
        "idle_in_translating_s": sorted(
            round(translating - seconds, 3) for seconds in busy.values()
        ),
        "cpu_s_beside_translators": _cpu_used(cpu_before, cpu_after),
    }


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    """Each of this machine's processes: its kind (`_kind`) and the CPU seconds it has used."""
    import psutil

    processes = {}
    for process in psutil.process_iter(["cmdline", "cpu_times"]):
        kind = _kind(process.pid, process.info["cmdline"] or [])
        times = process.info["cpu_times"]
        if kind is not None and times is not None:
            processes[process.pid] = (kind, times.user + times.system)
    return processes


def _kind(pid: int, cmdline: list[str]) -> str | None:
    """A Ray worker by its title (`ray::JobCoordinator`, `ray::IDLE`: the planning and assembly
    tasks' worker), Ray's own servers, this driver; None for the machine's other processes."""
    command = " ".join(cmdline)
    if pid == os.getpid():
        return "driver"
    if command.startswith("ray::"):
        return command.split()[0]
    for server in ("gcs_server", "raylet", "dashboard", "log_monitor", "runtime_env"):
        if server in command:
            return f"ray {server}"
    return None


def _cpu_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds used in between, by kind, of the processes alive at the end (the translators
    have ended by then: their engines' time is `busy_s`)."""
    used: dict[str, float] = defaultdict(float)
    for pid, (kind, seconds) in after.items():
        used[kind] += seconds - before.get(pid, (kind, 0.0))[1]
    return {kind: round(seconds, 2) for kind, seconds in sorted(used.items()) if seconds >= 0.01}


def _line(run: dict[str, Any]) -> str:
    phases = "  ".join(f"{name} {run['phases_s'][name]:6.2f}" for name in PHASES)
    beside = sum(run["cpu_s_beside_translators"].values())
    start = ", ".join(f"{name} {seconds:.2f}" for name, seconds in run["start_s"].items())
    return (
        f"{run['translators']} translator(s): {run['wall_s']:6.2f} s = {phases}; "
        f"start: {start}; "
        f"busy {run['busy_s']}, idle {run['idle_in_translating_s']}; "
        f"CPU beside them {beside:.2f} s {run['cpu_s_beside_translators']}"
    )


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for translators in (1, 2):
        mine = [run for run in runs if run["translators"] == translators]
        summary[str(translators)] = {
            "wall_s": round(statistics.median(run["wall_s"] for run in mine), 3),
            "phases_s": {
                name: round(statistics.median(run["phases_s"][name] for run in mine), 3)
                for name in PHASES
            },
            "start_s": {
                name: round(statistics.median(run["start_s"][name] for run in mine), 3)
                for name in mine[0]["start_s"]
                if all(name in run["start_s"] for run in mine)
            },
            "busy_s_total": round(statistics.median(sum(run["busy_s"]) for run in mine), 3),
            "cpu_s_beside_translators": round(
                statistics.median(sum(run["cpu_s_beside_translators"].values()) for run in mine),
                2,
            ),
        }
    summary["two_translators_vs_one"] = round(summary["1"]["wall_s"] / summary["2"]["wall_s"], 3)
    return summary


def _print_summary(summary: dict[str, Any]) -> None:
    print()
    print(
        "| translators | wall s | "
        + " | ".join(PHASES)
        + " | engine busy s (all) | CPU s beside them |"
    )
    print("|---:|---:|" + "---:|" * len(PHASES) + "---:|---:|")
    for translators in ("1", "2"):
        row = summary[translators]
        phases = " | ".join(f"{row['phases_s'][name]:.2f}" for name in PHASES)
        print(
            f"| {translators} | {row['wall_s']:.2f} | {phases} | {row['busy_s_total']:.2f} | "
            f"{row['cpu_s_beside_translators']:.2f} |"
        )
    print("\nThe start, seconds from the job's submission to each milestone (medians):\n")
    milestones = list(summary["2"]["start_s"])
    print("| translators | " + " | ".join(milestones) + " |")
    print("|---:|" + "---:|" * len(milestones))
    for translators in ("1", "2"):
        start = summary[translators]["start_s"]
        cells = " | ".join(f"{start[name]:.2f}" if name in start else "-" for name in milestones)
        print(f"| {translators} | {cells} |")
    print(f"\ntwo_translators_vs_one (medians): {summary['two_translators_vs_one']:.3f}")


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (f"{result['label']}\n{translators} translator(s)", result["median"][translators])
        for result in results
        for translators in ("1", "2")
    ]
    figure, axes = plt.subplots(figsize=(2 + 1.6 * len(bars), 4.5))
    bottoms = [0.0] * len(bars)
    for name in PHASES:
        heights = [row["phases_s"][name] for _, row in bars]
        axes.bar([label for label, _ in bars], heights, bottom=bottoms, label=name)
        bottoms = [bottom + height for bottom, height in zip(bottoms, heights, strict=True)]
    ratios = ", ".join(
        f"{result['label']}: {result['median']['two_translators_vs_one']:.2f}" for result in results
    )
    axes.set_ylabel("seconds (medians)")
    axes.set_title(f"alpaca job on ct2, phases; 2 translators vs 1: {ratios}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
