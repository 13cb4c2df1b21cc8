"""The systems the benchmark compares: the paper's pipeline, CTranslate2 alone, mtfleet's engines, jobs.

A system turns a workload into a prepared run: everything before the clock starts (loading a
model, segmenting for ct2-direct) happens in `prepare`; the returned callable is what is timed.
Every system caps each output at `ceil(max_length_factor * source tokens + max_length_offset)`
new tokens (the seed pipeline, which has one cap per batch, at its batch's longest source).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workloads import Workload

Run = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Settings:
    """What every row shares; recorded with the results."""

    model_dir: Path
    work_dir: Path
    max_length_factor: float
    max_length_offset: int
    max_batch_tokens: int = 4096
    threads: int = 1
    seed_batch: int = 64
    max_positions: int = 512

    def cap(self, source_tokens: int) -> int:
        cap = math.ceil(self.max_length_factor * source_tokens + self.max_length_offset)
        # the decoder's start token takes one of the model's positions
        return max(1, min(cap, self.max_positions - 1))

    def engine_settings(self, beam: int = 1) -> dict[str, Any]:
        return {
            "beam": beam,
            "max_batch_tokens": self.max_batch_tokens,
            "max_length_factor": self.max_length_factor,
            "max_length_offset": self.max_length_offset,
            "compute_type": "auto",
            "device": "cpu",
            "threads": self.threads,
        }


@dataclass(frozen=True)
class System:
    name: str
    prepare: Callable[[Workload, Settings], Run]
    workloads: tuple[str, ...] | None = None
    """The workloads it runs on; None is all of them."""
    head_only: bool = False
    """Runs on the workload's first rows only: the pipelines too slow for all of them."""
    notes: dict[str, Any] = field(default_factory=dict)


def seed_pipeline(beam: int) -> Callable[[Workload, Settings], Run]:
    """transformers `generate` the way the paper's script used it: file order, fixed batches.

    Each field's column is cut into batches of `seed_batch` rows as they come, empty values
    included; inputs past the model's positions are truncated; torch uses its default threads.
    """

    def prepare(workload: Workload, settings: Settings) -> Run:
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        torch.set_num_threads(os.cpu_count() or 1)
        tokenizer = AutoTokenizer.from_pretrained(settings.model_dir)
        model = AutoModelForSeq2SeqLM.from_pretrained(settings.model_dir).eval()
        columns = workload.texts_by_field()

        def run() -> dict[str, Any]:
            batches = 0
            for texts in columns.values():
                for start in range(0, len(texts), settings.seed_batch):
                    inputs = tokenizer(
                        texts[start : start + settings.seed_batch],
                        return_tensors="pt",
                        padding=True,
                        truncation=True,
                        max_length=settings.max_positions,
                    )
                    with torch.inference_mode():
                        model.generate(
                            **inputs,
                            num_beams=beam,
                            do_sample=False,
                            max_new_tokens=settings.cap(inputs["input_ids"].shape[1]),
                        )
                    batches += 1
            return {"batches": batches, "torch_threads": torch.get_num_threads()}

        return run

    return prepare


def ct2_direct(workload: Workload, settings: Settings) -> Run:
    """CTranslate2 by hand on the unique non-empty segments: one call per decode cap.

    Segmenting and deduplicating happen before the clock starts; the call sorts each cap's
    segments by length into token batches. int8, the fastest compute type on a CPU.
    """
    direct = _DirectCT2(settings)
    segments = direct.segments(workload)
    return lambda: direct.translate(segments)


