"""The Translator actor: one engine on one device, and a loop that leases shards and completes them.

A shard's translation can fail two ways. An error that may follow its rows (the engine raised on
them) is reported with `fail`: it counts toward the shard's bisection and, for one row alone,
its `failed` state. An error of the machine (a full disk, an unreadable unit file, the store, memory,
a model this node cannot load) is reported with `fault`: the shard goes back without an attempt
counted, and the translator waits as long as the coordinator says before it leases again. A device
out of memory first halves the engine's batch budget and translates the shard again.

A translator outlives its job only when its coordinator `release`s it to the warm pool: it then
keeps its engine for `keep_warm_s`, and a job of the same engine key `attach`es it and runs it
again without loading the model; the pool kills it when that time is over. Any other end of its
lease loop (the coordinator said stop, or is gone) ends the translator itself, as do a release
past its time and the pool's grace (the pool died) or an attach that no run follows: a detached
translator never holds a device for nobody.
"""

from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray

from mtfleet.cluster.link import CoordinatorLink
from mtfleet.cluster.logs import log_to_work_dir, stop_logging_to_work_dirs
from mtfleet.cluster.parts import part_path, write_part
from mtfleet.cluster.plan import UnitLine, UnitReader
from mtfleet.cluster.protocol import STOP, Action, KeptSegments, Lease, SegmentCounts, ShardStats
from mtfleet.engines import Engine, load_engine
from mtfleet.engines.base import Cancelled, cancellable
from mtfleet.engines.targets import TargetEngines
from mtfleet.errors import StoreError
from mtfleet.health import job_checks, preload_language_models
from mtfleet.pipeline import TranslationOutcome, translate_texts, translate_to_targets
from mtfleet.spec import JobSpec, memory_settings
from mtfleet.store.memory import memory_signature, segment_sha256

log = logging.getLogger(__name__)

# How long a translator waits before asking again when told to wait: its lease call already waited
# for work in the coordinator (long-polled), unless too many others were waiting there.
IDLE_POLL_S = 0.25
# The batch budget is halved on a device out of memory down to this; below, it is a fault.
MIN_BATCH_TOKENS = 32
# Tests only: while the file this names exists, part files cannot be written (no space left).
FULL_DISK_VARIABLE = "MTFLEET_TEST_FULL_DISK_WHILE"
# Tests and the bench only: while the file this names exists, each of its lines `NAME FACTOR` makes
# the translators whose device (cpu1, gpu0) or worker id is NAME take FACTOR times as long a batch.
SLOW_VARIABLE = "MTFLEET_TEST_SLOW_WHILE"

# A translator whose run has not started this long after it was placed or attached ends itself.
ATTACH_GRACE_S = 60.0
# How often a translator looks whether its time is over.
GUARD_POLL_S = 0.5
# Segments of its job's memory a translator knows without asking its coordinator, at most, by
# memory key (`KnownSegments`): about 40 MB of short segments.
KNOWN_SEGMENTS = 100_000
# The warm pool kills a kept translator when its keep-warm time is over; one whose pool died ends
# itself this long after.
POOL_GRACE_S = 10.0
# The settings that decide the engine a translator loads: a warm one serves a job equal in them.
ENGINE_SETTINGS = (
    "engine",
    "model",
    "src_lang",
    "tgt_lang",
    "beam",
    "max_batch_tokens",
    "max_length_factor",
    "max_length_offset",
    "compute_type",
    "trust_remote_code",
    "preprocessor",
    "gpus_per_translator",
)


def engine_key(spec: JobSpec, device: str, threads: int) -> str:
    """What a warm translator must share with a job to serve it: the engine settings, the kind of
    device (`cpu` or `gpu`) and the threads; the node is the pool's to match."""
    settings = {name: getattr(spec, name) for name in ENGINE_SETTINGS}
    return json.dumps({**settings, "device": device, "threads": threads}, sort_keys=True)


def translator_resources(on_gpu: bool, gpus_per_translator: int) -> dict[str, float]:
    """The Ray resources a translator holds on its node: its GPUs, or one CPU."""
    return {"GPU": gpus_per_translator} if on_gpu else {"CPU": 1}


