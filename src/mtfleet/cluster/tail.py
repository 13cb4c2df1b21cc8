"""The speculative tail: once no shard is pending, an idle translator may take a backup lease on
the oldest leased shard whose owner is expected to finish after it would.

Expected finish times come from measured rates: a translator's estimated source tokens per second
over the shards it completed for this coordinator. An owner is due at its lease's start plus its
shard's estimated tokens over its rate; before then it needs what is left, and once past it, it
is taken to need as long again as it is late (it runs slower than measured). An owner that has
completed no shard yet is backed up only once past UNMEASURED_SLACK times what the job's median
shard rate says its shard takes, and then by how late it is. A translator that has completed no
shard never backs another up: nothing says it would be faster.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

# An owner with no completed shard yet may just have started: it gets twice the median's time.
UNMEASURED_SLACK = 2.0


@dataclass
class Holding:
    """A lease this coordinator handed out: whose, on which shard, since when (monotonic). A
    backup's names the primary lease it runs beside (`backup_of`)."""

    index: int
    lease_id: str
    worker_id: str
    est_tokens: int
    since: float
    backup_of: str | None = None


@dataclass
class Rates:
    """Estimated source tokens and busy seconds of the shards each translator completed."""

    done: dict[str, tuple[int, float]] = field(default_factory=dict)
    shard_rates: list[float] = field(default_factory=list)

    def record(self, worker_id: str, est_tokens: int, elapsed_s: float) -> None:
        if est_tokens <= 0 or elapsed_s <= 0:
            return
        tokens, seconds = self.done.get(worker_id, (0, 0.0))
        self.done[worker_id] = (tokens + est_tokens, seconds + elapsed_s)
        self.shard_rates.append(est_tokens / elapsed_s)

    def of(self, worker_id: str) -> float | None:
        tokens, seconds = self.done.get(worker_id, (0, 0.0))
        return tokens / seconds if seconds else None

    def median(self) -> float | None:
        return statistics.median(self.shard_rates) if self.shard_rates else None


def pick_backup(
    primaries: Iterable[Holding], worker_id: str, rates: Rates, now: float
) -> Holding | None:
    """The oldest of `primaries` (leases with no backup yet) that `worker_id` is expected to finish
    before its owner does; None when there is none, or `worker_id` has no measured rate."""
    own_rate = rates.of(worker_id)
    median = rates.median()
    if own_rate is None or median is None:
        return None
    for holding in sorted(primaries, key=lambda h: h.since):
        if holding.worker_id == worker_id:
            continue
        owner_rate = rates.of(holding.worker_id)
        owner_s = (
            holding.est_tokens / owner_rate
            if owner_rate is not None
            else UNMEASURED_SLACK * holding.est_tokens / median
        )
        late_s = now - (holding.since + owner_s)
        # a measured owner needs what is left before its due time; past it, and always for an
        # unmeasured one (its due time is a guess), as long again as it is late
        owner_left = abs(late_s) if owner_rate is not None else late_s
        if holding.est_tokens / own_rate < owner_left:
            return holding
    return None
