"""The live progress of a job on the console: rows, segments/s, ETA, translators."""

from __future__ import annotations

import time
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


class JobProgress:
    """A Rich progress bar fed with the coordinator's progress reports."""

    def __init__(self, console: Console) -> None:
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
        self.first_seen: tuple[float, int] | None = None

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, report: dict[str, Any]) -> None:
        rows_total = report.get("rows_total", 0)
        rows_done = report.get("rows_done", 0)
        segments = report.get("segments_done", 0)
        now = time.monotonic()
        if self.first_seen is None:
            self.first_seen = (now, segments)
        started, segments_then = self.first_seen
        rate = (segments - segments_then) / (now - started) if now > started else 0.0
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
            description=f"{report['job_id']} {report['state']}{_languages(report)}",
        )


def _languages(report: dict[str, Any]) -> str:
    """` into mar_Deva, hin_Deva` for a job with several target languages."""
    targets = [str(found["tgt_lang"]) for found in report.get("targets", [])]
    return f" into {', '.join(targets)}" if len(targets) > 1 else ""