class MachineFault(Exception):
    """An error of this translator's machine, not of the rows it translates; one sentence."""


@ray.remote(max_restarts=0, max_concurrency=4)
class Translator:
    def __init__(
        self,
        coordinator: Any,
        worker_id: str,
        spec: dict[str, Any],
        work_dir: str,
        on_gpu: bool,
        threads: int,
    ) -> None:
        # Spinning OpenMP threads starve each other when translators share cores: a 14x slowdown
        # measured with two translators of two threads on two cores. Set before torch loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.coordinator = CoordinatorLink(coordinator, worker_id)
        self.spec = JobSpec(**spec)
        self.work_dir = Path(work_dir)
        self.gpu_ids = [int(gpu) for gpu in ray.get_gpu_ids()] if on_gpu else []
        self.threads = threads
        self.node_id = ray.get_runtime_context().get_node_id()
        # steps done on the current shard, sent with each heartbeat: the coordinator's watchdog
        # restarts a translator whose count stops growing
        self.progress = 0
        # the current lease's id and the event that cancels its translation (`lose_lease`)
        self.cancel: tuple[str, threading.Event] | None = None
        log_to_work_dir(self.work_dir, f"translator-{worker_id}")
        log.info("translator %s up in process %d", worker_id, os.getpid())
        self.engine: Engine | None = None
        self.engine_key: str | None = None
        self.engine_loads = 0
        self.jobs = 0
        # one lease loop at a time: an attach waits for the last job's loop to end
        self.running = threading.Lock()
        self.released = False
        self.kept_until = 0.0
        # when this translator ends itself; None while a lease loop runs
        self.deadline: float | None = time.monotonic() + ATTACH_GRACE_S
        threading.Thread(target=self._guard, name="guard", daemon=True).start()

    @property
    def worker_id(self) -> str:
        """This translator's id in its job's fleet: its link's, given by its coordinator."""
        return self.coordinator.worker_id

    def info(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "node_id": self.node_id,
            "gpu_ids": self.gpu_ids,
            "device": self._device(),
            "pid": os.getpid(),
            "engine_loads": self.engine_loads,
            "jobs": self.jobs,
        }

    def lose_lease(self, lease_id: str) -> None:
        """The coordinator's word that `lease_id` lost its shard to another translator: the
        translation stops at its next batch."""
        current = self.cancel
        if current is not None and current[0] == lease_id:
            current[1].set()

    def attach(
        self, coordinator: Any, worker_id: str, spec: dict[str, Any], work_dir: str
    ) -> dict[str, Any]:
        """Takes a warm translator into job `spec`'s fleet; its coordinator calls `run` next.
        Job-level settings (checks, protection, glossary) are the new job's."""
        with self.running:
            self.coordinator = CoordinatorLink(coordinator, worker_id)
            self.spec = JobSpec(**spec)
            self.work_dir = Path(work_dir)
            self.released = False
            self.deadline = time.monotonic() + ATTACH_GRACE_S
        stop_logging_to_work_dirs()
        log_to_work_dir(self.work_dir, f"translator-{worker_id}")
        log.info(
            "warm translator attached as %s, engine loaded %d times", worker_id, self.engine_loads
        )
        return self.info()

    def release(self, keep_warm_s: float) -> None:
        """The coordinator lets this translator go to the warm pool: its lease loop ends before
        its next lease (a shard it holds is finished first), and it ends itself after
        `keep_warm_s` unless a job attaches it."""
        self.kept_until = time.monotonic() + keep_warm_s + POOL_GRACE_S
        self.released = True
        if not self.running.locked():
            self.deadline = self.kept_until
        log.info("released to the warm pool for %.0f s", keep_warm_s)

    def run(self) -> dict[str, Any]:
        """Leases, translates and completes shards until the coordinator says stop or releases
        this translator; then it ends itself, or, released, waits warm for another job."""
        with self.running:
            self.deadline = None
            self.jobs += 1
            try:
                return self._serve_job()
            finally:
                self.deadline = self.kept_until if self.released else time.monotonic()

    def _guard(self) -> None:
        """Ends this process once its deadline has passed: no job runs on it, none will."""
        while True:
            time.sleep(GUARD_POLL_S)
            deadline = self.deadline
            if deadline is not None and time.monotonic() >= deadline:
                log.info("translator %s ends: no job holds it", self.worker_id)
                logging.shutdown()
                os._exit(0)

    def _device(self) -> str:
        if not self.gpu_ids:
            return "cpu"
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        # Ray sets CUDA_VISIBLE_DEVICES to this actor's GPUs: they are cuda:0... here, and a
        # translator of --gpus-per-translator K splits its model over all K (`cuda:0,1`).
        return "cuda:" + ",".join(str(index) for index in range(len(self.gpu_ids)))

    def _serve_job(self) -> dict[str, Any]:
        """The lease loop of one job."""
        engine = self._warm_engine()
        # what this job's memory held or took of the segments this translator saw; an earlier
        # job's is forgotten (the memory may have been cleared since)
        self.known: dict[str, KnownSegments] = {}
        signature = engine.describe()
        self.protection, self.checks = job_checks(self.spec, engine)
        # lingua's models load beside the first shard's translation, not inside its checks
        threading.Thread(
            target=preload_language_models, args=(self.spec, engine), name="lingua", daemon=True
        ).start()
        # each target language's segments go through its own translation memory
        self.memory_keys = (
            segment_memory_keys(self.spec, engine)
            if self.spec.memory and _memorable(engine)
            else None
        )
        units: UnitReader | None = None
        shards_done = 0
        while True:
            reply = STOP if self.released else self.coordinator.lease()
            if reply.action is Action.STOP:
                log.info("stopping after %d shards", shards_done)
                return {"worker_id": self.worker_id, "shards": shards_done}
            if reply.action is Action.WAIT or reply.lease is None:
                time.sleep(IDLE_POLL_S)
                continue
            lease = reply.lease
            log.info(
                "leased shard %d, rows [%d, %d)",
                lease.index,
                lease.row_start,
                lease.row_end,
            )
            try:
                # opened at the first lease: the coordinator may still have been planning at start
                units = units or UnitReader(self.work_dir)
            except OSError as error:
                self._report_fault(lease, _os_fault(self.work_dir / "units.idx", error))
                continue
            if self._translate_shard(engine, signature, units, lease):
                shards_done += 1

    def _warm_engine(self) -> Engine:
        """The engine loaded for an earlier job of the same engine key, or a new one."""
        key = engine_key(self.spec, "gpu" if self.gpu_ids else "cpu", self.threads)
        if self.engine is None or key != self.engine_key:
            self.engine = None
            self.engine = self._load_engine()
            self.engine_key = key
            self.engine_loads += 1
        # an out of memory may have halved it for the last job; each job starts from its own
        self.engine.max_batch_tokens = self.spec.max_batch_tokens
        return self.engine

    def _load_engine(self) -> Engine:
        """The job's engine, loaded on this node; a failure (a model missing here, no memory) is a
        fault, and the load is tried again after the coordinator's wait."""
        while True:
            try:
                engine = load_engine(
                    self.spec.engine,
                    self.spec.model,
                    src_lang=self.spec.src_lang,
                    tgt_lang=self.spec.tgt_lang,
                    beam=self.spec.beam,
                    max_batch_tokens=self.spec.max_batch_tokens,
                    max_length_factor=self.spec.max_length_factor,
                    max_length_offset=self.spec.max_length_offset,
                    compute_type=self.spec.compute_type,
                    trust_remote_code=self.spec.trust_remote_code,
                    preprocessor=self.spec.preprocessor,
                    device=self._device(),
                    threads=self.threads,
                )
            except Exception as error:  # a model fails to load in many ways, none the rows'
                self._report_fault(
                    None, f"Translator {self.worker_id} cannot load the model: {error}"
                )
                continue
            log.info("engine %s loaded on %s", self.spec.engine, self._device())
            return engine

    def _translate_shard(
        self, engine: Engine, signature: dict[str, Any], units: UnitReader, lease: Lease
    ) -> bool:
        """Translates and completes one shard; False when it failed or faulted."""
        started = time.monotonic()
        self.progress = 0
        stop_heartbeat = threading.Event()
        cancel = threading.Event()
        self.cancel = (lease.lease_id, cancel)
        interval_s = max(0.05, self.spec.lease_ttl_s / 3)
        self.coordinator.start_heartbeat(lease, interval_s, self._progress, stop_heartbeat, cancel)
        try:
            try:
                shard_units = units.read(lease.row_start, lease.row_end)
            except OSError as error:
                raise MachineFault(_os_fault(units.path, error)) from error
            self.progress += 1
            memories = {
                target: RelayedMemory(
                    self.coordinator, key, self.known.setdefault(key, KnownSegments())
                )
                for target, key in (self.memory_keys or {}).items()
            }
            # units filled from the translation memory at planning are not translated again
            to_translate = [unit for unit in shard_units if unit.filled is None]
            with cancellable(cancel, _slow_factor(self.worker_id)):
                outcomes = self._translate(engine, [unit.text for unit in to_translate], memories)
            self.progress += 1
            path = part_path(self.work_dir, lease.row_start, lease.row_end, lease.lease_id)
            translated = list(part_lines(to_translate, outcomes))
            for target, memory in memories.items():
                memory.keep_units(to_translate, translated, target)
            try:
                _write_part(path, _with_filled(shard_units, translated))
            except OSError as error:
                raise MachineFault(_os_fault(path.parent, error)) from error
            self.progress += 1
        except Cancelled:
            log.info(
                "shard %d: the lease is gone (another translator completed it); stopped",
                lease.index,
            )
            return False
        except MachineFault as fault:
            stop_heartbeat.set()
            self._report_fault(lease, str(fault))
            return False
        except Exception as error:
            stop_heartbeat.set()
            message = f"{type(error).__name__}: {error}"
            log.warning("shard %d failed: %s", lease.index, message)
            self.coordinator.fail(lease, message)
            return False
        finally:
            stop_heartbeat.set()
        stats = _completion_stats(
            lease,
            self.node_id,
            self.worker_id,
            signature,
            started,
            len(shard_units),
            to_translate,
            outcomes,
        )
        accepted = self.coordinator.complete(lease, path, stats, _kept(memories))
        if accepted:
            for memory in memories.values():
                memory.known.add(memory.kept)
        log.info(
            "completed shard %d in %.2f s (%s)",
            lease.index,
            stats.elapsed_s,
            "accepted" if accepted else "stale lease, dropped",
        )
        return True

    def _translate(
        self,
        engine: Engine | TargetEngines,
        texts: list[str],
        memories: Mapping[str | None, RelayedMemory] | None = None,
    ) -> dict[str | None, TranslationOutcome]:
        """`translate_texts` into each target language, again with half the batch budget while
        the device runs out of memory; errors of the machine become a MachineFault, any other may
        follow the rows."""
        while True:
            try:
                if not isinstance(engine, TargetEngines):
                    return {
                        self.spec.tgt_lang: translate_texts(  # type: ignore[dict-item]
                            texts,
                            engine,
                            protection=self.protection,
                            checks=self.checks,
                            memory=next(iter((memories or {}).values()), None),
                        )
                    }
                checks = {
                    target: job_checks(self.spec.for_target(target), one)[1]
                    for target, one in engine.engines.items()
                }
                return dict(
                    translate_to_targets(
                        texts,
                        engine,
                        protection=self.protection,
                        checks=checks,
                        memories=memories,
                        on_step=self._step,
                    )
                )
            except Exception as error:
                if not _out_of_memory(error):
                    if isinstance(error, (OSError, MemoryError, StoreError)):
                        raise MachineFault(f"{type(error).__name__}: {error}") from error
                    raise
                _free_device_memory()
                budget = engine.max_batch_tokens
                if budget // 2 < MIN_BATCH_TOKENS:
                    raise MachineFault(
                        f"{self._device()} of translator {self.worker_id} is out of memory even "
                        f"at {budget} tokens a batch: {error}"
                    ) from error
                engine.max_batch_tokens = budget // 2
                log.warning(
                    "out of memory at %d tokens a batch; halved to %d: %s",
                    budget,
                    engine.max_batch_tokens,
                    error,
                )

    def _progress(self) -> int:
        """Steps done on the current shard, sent with each heartbeat."""
        return self.progress

    def _step(self) -> None:
        """One more step of the current shard done: the watchdog sees it growing."""
        self.progress += 1

    def _report_fault(self, lease: Lease | None, sentence: str) -> None:
        """Tells the coordinator of a fault (the lease's shard goes back with no attempt counted)
        and waits as long as it says."""
        log.warning("fault: %s", sentence)
        time.sleep(self.coordinator.fault(lease, sentence))


