"""How much padding a job's shards cost the HF engine against one sort of the whole input (issue 26).

HF `generate` pads every segment of a batch to the batch's longest, and a translator sorts only
its shard's segments into batches. This plans the bench's alpaca workload as a job would, takes
each shard's segments as its translator would (segmented, deduplicated within the shard), and
batches them with the engine's own `ModelTokenizer.batches`, without running the model. It
reports the padding ratio (padded source tokens / real source tokens, summed over every batch)
of the job against the same batching over the whole input at once, for each shard size; and the
same for decode steps (each batch decodes to its longest segment's cap); and the same for
shards sized to a fleet of each of `--translators` translators (no --shard-tokens, the default).
Balance: for each fleet size N, `fleet_time_vs_ideal` is when N equal translators would finish,
leasing shards as the coordinator hands them out (the speculative tail included), a shard costing
its padded decode steps, against the whole input's padded steps split evenly over N (1.0: as fast
as one sort of the whole input shared perfectly); `one_quarter_speed_vs_ideal` the same with one
of the N at a quarter of the others' speed. Then what a translator sorting
a larger window would get: row ranges of a fixed size with no tail, and windows cut from the
units sorted by estimated tokens. Exact and cheap: no model runs. With `--time`, also times the
HF engine (CPU, one thread) on the bench model: one call per shard of the first `--shard-tokens`
size and of each fleet-sized plan of several shards against one call over the whole input, in
turns in this process. Writes bench/results/padding.json.

    .venv/bin/python bench/padding.py [--rows 2040] [--shard-tokens 32000,4000,128000]
        [--translators 1,2,4,8] [--windows 32000,64000,128000] [--time]
        [--out bench/results/padding.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtfleet.cluster.plan import UnitReader, plan_job, unit_tokens
from mtfleet.data import segment_texts
from mtfleet.engines.hf import HFEngine
from mtfleet.engines.tokens import ModelTokenizer
from mtfleet.pipeline import translate_texts
from mtfleet.spec import JobSpec
from run import MAX_LENGTH_FACTOR, MAX_LENGTH_OFFSET, PROFILES, build_model
from workloads import alpaca

BENCH = Path(__file__).resolve().parent


def batch_padding(tokenizer: ModelTokenizer, texts: Sequence[str]) -> dict[str, int]:
    """Real and padded source tokens and decode steps of `texts` as one engine call batches them."""
    pieces = segment_texts(texts, tokenizer.max_input_tokens, tokenizer.count_tokens)
    segments = [piece.text for found in pieces for piece in found if piece.translate]
    encoded = tokenizer.encode_segments(list(dict.fromkeys(segments)))
    sums = {"real_tokens": 0, "padded_tokens": 0, "real_steps": 0, "padded_steps": 0, "batches": 0}
    for batch in tokenizer.batches(encoded):
        lengths = [len(encoded[i]) for i in batch]
        sums["real_tokens"] += sum(lengths)
        sums["padded_tokens"] += len(batch) * max(lengths)
        sums["real_steps"] += sum(tokenizer.output_cap(n) for n in lengths)
        sums["padded_steps"] += len(batch) * tokenizer.output_cap(max(lengths))
        sums["batches"] += 1
    return sums


def ratios(sums: dict[str, int]) -> dict[str, float]:
    return {
        "padding": round(sums["padded_tokens"] / sums["real_tokens"], 4),
        "decode_padding": round(sums["padded_steps"] / sums["real_steps"], 4),
    }


def shard_padding(
    tokenizer: ModelTokenizer, spec: JobSpec, work_dir: Path, translators: int
) -> tuple[list[list[str]], list[dict[str, int]]]:
    """The texts of the job's shards, planned for `translators` translators, and the sums of
    each shard's batches, each shard batched on its own."""
    shards = plan_job(spec, work_dir, translators=translators)
    reader = UnitReader(work_dir)
    texts = [
        [unit.text for unit in reader.read(shard.row_start, shard.row_end)] for shard in shards
    ]
    return texts, [batch_padding(tokenizer, shard) for shard in texts]


def fleet_time(costs: Sequence[int], speeds: Sequence[float]) -> float:
    """When translators of `speeds` finish shards of `costs`, as the coordinator hands them out:
    each leases the next shard in plan order as soon as it is free; with none left, it backs up
    the oldest leased shard with no backup whose owner would finish after it would (the
    speculative tail), and whichever finishes first wins, the other dropping it then."""
    free = [0.0] * len(speeds)
    idle: set[int] = set()
    done_at: dict[int, float] = {}
    owner: dict[int, int] = {}  # leased shards with no backup yet
    while len(idle) < len(speeds):
        translator = min(set(range(len(speeds))) - idle, key=lambda i: free[i])
        now = free[translator]
        if len(done_at) < len(costs):
            shard = len(done_at)
            done_at[shard] = free[translator] = now + costs[shard] / speeds[translator]
            owner[shard] = translator
            continue
        for shard in sorted(owner):
            finish = now + costs[shard] / speeds[translator]
            if done_at[shard] > finish:
                done_at[shard] = free[translator] = free[owner.pop(shard)] = finish
                break
        else:
            idle.add(translator)
    return max(done_at.values())


