"""Three target languages in one job against three jobs (issue 12, item 4; issue 26, item 3).

The alpaca workload goes to three targets (mar_Deva, hin_Deva, tam_Taml) with a tiny NLLB-shaped
model built here (random weights, NLLB's tokenizer class and codes): once as one job with
`--tgt-lang mar_Deva,hin_Deva,tam_Taml`, once as three jobs of one target each, all in one local
Ray cluster started once, on the HF engine (each batch encoded once, and one `generate` decodes it
for the three targets) for a few rounds, and once on the ct2 engine (the batch repeated per target
in one call). The ratio is three jobs' time over one job's; each language's output is checked byte
for byte against its job alone. The tiny model's random output is flagged by the health checks
nearly everywhere, so every unit is translated again once per language, a retry that is not shared
between languages: the jobs run with the checks on and again with them off (the model's own work).

Then the engines alone, the same distinct segments without the job around them: every target
decoded together against a call per target, HF and ct2; and for CTranslate2 whether one call with
the batch repeated under each target's `target_prefix` beats a call per target at one decode limit.

Writes bench/results/multi_target.json and .png, and prints the README's table. The load average
(`os.getloadavg`) at the start and the end is recorded beside the numbers.

    .venv/bin/python bench/multi_target.py [--rows 34] [--d-model 64] [--layers 2] [--rounds 2]
        [--skip-ct2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mtfleet.cluster.job import run_job
from mtfleet.cluster.runtime import connect
from mtfleet.engines import load_engine
from mtfleet.engines.targets import TargetEngines
from mtfleet.manifest import versions
from mtfleet.pipeline import translate_texts, translate_to_targets
from mtfleet.random_models import build_tiny_model
from mtfleet.spec import JobSpec
from workloads import alpaca

RESULTS = Path(__file__).resolve().parent / "results" / "multi_target.json"
SOURCE, TARGETS = "eng_Latn", ["mar_Deva", "hin_Deva", "tam_Taml"]
SETTINGS = {"max_batch_tokens": 4096, "max_length_factor": 1.0, "max_length_offset": 8}


def job_spec(
    workload: Any, model: Path, output: str, tgt_lang: str, engine: str, checks: bool
) -> JobSpec:
    return JobSpec(
        input=str(workload.path),
        output=output,
        model=str(model),
        fields=workload.fields,
        src_lang=SOURCE,
        tgt_lang=tgt_lang,
        engine=engine,
        threads=1,
        checks=checks,
        **SETTINGS,
    )


def timed_job(spec: JobSpec, state_dir: Path) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = run_job(spec, state_dir=state_dir)
    elapsed = time.perf_counter() - started
    if result.state != "succeeded":
        raise SystemExit(f"job {result.job_id} {result.state}: {result.error}")
    return elapsed, result.manifest or {}


def jobs(
    workload: Any, model: Path, work: Path, engine: str, rounds: int, checks: bool = True
) -> dict[str, Any]:
    """One job into three languages, then three jobs into one each, `rounds` times in turn; each
    configuration's best round counts (the cores are shared). Outputs compared byte for byte.
    `checks` off: nothing flagged and retried per language, the model's own work alone."""
    one_s, three, identical, manifest = [], [], {}, {}
    for round_ in range(rounds):
        folder = work / f"{engine}-{'checks' if checks else 'no-checks'}-{round_}"
        (folder / "one").mkdir(parents=True)
        (folder / "three").mkdir()
        together = str(folder / "one" / "alpaca.{tgt_lang}.jsonl")
        seconds, manifest = timed_job(
            job_spec(workload, model, together, ",".join(TARGETS), engine, checks),
            folder / "state-one",
        )
        one_s.append(seconds)
        each = {}
        for target in TARGETS:
            alone = str(folder / "three" / f"alpaca.{target}.jsonl")
            each[target], _ = timed_job(
                job_spec(workload, model, alone, target, engine, checks),
                folder / f"state-{target}",
            )
            identical[f"{target}, round {round_}"] = (
                folder / "one" / f"alpaca.{target}.jsonl"
            ).read_bytes() == Path(alone).read_bytes()
        three.append(each)
    best_three = min(three, key=lambda each: sum(each.values()))
    return {
        "what": f"mtfleet translate, {engine} engine, health checks "
        f"{'on' if checks else 'off'}, one local Ray cluster, one CPU translator; "
        f"best of {rounds} rounds",
        "one_job_s": round(min(one_s), 2),
        "three_jobs_s": round(sum(best_three.values()), 2),
        "each_job_s": {target: round(seconds, 2) for target, seconds in best_three.items()},
        "rounds": {
            "one_job_s": [round(seconds, 2) for seconds in one_s],
            "three_jobs_s": [round(sum(each.values()), 2) for each in three],
        },
        "ratio": round(sum(best_three.values()) / min(one_s), 2),
        "outputs_identical": identical,
        "segments_unique": manifest.get("segments_unique"),
        "encoder_shared": (manifest.get("engine_signature") or {}).get("encoder_shared"),
    }


