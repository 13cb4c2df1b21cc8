"""A job's wall time cut into phases, read from the logs its coordinator and translators wrote
(the job must keep its work files: `keep_work`) and from its store's events.

- start: until the first lease a translator takes (coordinator, planning, translator processes,
  engine loads);
- translating: first lease to the last shard's completion;
- to assembly: the last completion until the fleet loop starts assembling;
- assembly: the assembly task;
- to the driver: the assembly's end until `run_job` returns (the `succeeded` record, the
  driver hearing of it, the coordinator stopped, the work files removed).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

PHASES = ("start", "translating", "to assembly", "assembly", "to the driver")


def job_phases(state_dir: Path, job_id: str, started: float, returned: float) -> dict[str, Any]:
    """The phases (seconds) of job `job_id` of the store in `state_dir`, which `run_job` was
    called for at `started` and returned from at `returned` (seconds since the epoch), with the
    seconds to its `planned` and `succeeded` events."""
    from mtfleet.store import JobStore

    with JobStore.for_state_dir(state_dir) as store:
        events = {event.kind: event.at for event in store.events.page(job_id)}
    logs = logged(state_dir / "jobs" / job_id / "logs")
    first_lease = min(at for at, name, line in logs if "leased shard" in line)
    last_completion = max(at for at, name, line in logs if " completed by " in line)
    (assembling,) = [at for at, name, line in logs if "assembling its output" in line]
    (assembled,) = [at for at, name, line in logs if line.endswith(": assembled")]
    phases = {
        "start": first_lease - started,
        "translating": last_completion - first_lease,
        "to assembly": assembling - last_completion,
        "assembly": assembled - assembling,
        "to the driver": returned - assembled,
    }
    return {
        "phases_s": {name: round(seconds, 3) for name, seconds in phases.items()},
        "start_s": start_milestones(logs, started, first_lease),
        "planned_s": round(events["planned"] - started, 3),
        "succeeded_s": round(events["succeeded"] - started, 3),
    }


# the start's milestones: the last of a kind's lines (every translator's, for a translator's)
MILESTONES = {
    "coordinator up": " up (restarted by Ray",
    "translators placed": "placed translator ",
    "translator processes up": " up in process ",
    "engines loaded": " loaded on ",
}


def start_milestones(
    logs: list[tuple[float, str, str]], started: float, first_lease: float
) -> dict[str, float]:
    """Seconds from `started` to each milestone of the start (MILESTONES) the logs hold before
    `first_lease`, and to it: where the start goes. A warm translator is neither placed nor
    loaded."""
    found = {}
    for milestone, text in MILESTONES.items():
        times = [at for at, name, line in logs if text in line and at <= first_lease]
        if times:
            found[milestone] = round(max(times) - started, 3)
    found["first lease"] = round(first_lease - started, 3)
    return found


def logged(logs_dir: Path) -> list[tuple[float, str, str]]:
    """Every line the job's coordinator and translators logged: (seconds since the epoch, the
    log's name, the line). A line starts with its local time to the millisecond (`LOG_FORMAT`)."""
    lines = []
    for path in logs_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            try:
                at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue  # a traceback's or a wrapped message's continuation
            lines.append((at, path.stem, line))
    if not lines:
        raise RuntimeError(f"the job logged nothing in {logs_dir}")
    return lines