def ct2_direct_processes(processes: int) -> Callable[[Workload, Settings], Run]:
    """ct2-direct in `processes` processes side by side, one thread each, each on its share of
    the segments (dealt in turn from the segments sorted by length, so that every share holds
    as many tokens): what the machine's cores give a fleet of that many translators when nothing
    else runs, the ceiling of `two_translators_vs_one`.

    The processes load their translators before the clock starts; the clock runs from their
    start signal until the last one is done."""

    def prepare(workload: Workload, settings: Settings) -> Run:
        import multiprocessing

        direct = _DirectCT2(settings, translating=False)
        lengths = direct.token_counts(segments := direct.segments(workload))
        by_length = [segments[i] for i in sorted(range(len(segments)), key=lengths.__getitem__)]
        shares = [by_length[i::processes] for i in range(processes)]
        context = multiprocessing.get_context("spawn")
        go = context.Event()
        ready, done = context.Queue(), context.Queue()
        workers = [
            context.Process(target=_direct_share, args=(settings, share, go, ready, done))
            for share in shares
        ]
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get()

        def run() -> dict[str, Any]:
            go.set()
            details = [done.get() for _ in workers]
            for worker in workers:
                worker.join()
            if any(worker.exitcode for worker in workers):
                raise RuntimeError("a ct2-direct process failed")
            return {"processes": processes, "segments_unique": len(segments), "shares": details}

        return run

    return prepare


def _direct_share(settings: Settings, segments: list[str], go: Any, ready: Any, done: Any) -> None:
    """One process of ct2_direct_processes: loads, says so, waits for `go`, translates."""
    direct = _DirectCT2(settings)
    ready.put(True)
    go.wait()
    started = time.perf_counter()
    detail = direct.translate(segments)
    done.put({**detail, "seconds": round(time.perf_counter() - started, 3)})


class _DirectCT2:
    """The bench model's tokenizer and generation config, and its int8 ct2 translator unless
    not `translating` (ct2_direct_processes' parent only segments)."""

    def __init__(self, settings: Settings, translating: bool = True) -> None:
        import ctranslate2
        from transformers import AutoTokenizer, GenerationConfig

        self.settings = settings
        self.tokenizer = AutoTokenizer.from_pretrained(settings.model_dir)
        self.generation = GenerationConfig.from_pretrained(settings.model_dir)
        self.translator = (
            ctranslate2.Translator(
                str(convert_for_ct2(settings)),
                device="cpu",
                compute_type="int8",
                intra_threads=settings.threads,
            )
            if translating
            else None
        )

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]

    def segments(self, workload: Workload) -> list[str]:
        """The workload's distinct segments to translate, in order of first appearance."""
        from mtfleet.data import segment_texts

        pieces = segment_texts(workload.texts(), self.settings.max_positions, self.token_counts)
        return list(dict.fromkeys(p.text for ps in pieces for p in ps if p.translate))

    def translate(self, segments: list[str]) -> dict[str, Any]:
        """Tokenizes, translates one call per decode cap, decodes."""
        tokenizer, settings = self.tokenizer, self.settings
        assert self.translator is not None, "made without its translator"
        forced_eos = self.generation.forced_eos_token_id is not None
        by_cap: dict[int, list[list[str]]] = {}
        for ids in tokenizer(segments)["input_ids"]:
            tokens = tokenizer.convert_ids_to_tokens(ids)
            by_cap.setdefault(settings.cap(len(ids)), []).append(tokens)
        for cap, sources in by_cap.items():
            results = self.translator.translate_batch(
                sources,
                max_batch_size=settings.max_batch_tokens,
                batch_type="tokens",
                beam_size=1,
                # the model's forced EOS takes the cap's last place
                max_decoding_length=max(1, cap - forced_eos),
                max_input_length=0,
                repetition_penalty=self.generation.repetition_penalty or 1.0,
            )
            tokenizer.batch_decode(
                [tokenizer.convert_tokens_to_ids(r.hypotheses[0]) for r in results],
                skip_special_tokens=True,
            )
        return {"segments_unique": len(segments), "calls": len(by_cap)}


def mtfleet_engine(engine_name: str) -> Callable[[Workload, Settings], Run]:
    """An mtfleet engine through the pipeline (segment, deduplicate, translate), no Ray."""

    def prepare(workload: Workload, settings: Settings) -> Run:
        from mtfleet.engines import load_engine
        from mtfleet.pipeline import translate_texts

        engine = load_engine(engine_name, str(settings.model_dir), **settings.engine_settings())
        texts = workload.texts()

        def run() -> dict[str, Any]:
            outcome = translate_texts(texts, engine)
            return {"segments": outcome.segments, "segments_unique": outcome.segments_unique}

        return run

    return prepare


# the switch that makes a mixed fleet's slow translator slow, in the environment of the cluster
SLOW_SWITCH = Path(tempfile.gettempdir()) / f"mtfleet-bench-slow-{os.getpid()}"