def engines(texts: list[str], model: Path, name: str) -> dict[str, Any]:
    """The engine alone: every target decoded together (one `generate` over the batch repeated per
    target for HF, one `translate_batch` for ct2), against a call per target; both warmed up."""
    settings = {"src_lang": SOURCE, "threads": 1, **SETTINGS}
    if name == "ct2":
        settings["compute_type"] = "float32"
    together = load_engine(name, str(model), tgt_lang=TARGETS, **settings)
    separate = TargetEngines(together.engines)  # the same views, each translating alone
    for engine in (together, separate):
        translate_to_targets(texts[:8], engine)
    timings = {}
    for key, engine in (("shared_encoder_s", together), ("per_target_s", separate)):
        started = time.perf_counter()
        outcome = translate_to_targets(texts, engine)
        timings[key] = round(time.perf_counter() - started, 2)
        timings[f"{key.removesuffix('_s')}_translations"] = {
            target: found.translations for target, found in outcome.items()
        }
    single = load_engine(name, str(model), tgt_lang=TARGETS[0], **settings)
    started = time.perf_counter()
    alone = translate_texts(texts, single)
    one_target_s = time.perf_counter() - started
    shared = timings.pop("shared_encoder_translations")
    same = shared == timings.pop("per_target_translations")
    return {
        "what": f"translate_to_targets over the workload's values, {name} engine, "
        "no health checks, warmed up",
        "one_target_s": round(one_target_s, 2),
        **timings,
        "ratio": round(timings["per_target_s"] / timings["shared_encoder_s"], 2),
        "identical": same and shared[TARGETS[0]] == alone.translations,
    }


