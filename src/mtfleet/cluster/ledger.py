"""The shard ledger: every decision about one job's shards, as a plain, synchronous object.

It decides leases (and the speculative tail's backup leases), heartbeats, completions, failures
(bisection, with its counts in the store, and the failure breaker), faults (with backoff, and the
pause once they persist) and the watchdog. It holds no Ray handle and starts no thread: the
coordinator actor (`coordinator.py`) holds one ledger and carries its decisions out (tells a
translator that its lease lost its race, kills a hung one, places another), and the tests and
`bench/ledger.py` drive one directly.

Its lock guards only its own memory (the leases it handed out, the watchdog's watches, the
translators' measured rates, the breaker, the faults in a row) and is never held across a call to
the store: the store is the judge of every race, by lease id (a stale lease completes nothing,
renews nothing, and releases nothing), so what this memory holds is advice that a store call
confirms or refuses.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from mtfleet.cluster.breaker import FailureBreaker
from mtfleet.cluster.protocol import Lease, ShardStats
from mtfleet.cluster.tail import Holding, Rates, pick_backup
from mtfleet.errors import JobError
from mtfleet.retry import backoff_s
from mtfleet.spec import JobSpec
from mtfleet.store import JobState, JobStore, ShardRecord, ShardState

log = logging.getLogger(__name__)

# Faults of the machine in a row, across the job, with no shard completed in between: the job pauses.
FAULTS_BEFORE_PAUSE = 5
# A translator waits this long after its first fault, doubling with each fault in a row, to a cap.
FAULT_BACKOFF_S = 0.5
FAULT_BACKOFF_MAX_S = 30.0
# The watchdog: a translator whose shard makes no progress for max(lease TTL, its estimated tokens
# at this rate) is hung. Far below any engine's speed, so a slow one is never taken for hung.
WATCHDOG_FLOOR_TOKENS_PER_S = 10.0


@dataclass
class Watch:
    """The watchdog's view of one lease, from when it was given: the progress its heartbeats last
    reported, when that last grew, and when the last heartbeat came."""

    index: int
    lease_id: str
    progress: int
    grew_at: float
    bound_s: float
    beat_at: float


@dataclass(frozen=True)
class Completion:
    """A completion's outcome: accepted or not (a stale lease), the lease that lost the shard's
    race to it, whose holder is to be told to stop, and whether no lease is held after it (the
    job may have no shard left: its fleet loop looks at once)."""

    accepted: bool
    loser: Holding | None = None
    none_held: bool = False


@dataclass(frozen=True)
class FaultReply:
    """How long the translator waits before it leases again, and the sentence the job pauses
    with when faults persist."""

    wait_s: float
    pause: str | None = None


@dataclass(frozen=True)
class Hung:
    """A translator the watchdog gave up on, and why."""

    worker_id: str
    index: int
    cause: str


class ShardLedger:
    """The decisions about job `job_id`'s shards in `store`. `is_live(worker_id)` says whether a
    translator is still one of the job's fleet (a backup lease of one gone is not handed the
    shard); `clock` is monotonic seconds."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        spec: JobSpec,
        *,
        is_live: Callable[[str], bool] = lambda worker_id: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.spec = spec
        self.is_live = is_live
        self.clock = clock
        self.lock = threading.Lock()
        # the leases handed out, backups included, by lease id, and the translators' measured
        # rates: the speculative tail's memory, gone with this ledger as its leases are
        self.holdings: dict[str, Holding] = {}
        self.rates = Rates()
        # by worker id: the lease each translator holds now, as the watchdog sees it
        self.watches: dict[str, Watch] = {}
        self.breaker = FailureBreaker()
        self.faults_in_a_row = 0
        # while the job is planned, the rows whose units are on disk: shards within them are
        # leased, no backup is; None once the plan is whole
        self.rows_planned: int | None = None

    # --- leases

    def lease(self, worker_id: str) -> Lease | None:
        """A pending shard leased to `worker_id`, else a backup lease (the speculative tail, once
        the plan is whole), else None: every shard planned is leased or done."""
        rows_planned = self.rows_planned
        shard = self.store.leases.take(self.job_id, worker_id, self.spec.lease_ttl_s, rows_planned)
        if shard is None:
            tail = self.spec.speculative_tail and rows_planned is None
            return self._lease_backup(worker_id) if tail else None
        log.info(
            "leased shard %d, rows [%d, %d), to %s (attempt %d)",
            shard.index,
            shard.row_start,
            shard.row_end,
            worker_id,
            shard.attempts,
        )
        assert shard.lease_id is not None
        with self.lock:
            self.holdings[shard.lease_id] = Holding(
                shard.index, shard.lease_id, worker_id, shard.est_tokens, self.clock()
            )
            self._watch(worker_id, shard.index, shard.lease_id, shard.est_tokens)
        return Lease(shard.index, shard.lease_id, shard.row_start, shard.row_end)

    def _lease_backup(self, worker_id: str) -> Lease | None:
        """A backup lease for `worker_id` on the oldest leased shard whose owner is expected to
        finish after it would (`tail.pick_backup`); at most one backup a shard."""
        with self.lock:
            backed_up = {h.backup_of for h in self.holdings.values() if h.backup_of}
            primaries = [
                h
                for h in self.holdings.values()
                if h.backup_of is None and h.lease_id not in backed_up
            ]
        while True:
            with self.lock:
                picked = pick_backup(primaries, worker_id, self.rates, self.clock())
            if picked is None:
                return None
            primaries.remove(picked)
            shard = self._current_shard(picked)
            with self.lock:
                if shard is None:
                    # the lease ended without this ledger hearing of it (expired, released)
                    self.holdings.pop(picked.lease_id, None)
                    continue
                if picked.lease_id not in self.holdings or any(
                    h.backup_of == picked.lease_id for h in self.holdings.values()
                ):
                    continue  # completed, or backed up by another translator meanwhile
                backup = Holding(
                    picked.index,
                    uuid.uuid4().hex,
                    worker_id,
                    picked.est_tokens,
                    self.clock(),
                    backup_of=picked.lease_id,
                )
                self.holdings[backup.lease_id] = backup
                self._watch(worker_id, picked.index, backup.lease_id, picked.est_tokens)
            break
        self.store.counters.add(self.job_id, "backup_leases")
        log.info(
            "backup lease on shard %d, rows [%d, %d), to %s beside %s",
            shard.index,
            shard.row_start,
            shard.row_end,
            worker_id,
            picked.worker_id,
        )
        return Lease(shard.index, backup.lease_id, shard.row_start, shard.row_end, backup=True)

    def _current_shard(self, holding: Holding) -> ShardRecord | None:
        """The holding's shard while its lease is current in the store, else None."""
        try:
            shard = self.store.shards.get(self.job_id, holding.index)
        except JobError:
            return None
        if shard.state is ShardState.LEASED and shard.lease_id == holding.lease_id:
            return shard
        return None

    def heartbeat(self, worker_id: str, index: int, lease_id: str, progress: int = 0) -> bool:
        """Renews the lease; `progress` (steps done on the shard) must grow for the watchdog.
        False when the lease is gone: the translator stops its shard. A backup's heartbeat renews
        the primary lease it runs beside, so the shard's lease lives while either holder does."""
        with self.lock:
            holding = self.holdings.get(lease_id)
            primary_id = holding.backup_of if holding is not None else None
        renewed = self.store.leases.renew(
            self.job_id, index, primary_id or lease_id, self.spec.lease_ttl_s
        )
        with self.lock:
            if primary_id is not None and not renewed:
                self.holdings.pop(lease_id, None)
            watch = self.watches.get(worker_id)
            if watch is not None and watch.lease_id == lease_id:
                now = self.clock()
                watch.beat_at = now
                if progress > watch.progress:
                    watch.progress, watch.grew_at = progress, now
        return renewed

    def complete(
        self, worker_id: str, index: int, lease_id: str, part_path: str, stats: ShardStats
    ) -> Completion:
        """Accepts a shard's part unless its lease is stale: a shard done twice counts once. Of
        a shard's primary and backup lease, the first to complete wins; the other is the loser."""
        with self.lock:
            holding = self.holdings.pop(lease_id, None)
            self._drop_watch(worker_id, lease_id)
        backup_won = holding is not None and holding.backup_of is not None
        if holding is not None and holding.backup_of is not None:
            # the backup's lease takes the primary's place in the store, then completes
            self.store.leases.hand_over(
                self.job_id, index, holding.backup_of, lease_id, worker_id, self.spec.lease_ttl_s
            )
        recalled = stats.recalled()
        accepted = self.store.leases.complete(
            self.job_id,
            index,
            lease_id,
            part_path,
            stats.to_json(),
            # in the completion's transaction: one write less a shard
            {"segments_from_memory": recalled} if recalled else None,
        )
        if not accepted:
            return Completion(False)
        with self.lock:
            self.faults_in_a_row = 0
            self.breaker.done()
            if holding is not None:
                self.rates.record(worker_id, holding.est_tokens, stats.elapsed_s or 0.0)
            loser_id = (
                holding.backup_of
                if holding is not None and holding.backup_of is not None
                else self._backup_beside(lease_id)
            )
            loser = self.holdings.pop(loser_id, None) if loser_id is not None else None
            none_held = not self.holdings
        if backup_won:
            self.store.counters.add(self.job_id, "backups_won")
        return Completion(True, loser, none_held)

    def fail(self, worker_id: str, index: int, lease_id: str, error: str) -> str | None:
        """A shard raised: back to the queue, and bisected once it has failed max_attempts times;
        unless the failure breaker finds that no row can explain the failures: then the sentence
        the job pauses with."""
        log.warning("shard %d failed on %s: %s", index, worker_id, error)
        with self.lock:
            self._drop_watch(worker_id, lease_id)
        # one of a shard's two holders failing leaves the other's lease alone
        if self._give_up_lease(index, lease_id):
            return None
        if not self.store.leases.release(self.job_id, index, lease_id, error):
            return None
        shard = self.store.shards.get(self.job_id, index)
        with self.lock:
            stop = self.breaker.failed(shard.row_start, shard.row_end, error)
        if stop is None:
            self.count_failure(index, error)
            return None
        return f"{stop.rstrip('.')} (paused; fix it and rerun the job to resume)."

    def fault(
        self, worker_id: str, index: int | None, lease_id: str | None, cause: str
    ) -> FaultReply:
        """An error of a translator's machine, not of its rows (`cause`, one sentence): the shard
        (if any) goes back with no attempt counted, and the translator is told how long to wait
        before it leases again. FAULTS_BEFORE_PAUSE faults in a row across the job, with no shard
        completed in between, pause the job with `cause` as its error."""
        with self.lock:
            self._drop_watch(worker_id, lease_id)
        if index is not None and lease_id is not None and not self._give_up_lease(index, lease_id):
            self.store.leases.release(self.job_id, index, lease_id, None)
        with self.lock:
            self.faults_in_a_row += 1
            faults = self.faults_in_a_row
            if faults >= FAULTS_BEFORE_PAUSE:
                # the count starts again: a job resumed after the cause is fixed gets every chance
                self.faults_in_a_row = 0
        self.store.counters.add(self.job_id, "faults")
        log.warning(
            "fault %d in a row, translator %s%s: %s",
            faults,
            worker_id,
            "" if index is None else f", shard {index} back to the queue",
            cause,
        )
        wait_s = backoff_s(faults, first_s=FAULT_BACKOFF_S, max_s=FAULT_BACKOFF_MAX_S)
        if faults < FAULTS_BEFORE_PAUSE:
            return FaultReply(wait_s)
        return FaultReply(
            wait_s,
            f"{cause.rstrip('.')} (paused after {faults} faults in a row with no shard done; "
            "fix it and rerun the job to resume).",
        )

    def count_failure(self, index: int, error: str) -> None:
        """One more failure of shard `index`, counted in the store (a restarted coordinator goes
        on with the count); at max_attempts the shard is halved, or its one row fails."""
        if self.store.shards.count_failure(self.job_id, index) < self.spec.max_attempts:
            return
        shard = self.store.shards.get(self.job_id, index)
        if shard.state is not ShardState.PENDING:
            return
        if shard.row_end - shard.row_start > 1:
            self.store.shards.split(self.job_id, index)
        else:
            self.store.shards.fail(self.job_id, index, None, error)

    def pause(self, message: str) -> bool:
        """Pauses the running job with `message` as its error (the cause is not the rows');
        whether it was running."""
        if self.store.jobs.get(self.job_id).state is not JobState.RUNNING:
            return False
        with self.lock:
            self.breaker.done()
        self.store.jobs.set_state(self.job_id, JobState.PAUSED, error=message)
        log.error("job %s paused: %s", self.job_id, message)
        self.store.events.add(self.job_id, "paused", f"Paused by its coordinator: {message}")
        return True

    def _give_up_lease(self, index: int, lease_id: str) -> bool:
        """Forgets a lease whose holder gives it up; True when the shard stays leased: the lease
        was a backup's, or the primary's with a live backup beside it, which takes it over."""
        with self.lock:
            holding = self.holdings.pop(lease_id, None)
            if holding is not None and holding.backup_of is not None:
                log.info("backup lease on shard %d given up; the primary goes on", index)
                return True
            backup = self.holdings.get(self._backup_beside(lease_id) or "")
            if backup is None or not self.is_live(backup.worker_id):
                return False
            backup.backup_of = None
        handed = self.store.leases.hand_over(
            self.job_id, index, lease_id, backup.lease_id, backup.worker_id, self.spec.lease_ttl_s
        )
        if handed:
            log.info("shard %d goes on with its backup lease on %s", index, backup.worker_id)
        return handed

    def _backup_beside(self, lease_id: str) -> str | None:
        """The lease id of the backup running beside the primary lease `lease_id`, if any."""
        return next((h.lease_id for h in self.holdings.values() if h.backup_of == lease_id), None)

    # --- the watchdog and translators that are gone

    def _watch(self, worker_id: str, index: int, lease_id: str, est_tokens: int) -> None:
        """The watchdog watches the lease from now: bounded by the shard's size for progress, by
        the lease's TTL for heartbeats."""
        bound_s = max(self.spec.lease_ttl_s, est_tokens / WATCHDOG_FLOOR_TOKENS_PER_S)
        now = self.clock()
        self.watches[worker_id] = Watch(index, lease_id, 0, now, bound_s, now)

    def _drop_watch(self, worker_id: str, lease_id: str | None) -> None:
        watch = self.watches.get(worker_id)
        if watch is not None and watch.lease_id == lease_id:
            del self.watches[worker_id]

    def hung(self) -> list[Hung]:
        """The translators whose lease made no progress within its bound, or whose heartbeats
        stopped for the lease's TTL (stuck where their heartbeat thread cannot run, e.g. a
        regular expression holding the GIL): no longer watched, to be killed, not asked."""
        now = self.clock()
        found = []
        with self.lock:
            for worker_id, watch in list(self.watches.items()):
                if now - watch.beat_at > self.spec.lease_ttl_s:
                    cause = (
                        f"hung: no heartbeat on shard {watch.index} "
                        f"in {self.spec.lease_ttl_s:.0f} s"
                    )
                elif now - watch.grew_at > watch.bound_s:
                    cause = f"hung: no progress on shard {watch.index} in {watch.bound_s:.0f} s"
                else:
                    continue
                del self.watches[worker_id]
                found.append(Hung(worker_id, watch.index, cause))
        return found

    def busy(self) -> set[str]:
        """The translators that hold a lease now."""
        with self.lock:
            return set(self.watches)

    def translator_gone(self, worker_id: str, cause: str, *, counts: bool) -> list[int]:
        """Translator `worker_id` died, hung or left with its node (`cause`): a shard it held with
        a backup beside goes on with the backup, the others go back to the queue, and with
        `counts` (it died on a live node: its shard may have killed it) each counts as a failure
        toward bisection. The shards that went back."""
        with self.lock:
            self.watches.pop(worker_id, None)
            held = [h for h in self.holdings.values() if h.worker_id == worker_id]
        for holding in held:
            self._give_up_lease(holding.index, holding.lease_id)
        released = self.store.leases.release_owner(self.job_id, worker_id)
        self.store.counters.add(self.job_id, "translator_deaths")
        log.warning("translator %s gone (%s); shards back: %s", worker_id, cause, released)
        if counts:
            for index in released:
                self.count_failure(index, f"translator {worker_id} {cause}")
        return released

    def stop_all(self) -> list[int]:
        """The job ended with translators stopped mid-shard: no lease is watched, none is held."""
        with self.lock:
            self.watches.clear()
            self.holdings.clear()
        return self.store.leases.release_all(self.job_id)