# seconds each start of the bench's local Ray cluster took
CLUSTER_STARTS: list[float] = []


def start_cluster(slow_switch: bool = False) -> None:
    """The local Ray cluster the job rows run on, started once before the first of them.

    Jobs find it as `mtfleet translate --address` finds a running cluster: starting and stopping
    Ray belongs to the cluster's life, not to a job's, and is recorded apart (`CLUSTER_STARTS`).
    With `slow_switch` (the mixed rows), its translators find the switch that slows one of them;
    it also turns the translation memory off (a slowed translator wants every batch to reach its
    engine), so the other rows run on a cluster without it, with the memory on as a user's job.
    A cluster of the other kind is stopped first.
    """
    from mtfleet.cluster.runtime import connect
    from mtfleet.testing.faults import SlowTranslators

    # the translators inherit the cluster's environment
    switch = SlowTranslators(SLOW_SWITCH).environment
    running_slow = all(os.environ.get(name) == value for name, value in switch.items())
    if running_slow != slow_switch:
        stop_cluster()
    for name, value in switch.items():
        if slow_switch:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)
    clock = time.perf_counter()
    if connect():  # False when the cluster is already up
        CLUSTER_STARTS.append(round(time.perf_counter() - clock, 2))


def stop_cluster() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def convert_for_ct2(settings: Settings) -> Path:
    """The bench model converted for ct2 (int8), where a job's translators find it: a one-off,
    like downloading the model, done before any clock starts."""
    from mtfleet.engines.ct2 import converted_model
    from mtfleet.engines.tokens import files_sha256

    return Path(converted_model(settings.model_dir, files_sha256(settings.model_dir), "int8"))


def job_spec(
    workload: Workload,
    settings: Settings,
    job_dir: Path,
    engine_name: str,
    beam: int = 1,
    **more: Any,
) -> Any:
    """The job of `workload` on the bench model and its decoding settings, its output in
    `job_dir`; `more` are JobSpec settings of its own (translators, checks, ...)."""
    from mtfleet.spec import JobSpec

    engine = {**settings.engine_settings(beam), **more}
    del engine["device"]  # the cluster places translators
    return JobSpec(
        input=str(workload.path),
        output=str(job_dir / workload.path.name),
        model=str(settings.model_dir),
        fields=workload.fields,
        engine=engine_name,
        **engine,
    )


# how long the warm rows keep their translators: past the timed job, gone before the next workload
WARM_KEEP_S = 120.0


def mtfleet_job(
    engine_name: str,
    *,
    translators: int = 1,
    beam: int = 1,
    all_cores: bool = False,
    slow_factor: float | None = None,
    speculative_tail: bool = True,
    warm: bool = False,
    checks: bool = False,
) -> Callable[[Workload, Settings], Run]:
    """A whole `mtfleet translate` job on the running local cluster: planned, run, assembled.

    Its health checks are off (`--no-checks`) unless `checks`: the rows it is weighed against (an
    engine in one call, ct2 alone, the seed pipeline) check nothing, so a job's row times the same
    decoding plus what the fleet adds. The `checked` row prices the checks themselves.

    Its translators have one thread each, or with `all_cores` the job's default: the node's
    cores shared among its translators, as the seed pipeline's torch takes every core. A `warm`
    job is the second of two on a long-lived cluster: the first (before the clock) leaves its
    translators warm, engines loaded, and the timed one takes them. With `slow_factor`, its
    second translator (cpu1) is made that many times slower on purpose
    (`mtfleet.testing.faults.SlowTranslators`, a test aid): a mixed fleet.
    """

    def prepare(workload: Workload, settings: Settings) -> Run:
        from mtfleet.cluster import run_job
        from mtfleet.store import JobStore
        from mtfleet.testing.faults import SlowTranslators

        start_cluster(slow_switch=slow_factor is not None)

        if engine_name == "ct2":
            convert_for_ct2(settings)
        job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=settings.work_dir))
        # the output may not lie in the state dir (a job refuses it): side by side
        state_dir = job_dir / "state"
        spec = job_spec(
            workload,
            settings,
            job_dir,
            engine_name,
            beam=beam,
            cpu_translators_per_node=translators,
            keep_warm_s=WARM_KEEP_S if warm else None,
            speculative_tail=speculative_tail,
            checks=checks,
            **({"threads": None} if all_cores else {}),
        )
        if warm:
            first = spec.model_copy(update={"output": str(job_dir / f"first-{workload.path.name}")})
            # a store of its own: its translation memory would fill the timed job
            if run_job(first, state_dir=job_dir / "first-state").state != "succeeded":
                raise RuntimeError(f"the {engine_name} job that warms the translators failed")
        slow = (
            SlowTranslators(SLOW_SWITCH).slow("cpu1", slow_factor) if slow_factor else nullcontext()
        )

        def run() -> dict[str, Any]:
            with slow:
                result = run_job(spec, state_dir=state_dir)
            if result.state != "succeeded" or result.manifest is None:
                raise RuntimeError(f"{engine_name} job ended {result.state}: {result.error}")
            manifest = result.manifest
            with JobStore.for_state_dir(state_dir) as store:
                counters = store.jobs.get(result.job_id).counters
            return {
                **{
                    key: manifest[key]
                    for key in ("shards", "segments", "segments_unique", "units_failed")
                },
                **{key: counters.get(key, 0) for key in ("backup_leases", "backups_won")},
            }

        return run

    return prepare


