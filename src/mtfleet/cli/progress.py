"""The live progress of a job on the console: rows, segments/s, ETA, translators.

On a terminal it is Rich's live bar; anywhere else (a log file, a pipe) a live display would be
cut and repainted, so it is one plain line every PLAIN_EVERY_S seconds, and one at the end:
`rows 1,234/5,000 (24%) · 12.3 rows/s · ETA 0:05:02`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# How often a console that is no terminal gets a line
PLAIN_EVERY_S = 5.0


class JobProgress:
    """A Rich progress bar fed with the coordinator's progress reports; plain lines when the
    console is no terminal. `clock` is the monotonic time the rates and the lines' spacing use."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.plain = not console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TextColumn("{task.fields[rate]:>8.1f} seg/s"),
            TextColumn("{task.fields[fleet]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.first_seen: tuple[float, int, int] | None = None
        # the last plain line printed and when, and the newer one not printed yet
        self.printed: tuple[float, str] | None = None
        self.unprinted: str | None = None

    def __enter__(self) -> JobProgress:
        if not self.plain:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.plain:
            if self.unprinted is not None:
                self._print(self.unprinted)
            return
        self.progress.stop()

    def update(self, report: dict[str, Any]) -> None:
        rows_total = report.get("rows_total", 0)
        rows_done = report.get("rows_done", 0)
        segments = report.get("segments_done", 0)
        now = self.clock()
        if self.first_seen is None:
            self.first_seen = (now, segments, rows_done)
        started, segments_then, rows_then = self.first_seen
        elapsed = now - started
        if self.plain:
            rows_rate = (rows_done - rows_then) / elapsed if elapsed > 0 else 0.0
            planning = bool(report.get("planning"))
            self._plain_update(plain_line(rows_done, rows_total, rows_rate, planning), now)
            return
        rate = (segments - segments_then) / elapsed if elapsed > 0 else 0.0
        fleet = f"{len(report.get('translators', []))} translators"
        if self.task is None:
            self.task = self.progress.add_task(
                report["job_id"], total=rows_total, rate=rate, fleet=fleet
            )
        self.progress.update(
            self.task,
            completed=rows_done,
            total=rows_total,
            rate=rate,
            fleet=fleet,
            description=f"{report['job_id']} {_state(report)}{_languages(report)}",
        )

    def _plain_update(self, line: str, now: float) -> None:
        if self.printed is None or now - self.printed[0] >= PLAIN_EVERY_S:
            self._print(line, now)
        elif line != self.printed[1]:
            self.unprinted = line

    def _print(self, line: str, now: float | None = None) -> None:
        self.console.print(line, highlight=False, soft_wrap=True)
        self.printed = (self.clock() if now is None else now, line)
        self.unprinted = None


def plain_line(rows_done: int, rows_total: int, rows_per_s: float, planning: bool = False) -> str:
    """`rows 1,234/5,000 (24%) · 12.3 rows/s · ETA 0:05:02`; the ETA is `-` while no rate is known.
    While the input is still planned, the rows are those planned so far: `rows 1,234/5,000+
    · 12.3 rows/s · planning`."""
    if planning:
        return f"rows {rows_done:,}/{rows_total:,}+ · {rows_per_s:.1f} rows/s · planning"
    share = f" ({100 * rows_done // rows_total}%)" if rows_total else ""
    left = max(rows_total - rows_done, 0)
    if rows_total and not left:
        eta = "0:00:00"
    elif rows_per_s > 0:
        eta = str(timedelta(seconds=round(left / rows_per_s)))
    else:
        eta = "-"  # not planned yet, or no row done since
    return f"rows {rows_done:,}/{rows_total:,}{share} · {rows_per_s:.1f} rows/s · ETA {eta}"


def _state(report: dict[str, Any]) -> str:
    """The job's state, `running, planning` while translators lease its first shards and the
    rest of its input is read."""
    return f"{report['state']}, planning" if report.get("planning") else str(report["state"])


def _languages(report: dict[str, Any]) -> str:
    """` into mar_Deva, hin_Deva` for a job with several target languages."""
    targets = [str(found["tgt_lang"]) for found in report.get("targets", [])]
    return f" into {', '.join(targets)}" if len(targets) > 1 else ""