def part_lines(
    units: list[UnitLine], outcomes: dict[str | None, TranslationOutcome]
) -> Iterator[UnitLine]:
    """Each unit with its translation, or with one per target language when there are several.
    A line made by its constructor, not dataclasses.replace: 3x faster, a part's lines are many."""
    if len(outcomes) == 1:
        (outcome,) = outcomes.values()
        flags = outcome.flags or [[]] * len(units)
        for unit, text, found in zip(units, outcome.translations, flags, strict=True):
            yield UnitLine(
                unit.unit, unit.row, unit.location, text, tuple(found), filled=unit.filled
            )
        return
    for position, unit in enumerate(units):
        yield replace(
            unit,
            targets={
                str(target): (
                    outcome.translations[position],
                    tuple(outcome.flags[position]) if outcome.flags else (),
                )
                for target, outcome in outcomes.items()
            },
        )


def _memorable(engine: Engine | TargetEngines) -> bool:
    """Engines that say nothing against it (a test's slowed engine), and no test's slow
    translators (they want each batch to reach the engine)."""
    if os.environ.get(SLOW_VARIABLE):
        return False
    engines = engine.engines.values() if isinstance(engine, TargetEngines) else [engine]
    return all(getattr(one, "memorable", True) for one in engines)


def segment_memory_keys(spec: JobSpec, engine: Engine | TargetEngines) -> dict[str | None, str]:
    """The translation memory's signature of segments in each target language of the job: the
    one a job into that language alone has (its engine's description, its settings)."""
    engines = engine.engines if isinstance(engine, TargetEngines) else {spec.tgt_lang: engine}
    return {
        target: memory_signature(one.describe(), memory_settings(spec.for_target(target)))
        for target, one in engines.items()
    }