SYSTEMS = (
    System("seed-baseline", seed_pipeline(5), head_only=True, notes={"beam": 5, "batch": 64}),
    System("hf-file-order", seed_pipeline(1), head_only=True, notes={"beam": 1, "batch": 64}),
    System("ct2-direct", ct2_direct, notes={"compute_type": "int8"}),
    System(
        "ct2-direct x2",
        ct2_direct_processes(2),
        ("alpaca", "short"),
        notes={"compute_type": "int8", "processes": "2, one thread each, half the segments each"},
    ),
    System("mtfleet-engine-hf", mtfleet_engine("hf")),
    System("mtfleet-engine-ct2", mtfleet_engine("ct2")),
    System("mtfleet-job-hf", mtfleet_job("hf")),
    System(
        "mtfleet-job-hf beam5",
        mtfleet_job("hf", beam=5, all_cores=True),
        ("alpaca",),
        True,
        {"beam": 5, "threads": "all cores, as seed-baseline"},
    ),
    System(
        "mtfleet-job-hf checked",
        mtfleet_job("hf", checks=True),
        ("alpaca",),
        notes={
            "checks": "on, a flagged segment translated again; no language ID: the bench"
            " model names no language, and its random output would fail it everywhere"
        },
    ),
    System("mtfleet-job-ct2", mtfleet_job("ct2")),
    System("mtfleet-job-ct2 x2", mtfleet_job("ct2", translators=2), notes={"translators": 2}),
    System(
        "mtfleet-job-ct2 mixed",
        mtfleet_job("ct2", translators=2, slow_factor=4),
        ("alpaca",),
        notes={"translators": 2, "cpu1": "4x slower on purpose", "speculative_tail": True},
    ),
    System(
        "mtfleet-job-ct2 mixed no-tail",
        mtfleet_job("ct2", translators=2, slow_factor=4, speculative_tail=False),
        ("alpaca",),
        notes={"translators": 2, "cpu1": "4x slower on purpose", "speculative_tail": False},
    ),
    # last of the jobs: a job of the same settings that runs after them must start cold
    System(
        "mtfleet-job-hf warm",
        mtfleet_job("hf", warm=True),
        ("alpaca",),
        notes={"second job": f"translators kept warm {WARM_KEEP_S:.0f} s by the first"},
    ),
    System(
        "mtfleet-job-ct2 warm",
        mtfleet_job("ct2", warm=True),
        ("alpaca", "short"),
        notes={"second job": f"translators kept warm {WARM_KEEP_S:.0f} s by the first"},
    ),
    # two translators without the start both jobs pay once (a cold translator loads its engine)
    System(
        "mtfleet-job-ct2 x2 warm",
        mtfleet_job("ct2", translators=2, warm=True),
        ("alpaca",),
        notes={
            "translators": 2,
            "second job": f"translators kept warm {WARM_KEEP_S:.0f} s by the first",
        },
    ),
)