def job_row(
    per_shard: list[dict[str, int]], whole: dict[str, int], fleets: Sequence[int]
) -> dict[str, Any]:
    """A job's padding against the whole input's, and its time on fleets of each size against
    the whole input's padded decode steps shared perfectly: equal translators, and one of them
    at a quarter of the others' speed (the bench's mixed fleet)."""
    total = {key: sum(shard[key] for shard in per_shard) for key in per_shard[0]}
    job, alone = ratios(total), ratios(whole)
    steps = [shard["padded_steps"] for shard in per_shard]
    return {
        "shards": len(per_shard),
        "batches": total["batches"],
        "job_padding": job["padding"],
        "job_decode_padding": job["decode_padding"],
        "job_vs_whole_padding": round(job["padding"] / alone["padding"], 4),
        "job_vs_whole_decode": round(job["decode_padding"] / alone["decode_padding"], 4),
        "fleet_time_vs_ideal": {
            str(n): round(fleet_time(steps, [1.0] * n) * n / whole["padded_steps"], 4)
            for n in fleets
        },
        "one_quarter_speed_vs_ideal": {
            str(n): round(
                fleet_time(steps, [0.25] + [1.0] * (n - 1)) * (n - 0.75) / whole["padded_steps"], 4
            )
            for n in fleets
            if n > 1
        },
    }


def window_padding(tokenizer: ModelTokenizer, texts: Sequence[str], window: int) -> dict[str, Any]:
    """The padding of `texts` cut into groups of about `window` estimated tokens, each batched
    on its own."""
    groups: list[list[str]] = [[]]
    tokens = 0
    for text in texts:
        groups[-1].append(text)
        tokens += unit_tokens(text)
        if tokens >= window:
            groups.append([])
            tokens = 0
    total: dict[str, int] = {}
    for group in filter(None, groups):
        for key, value in batch_padding(tokenizer, group).items():
            total[key] = total.get(key, 0) + value
    return {"window_tokens": window, **ratios(total), "batches": total["batches"]}


def time_engine(model: Path, calls: dict[str, list[list[str]]], rounds: int) -> dict[str, Any]:
    """Seconds the HF engine takes over each way of calling it (one `translate_texts` per list of
    texts), in turns, the best of `rounds`; and each one's ratio to the first."""
    engine = HFEngine(
        str(model),
        max_length_factor=MAX_LENGTH_FACTOR,
        max_length_offset=MAX_LENGTH_OFFSET,
        max_batch_tokens=JobSpec.model_fields["max_batch_tokens"].default,
        device="cpu",
        threads=1,
    )
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, groups in calls.items():
            started = time.perf_counter()
            for texts in groups:
                translate_texts(texts, engine)
            elapsed = time.perf_counter() - started
            best[name] = min(best.get(name, elapsed), elapsed)
    first = next(iter(best.values()))
    return {
        "seconds": {name: round(value, 2) for name, value in best.items()},
        "ratio_to_first": {name: round(value / first, 4) for name, value in best.items()},
        "rounds": rounds,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=PROFILES["full"].alpaca_rows)
    parser.add_argument("--shard-tokens", default="32000,4000,128000")
    parser.add_argument("--translators", default="1,2,4,8", help="fleet sizes to plan for")
    parser.add_argument("--windows", default="32000,64000,128000")
    parser.add_argument("--time", action="store_true", help="also time the HF engine")
    parser.add_argument("--time-rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "padding.json")
    args = parser.parse_args(argv)
    fleets = [int(n) for n in args.translators.split(",")]
    with tempfile.TemporaryDirectory(prefix="mtfleet-padding-") as scratch:
        root = Path(scratch)
        model = build_model(PROFILES["full"], root / "model")
        workload = alpaca(args.rows, root)
        base = {
            "input": str(workload.path),
            "output": str(root / "out.json"),
            "model": str(model),
            "fields": workload.fields,
            "max_length_factor": MAX_LENGTH_FACTOR,
            "max_length_offset": MAX_LENGTH_OFFSET,
        }
        budget = JobSpec(**base).max_batch_tokens
        tokenizer = ModelTokenizer(
            str(model),
            max_batch_tokens=budget,
            max_length_factor=MAX_LENGTH_FACTOR,
            max_length_offset=MAX_LENGTH_OFFSET,
        )
        everything, _ = shard_padding(tokenizer, JobSpec(**base), root / "whole", 1)
        everything = [text for shard in everything for text in shard]
        whole = batch_padding(tokenizer, everything)
        calls: dict[str, list[list[str]]] = {"whole_input": [everything]}
        rows: list[dict[str, Any]] = []
        for shard_tokens in [int(n) for n in args.shard_tokens.split(",")]:
            spec = JobSpec(**base, shard_tokens=shard_tokens)
            texts, per_shard = shard_padding(tokenizer, spec, root / f"job-{shard_tokens}", 1)
            rows.append({"shard_tokens": shard_tokens, **job_row(per_shard, whole, fleets)})
            calls.setdefault(f"shard_tokens_{shard_tokens}", texts)
        by_fleet: list[dict[str, Any]] = []
        for translators in fleets:
            work_dir = root / f"fleet-{translators}"
            texts, per_shard = shard_padding(tokenizer, JobSpec(**base), work_dir, translators)
            by_fleet.append({"translators": translators, **job_row(per_shard, whole, fleets)})
            if len(texts) > 1:
                calls[f"sized_for_{translators}_translators"] = texts
        windows = [int(n) for n in args.windows.split(",")]
        row_windows = [window_padding(tokenizer, everything, n) for n in windows]
        by_length = sorted(everything, key=unit_tokens)
        sorted_windows = [window_padding(tokenizer, by_length, n) for n in windows]
        timed = time_engine(model, calls, args.time_rounds) if args.time else None
    result = {
        "rows": args.rows,
        "max_batch_tokens": budget,
        "whole_input": {**ratios(whole), "batches": whole["batches"]},
        "by_shard_tokens": rows,
        "sized_to_the_fleet": by_fleet,
        "row_windows": row_windows,
        "length_sorted_unit_windows": sorted_windows,
        "hf_engine_time": timed,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