class KnownSegments:
    """What one memory key's entries a translator has recalled or had kept in its job: segment
    sha256 to translation and flags, the KNOWN_SEGMENTS last learnt at most. A segment that comes
    again (a system prompt, a sentence of boilerplate) is taken from here, not asked of the
    coordinator again; such a segment is not marked used again in the store, as a recall within
    TOUCH_AFTER_S would not be either."""

    def __init__(self, limit: int = KNOWN_SEGMENTS) -> None:
        self.limit = limit
        self.entries: dict[str, tuple[str, list[str]]] = {}

    def add(self, entries: Mapping[str, tuple[str, list[str]]]) -> None:
        self.entries.update(entries)
        over = len(self.entries) - self.limit
        if over > 0:
            for sha in list(itertools.islice(self.entries, over)):
                del self.entries[sha]


class RelayedMemory:
    """The translation memory as a translator sees it: recalled through its coordinator, which
    holds the store, unless the translator knows the segment already (`known`); what it is to
    keep waits for the shard's completion, which carries it."""

    def __init__(
        self, coordinator: CoordinatorLink, key: str, known: KnownSegments | None = None
    ) -> None:
        self.coordinator, self.key = coordinator, key
        self.known = known if known is not None else KnownSegments()
        self.kept: dict[str, tuple[str, list[str]]] = {}
        self.kept_units: dict[str, tuple[str, list[str]]] = {}
        # each segment asked for, by its sha256: what is kept after was hashed when recalled
        self.hashed: dict[str, str] = {}

    def recall(self, segments: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
        self.hashed = {segment: segment_sha256(segment) for segment in segments}
        found: dict[str, tuple[str, list[str]]] = {}
        asked: dict[str, str] = {}
        for segment, sha in self.hashed.items():
            entry = self.known.entries.get(sha)
            if entry is None:
                asked[sha] = segment
            else:
                found[segment] = entry
        if not asked:
            return found
        try:
            answered = self.coordinator.recall(self.key, list(asked))
        except Exception as error:  # advice only: the engine translates what is not recalled
            log.warning("the translation memory did not answer (%s); translating the rest", error)
            return found
        self.known.add(answered)
        found.update((asked[sha], remembered) for sha, remembered in answered.items())
        return found

    def remember(self, entries: Mapping[str, tuple[str, list[str]]]) -> None:
        hashed = self.hashed
        self.kept.update(
            {
                hashed.get(segment) or segment_sha256(segment): found
                for segment, found in entries.items()
            }
        )

    def keep_units(
        self, units: Sequence[UnitLine], translated: Sequence[UnitLine], tgt_lang: str | None
    ) -> None:
        """Each whole unit's translation into `tgt_lang` and its flags, by its text's sha256:
        what planning fills a later job's units from (`plan.UnitFiller`)."""
        for unit, line in zip(units, translated, strict=True):
            own = line.for_target(tgt_lang)
            if own is not None:
                self.kept_units[segment_sha256(unit.text)] = (own.text, list(own.flags))


def _completion_stats(
    lease: Lease,
    node_id: str,
    worker_id: str,
    signature: dict[str, Any],
    started: float,
    units: int,
    to_translate: list[Any],
    outcomes: dict[str | None, TranslationOutcome],
) -> ShardStats:
    """What a completion tells the coordinator of its shard: counts, timing, the engine."""
    return ShardStats(
        rows=lease.row_end - lease.row_start,
        units=units,
        units_from_memory=units - len(to_translate),
        counts=_counts(next(iter(outcomes.values()))),
        node_id=node_id,
        worker_id=worker_id,
        elapsed_s=round(time.monotonic() - started, 3),
        engine=signature,
        # by language: detected sources (--src-lang auto) skip other units in each language
        targets=(
            {str(target): _counts(found) for target, found in outcomes.items()}
            if len(outcomes) > 1
            else None
        ),
    )


def _kept(memories: Mapping[str | None, RelayedMemory]) -> list[KeptSegments]:
    """What each target language's translation memory is to keep of the shard, once the
    coordinator accepts its completion."""
    return [
        KeptSegments(target, memory.key, memory.kept, memory.kept_units)
        for target, memory in memories.items()
        if memory.kept or memory.kept_units
    ]


def _with_filled(units: Sequence[UnitLine], translated: Sequence[UnitLine]) -> list[UnitLine]:
    """The shard's part lines in unit order: those filled at planning and those translated."""
    lines = iter(translated)
    return [unit.with_filled() if unit.filled is not None else next(lines) for unit in units]


def _counts(outcome: TranslationOutcome) -> SegmentCounts:
    return SegmentCounts(
        segments=outcome.segments,
        segments_unique=outcome.segments_unique,
        segments_from_memory=outcome.segments_from_memory,
        units_skipped_target_language=outcome.units_skipped_target_language,
        source_tokens=outcome.source_tokens,
    )


def _write_part(path: Path, translations: Iterable[UnitLine]) -> None:
    full_disk_while = os.environ.get(FULL_DISK_VARIABLE)
    if full_disk_while and Path(full_disk_while).exists():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    write_part(path, translations)


def _slow_factor(worker_id: str) -> float:
    """How many times its own time each batch of this translator takes (SLOW_VARIABLE): 1.0
    unless a test or the bench made it slow on purpose."""
    slow_while = os.environ.get(SLOW_VARIABLE)
    if not slow_while:
        return 1.0
    try:
        lines = Path(slow_while).read_text().splitlines()
    except FileNotFoundError:
        return 1.0
    for line in lines:
        name, factor = line.split()
        if name == worker_id or f"-{name}-" in f"-{worker_id}-":
            return float(factor)
    return 1.0


def _os_fault(where: Path, error: OSError) -> str:
    """`WHERE: no space left on device`: the place and the system's reason, one sentence."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return f"{where}: {reason[:1].lower()}{reason[1:]}"


def _out_of_memory(error: BaseException) -> bool:
    """A device out of memory: torch's OutOfMemoryError (by name, so torch need not be loaded),
    or CTranslate2's runtime error saying so. The host's MemoryError is a fault of its own."""
    if type(error).__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _free_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
