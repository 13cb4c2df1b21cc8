"""Peak resident memory of this process and every process it started (Ray's included), from /proc."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SAMPLE_S = 0.1


class PeakMemory:
    """Samples the resident set of the process tree while the `with` block runs; `peak_mb` after.

    Peaks shorter than the sampling interval are missed: a floor, not an exact figure.
    """

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self.peak_mb = tree_rss_mb()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak_mb = max(self.peak_mb, tree_rss_mb())


def tree_rss_mb(root: int | None = None) -> float:
    """Resident megabytes of `root` (this process) and all its descendants."""
    children: dict[int, list[int]] = {}
    resident: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            pages = int((entry / "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        # the command name in parentheses may hold spaces: the fields after its ")" are fixed
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
        resident[int(entry.name)] = pages
    total, stack = 0, [root or os.getpid()]
    while stack:
        pid = stack.pop()
        total += resident.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total * PAGE_BYTES / 2**20