def ct2_repeated_batch(texts: list[str], model: Path) -> dict[str, Any]:
    """CTranslate2: one translate_batch with the batch repeated under each target's prefix,
    against one call per target, over the same distinct segments and settings (warmed up). Then
    why no more: the batch repeated with the budget widened as much (each batch 3x the rows, as
    the HF engine decodes them), and a call that stops after the language token and one step,
    its encoder's share: ct2 runs the encoder once per target, and what a shared encoding could
    save at most is that share of two of the three calls."""
    settings = {"src_lang": SOURCE, "threads": 1, "compute_type": "float32", **SETTINGS}
    engines = load_engine("ct2", str(model), tgt_lang=TARGETS, **settings)
    first = engines.engines[TARGETS[0]]
    segments = list(dict.fromkeys(texts))
    encoded = first.tokens.encode_segments(segments)
    sources = [first.tokenizer.convert_ids_to_tokens(ids) for ids in encoded]
    limit = max(first._limit(len(ids)) for ids in encoded)
    options = {
        "max_batch_size": first.tokens.max_batch_tokens,
        "batch_type": "tokens",
        "beam_size": 1,
        "max_decoding_length": limit,
        "max_input_length": 0,
        "return_end_token": True,
        **first._decoding,
    }
    prefixes = [engines.engines[target]._target_prefix for target in TARGETS]
    repeated_prefixes = [prefix for prefix in prefixes for _ in sources]
    first.translator.translate_batch(sources[:8], target_prefix=repeated_prefixes[:8], **options)
    started = time.perf_counter()
    per_target = [
        first.translator.translate_batch(sources, target_prefix=[prefix] * len(sources), **options)
        for prefix in prefixes
    ]
    per_target_s = time.perf_counter() - started
    started = time.perf_counter()
    repeated = first.translator.translate_batch(
        sources * len(prefixes),
        target_prefix=repeated_prefixes,
        **options,
    )
    repeated_s = time.perf_counter() - started
    widened = {**options, "max_batch_size": options["max_batch_size"] * len(prefixes)}
    started = time.perf_counter()
    first.translator.translate_batch(
        sources * len(prefixes), target_prefix=repeated_prefixes, **widened
    )
    widened_s = time.perf_counter() - started
    started = time.perf_counter()
    first.translator.translate_batch(
        sources,
        target_prefix=repeated_prefixes[: len(sources)],
        **{**options, "max_decoding_length": 2},
    )
    encoder_share = (time.perf_counter() - started) / (per_target_s / len(prefixes))
    flat = [result.hypotheses[0] for results in per_target for result in results]
    return {
        "what": "ct2 float32 translate_batch over the distinct segments, one decode limit",
        "segments": len(segments),
        "call_per_target_s": round(per_target_s, 2),
        "repeated_batch_s": round(repeated_s, 2),
        "ratio": round(per_target_s / repeated_s, 2),
        "identical": flat == [result.hypotheses[0] for result in repeated],
        "repeated_widened_budget_s": round(widened_s, 2),
        "widened_rows_cost_x": round(widened_s / (per_target_s / len(prefixes)), 2),
        "encoder_share_of_a_call": round(encoder_share, 2),
        "ceiling_if_the_encoder_were_shared": round(
            len(prefixes) / (encoder_share + len(prefixes) * (1 - encoder_share)), 2
        ),
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    job = results["jobs"]
    figure, axis = plt.subplots(figsize=(6, 3.2))
    labels = ["one job,\nthree languages", "three jobs,\none language each"]
    bottoms = 0.0
    axis.barh(labels[0], job["one_job_s"], color="#3b7dd8")
    for target in TARGETS:
        axis.barh(labels[1], job["each_job_s"][target], left=bottoms, label=target)
        bottoms += job["each_job_s"][target]
    axis.set_xlabel("seconds (alpaca, tiny NLLB-shaped model, HF engine, CPU)")
    axis.set_title(f"three target languages: one job is {job['ratio']}x faster")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=34, help="alpaca rows (default 34)")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the HF jobs")
    parser.add_argument("--skip-ct2", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory(prefix="mtfleet-multi-target-") as folder:
        work = Path(folder)
        workload = alpaca(args.rows, work)
        model = build_tiny_model(
            "nllb", work / "model", d_model=args.d_model, layers=args.layers,
            heads=4, ffn=args.d_model * 4,
        )  # fmt: skip
        import torch

        torch.set_num_threads(1)
        results: dict[str, Any] = {
            "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
            "workload": workload.description,
            "model": f"tiny NLLB-shaped, random weights, d_model {args.d_model}, "
            f"{args.layers} layers",
            "targets": TARGETS,
            "engines": engines(workload.texts(), model, "hf"),
        }
        if not args.skip_ct2:
            results["engines_ct2"] = engines(workload.texts(), model, "ct2")
            results["ct2_repeated_batch"] = ct2_repeated_batch(workload.texts(), model)
        connect()
        results["jobs"] = jobs(workload, model, work, "hf", args.rounds)
        results["jobs_no_checks"] = jobs(workload, model, work, "hf", args.rounds, checks=False)
        if not args.skip_ct2:
            results["jobs_ct2"] = jobs(workload, model, work, "ct2", 1)
            results["jobs_ct2_no_checks"] = jobs(workload, model, work, "ct2", 1, checks=False)
    results.update(
        {
            "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), {platform.system()}",
            "versions": versions(),
        }
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS.with_suffix(".png"))
    print(table(results))


JOB_ROWS = {
    "jobs": "jobs (`mtfleet translate`, HF engine)",
    "jobs_no_checks": "jobs, HF engine, health checks off",
    "jobs_ct2": "jobs (`mtfleet translate`, ct2 engine)",
    "jobs_ct2_no_checks": "jobs, ct2 engine, health checks off",
}
ENGINE_ROWS = {
    "engines": "HF engine alone (one generate for all targets)",
    "engines_ct2": "ct2 engine alone (one translate_batch for all targets)",
}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| measured | three separately | together | ratio | identical |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for key, label in JOB_ROWS.items():
        if key in results:
            job = results[key]
            lines.append(
                f"| {label} | {job['three_jobs_s']} s | {job['one_job_s']} s | "
                f"**{job['ratio']}x** | {all(job['outputs_identical'].values())} |"
            )
    for key, label in ENGINE_ROWS.items():
        if key in results:
            engine = results[key]
            lines.append(
                f"| {label} | {engine['per_target_s']} s | {engine['shared_encoder_s']} s | "
                f"{engine['ratio']}x | {engine['identical']} |"
            )
    ct2 = results.get("ct2_repeated_batch")
    if ct2:
        lines.append(
            f"| ct2: a call per target vs the batch repeated | {ct2['call_per_target_s']} s | "
            f"{ct2['repeated_batch_s']} s | {ct2['ratio']}x | {ct2['identical']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
