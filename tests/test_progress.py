"""A job's progress on a console that is no terminal: a plain line every few seconds, no bar."""

from __future__ import annotations

import io

from rich.console import Console

from mtfleet.cli.progress import PLAIN_EVERY_S, JobProgress, plain_line


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def report(rows_done: int, rows_total: int = 5000) -> dict[str, object]:
    return {"job_id": "j", "state": "running", "rows_done": rows_done, "rows_total": rows_total}


def test_a_plain_line_gives_rows_share_rate_and_eta() -> None:
    assert plain_line(1234, 5000, 12.3) == "rows 1,234/5,000 (24%) · 12.3 rows/s · ETA 0:05:06"


def test_a_plain_line_while_the_input_is_planned_says_so_and_gives_no_eta() -> None:
    # the rows planned so far are not the job's: a share or an ETA of them would mislead
    assert (
        plain_line(1234, 5000, 12.3, planning=True) == "rows 1,234/5,000+ · 12.3 rows/s · planning"
    )


def test_a_plain_line_has_no_eta_before_any_rate() -> None:
    assert plain_line(0, 5000, 0.0) == "rows 0/5,000 (0%) · 0.0 rows/s · ETA -"
    assert plain_line(0, 0, 0.0) == "rows 0/0 · 0.0 rows/s · ETA -"


def test_a_log_file_gets_a_line_every_few_seconds_and_the_last_at_the_end() -> None:
    log = io.StringIO()
    clock = Clock()
    console = Console(file=log, width=40)

    with JobProgress(console, clock=clock) as progress:
        progress.update(report(0))
        clock.now += 1
        progress.update(report(10))  # too soon after the first: not printed
        clock.now += PLAIN_EVERY_S
        progress.update(report(60))
        clock.now += 1
        progress.update(report(70))

    assert log.getvalue().splitlines() == [
        "rows 0/5,000 (0%) · 0.0 rows/s · ETA -",
        "rows 60/5,000 (1%) · 10.0 rows/s · ETA 0:08:14",
        "rows 70/5,000 (1%) · 10.0 rows/s · ETA 0:08:13",
    ]


def test_a_terminal_gets_the_live_bar_instead() -> None:
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120)

    with JobProgress(console) as progress:
        progress.update(report(10))

    assert "seg/s" in screen.getvalue()
    assert "rows/s" not in screen.getvalue()


def test_the_line_at_the_end_is_not_the_last_one_again() -> None:
    log = io.StringIO()
    clock = Clock()

    with JobProgress(Console(file=log, width=40), clock=clock) as progress:
        progress.update(report(10, rows_total=10))
        clock.now += 1
        progress.update(report(10, rows_total=10))

    assert log.getvalue().splitlines() == ["rows 10/10 (100%) · 0.0 rows/s · ETA 0:00:00"]
