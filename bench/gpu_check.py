"""The GPU check (`make gpu-check`): mtfleet's engines and a job on the machine's NVIDIA GPUs.

On a machine with CUDA GPUs, in a few minutes: checks that torch and CTranslate2 see them; runs
the HF engine in float16 and CTranslate2 in float16 and int8_float16 on GPU 0 against CPU float32
(greedy tokens on the tiny model, BLEU on the demo model's Multi30k test set); runs an
`mtfleet translate` job with one translator per GPU (and, on a machine with two GPUs or more, a job
whose translators span two GPUs each: `--gpus-per-translator 2`, HF and ct2); and writes bench/results/gpu.json with the
device, tokens/s and rows/s per engine and compute type, peak GPU memory, and each engine's ratio
to CTranslate2 called by hand on the same GPU. Without a GPU it says so and exits 0.

    .venv/bin/python bench/gpu_check.py [--sentences 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEMO_MODEL = ROOT / "models" / "multi30k-en-de"
MULTI30K = ROOT.parent / "shared" / "data" / "multi30k"
ALPACA = ROOT / "examples" / "alpaca_sample.json"
# The bound: a GPU compute type may lose at most this much BLEU against CPU float32.
BLEU_TOLERANCE = 0.5
ENGINES = (("hf", "float16"), ("ct2", "float16"), ("ct2", "int8_float16"))
# `--device cpu`: the same script on the CPU, to try it on a machine without a GPU.
CPU_ENGINES = (("hf", "float32"), ("ct2", "float32"), ("ct2", "int8"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "gpu.json")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run on the CPU"
    )
    args = parser.parse_args(argv)
    gpus = cuda_devices() if args.device == "cuda" else [{"index": 0, "name": "cpu (dry run)"}]
    if not gpus:
        print(
            "gpu-check: no CUDA GPU on this machine (torch and CTranslate2 see none); nothing to do."
        )
        return 0
    device = "cuda:0" if args.device == "cuda" else "cpu"
    kinds = ENGINES if args.device == "cuda" else CPU_ENGINES
    started = time.perf_counter()
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "gpus": gpus},
        "versions": versions(),
    }
    sources, references = multi30k(args.sentences)
    with tempfile.TemporaryDirectory(prefix="mtfleet-gpu-") as scratch:
        tiny = tiny_model(Path(scratch))
        report["tiny_model_parity"] = parity(tiny, sources[:200], kinds, device)
        report["engines"] = engines(DEMO_MODEL, sources, references, kinds, device)
        report["job"] = job(DEMO_MODEL, len(gpus), Path(scratch))
        if args.device == "cuda" and len(gpus) >= 2:
            report["job_spanning_gpus"] = {
                engine: job(
                    DEMO_MODEL, len(gpus), Path(scratch), engine=engine, gpus_per_translator=2
                )
                for engine in ("hf", "ct2")
            }
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["checks"] = verdicts(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0 if all(check["ok"] for check in report["checks"]) else 1


def cuda_devices() -> list[dict[str, Any]]:
    """The CUDA GPUs torch sees, if CTranslate2 sees them too; [] on a CPU machine."""
    import ctranslate2
    import torch

    if not torch.cuda.is_available() or ctranslate2.get_cuda_device_count() == 0:
        return []
    return [
        {
            "index": index,
            "name": torch.cuda.get_device_name(index),
            "memory_gib": round(torch.cuda.get_device_properties(index).total_memory / 2**30, 1),
        }
        for index in range(torch.cuda.device_count())
    ]


def versions() -> dict[str, str]:
    import ctranslate2
    import torch

    from mtfleet.manifest import versions as package_versions

    return {**package_versions(), "cuda": str(torch.version.cuda), "ct2": ctranslate2.__version__}


def multi30k(count: int) -> tuple[list[str], list[str]]:
    def lines(name: str) -> list[str]:
        with gzip.open(MULTI30K / name, "rt", encoding="utf-8") as stream:
            return [line.rstrip("\n") for line in stream][:count]

    return lines("test_2016_flickr.en.gz"), lines("test_2016_flickr.de.gz")


def tiny_model(scratch: Path) -> Path:
    from mtfleet.random_models import build_tiny_marian

    return build_tiny_marian(scratch / "tiny-marian")


def load(engine: str, model: Path, compute_type: str, device: str) -> Any:
    from mtfleet.engines import load_engine

    settings: dict[str, Any] = {"device": device}
    if engine == "ct2":
        settings["compute_type"] = compute_type
    return load_engine(engine, str(model), **settings)


def parity(
    model: Path, sentences: list[str], kinds: Sequence[tuple[str, str]], device: str
) -> dict[str, Any]:
    """Greedy outputs of each GPU engine against the HF engine on the CPU in float32."""
    reference = load("hf", model, "float32", "cpu").translate(sentences)
    found = {}
    for engine, compute_type in kinds:
        outputs = load(engine, model, compute_type, device).translate(sentences)
        same = sum(a == b for a, b in zip(outputs, reference, strict=True))
        found[f"{engine} {compute_type}"] = {"identical": same, "of": len(sentences)}
    return found


def engines(
    model: Path,
    sources: list[str],
    references: list[str],
    kinds: Sequence[tuple[str, str]],
    device: str,
) -> dict[str, Any]:
    """BLEU, speed and peak GPU memory of each engine and compute type on `device`, beside CPU
    float32 and CTranslate2 called by hand."""
    import torch

    on_gpu = device.startswith("cuda")
    rows: dict[str, Any] = {}
    cpu = load("hf", model, "float32", "cpu")
    rows["hf float32 (cpu)"] = timed(cpu.translate, sources, references, cpu.count_tokens)
    for engine, compute_type in kinds:
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
        loaded = load(engine, model, compute_type, device)
        peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_gpu else None
        rows[f"{engine} {compute_type}"] = {
            **timed(loaded.translate, sources, references, loaded.count_tokens),
            "torch_peak_memory_mib": peak,
        }
    direct_type = kinds[1][1]
    direct_name = f"ct2-direct {direct_type}"
    direct = ct2_direct(model, direct_type, "cuda" if on_gpu else "cpu")
    rows[direct_name] = timed(direct, sources, references, cpu.count_tokens)
    for name, row in rows.items():
        if name != direct_name:
            row["vs_ct2_direct"] = round(row["tokens_per_s"] / rows[direct_name]["tokens_per_s"], 3)
    return rows


def timed(
    translate: Callable[[list[str]], list[str]],
    sources: list[str],
    references: list[str],
    count_tokens: Callable[[Sequence[str]], list[int]],
) -> dict[str, Any]:
    import sacrebleu

    translate(sources[:16])  # warm up: kernels, caches
    clock = time.perf_counter()
    outputs = translate(sources)
    seconds = time.perf_counter() - clock
    tokens = sum(count_tokens(outputs))
    return {
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(sources) / seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1),
        "bleu": round(sacrebleu.corpus_bleu(outputs, [references]).score, 2),
    }


def ct2_direct(model: Path, compute_type: str, device: str) -> Callable[[list[str]], list[str]]:
    """CTranslate2 by hand, as its documentation shows, on the model mtfleet converted."""
    import ctranslate2
    from transformers import AutoTokenizer

    from mtfleet.engines.ct2 import converted_model
    from mtfleet.engines.tokens import files_sha256

    tokenizer = AutoTokenizer.from_pretrained(model)
    translator = ctranslate2.Translator(
        str(converted_model(model, files_sha256(model), compute_type)),
        device=device,
        compute_type=compute_type,
    )

    def translate(texts: list[str]) -> list[str]:
        sources = [tokenizer.convert_ids_to_tokens(ids) for ids in tokenizer(texts)["input_ids"]]
        results = translator.translate_batch(
            sources, max_batch_size=4096, batch_type="tokens", beam_size=1
        )
        return tokenizer.batch_decode(
            [tokenizer.convert_tokens_to_ids(r.hypotheses[0]) for r in results],
            skip_special_tokens=True,
        )

    return translate


def job(
    model: Path, gpus: int, scratch: Path, engine: str = "hf", gpus_per_translator: int = 1
) -> dict[str, Any]:
    """The alpaca sample through `mtfleet translate` on a local cluster: one translator per GPU,
    or per `gpus_per_translator` GPUs, its model split over them."""
    from mtfleet.cluster import run_job
    from mtfleet.spec import JobSpec

    spec = JobSpec(
        input=str(ALPACA),
        output=str(scratch / f"alpaca.de.{engine}.k{gpus_per_translator}.json"),
        model=str(model),
        fields=["instruction", "input", "output"],
        shard_tokens=2000,
        engine=engine,
        gpus_per_translator=gpus_per_translator,
    )
    clock = time.perf_counter()
    result = run_job(spec, state_dir=scratch / "state")
    seconds = time.perf_counter() - clock
    manifest = result.manifest or {}
    devices = {signature.get("device") for signature in manifest.get("engine_signatures", [])}
    return {
        "state": result.state,
        "error": result.error,
        "seconds": round(seconds, 2),
        "rows_per_s": round(manifest.get("rows", 0) / seconds, 2),
        "translators_expected": gpus // gpus_per_translator,
        "nodes": manifest.get("segments_per_node", {}),
        "devices": sorted(str(device) for device in devices),
    }


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    engines = report["engines"]
    reference = engines["hf float32 (cpu)"]["bleu"]
    checks = [
        {
            "check": f"{name}: BLEU within {BLEU_TOLERANCE} of CPU float32 ({reference})",
            "ok": abs(row["bleu"] - reference) <= BLEU_TOLERANCE,
            "value": row["bleu"],
        }
        for name, row in engines.items()
        if isinstance(row, dict) and name != "hf float32 (cpu)" and "int8" not in name
    ]
    checks.append({"check": "the job succeeded on the GPUs", "ok": report["job"]["state"] == "succeeded",
                   "value": report["job"]["devices"]})  # fmt: skip
    for engine, spanning in report.get("job_spanning_gpus", {}).items():
        checks.append({
            "check": f"a {engine} job with translators of two GPUs each succeeded on cuda:0,1",
            "ok": spanning["state"] == "succeeded" and spanning["devices"] == ["cuda:0,1"],
            "value": spanning["devices"],
        })  # fmt: skip
    return checks


def print_report(report: dict[str, Any]) -> None:
    print(f"GPUs: {', '.join(gpu['name'] for gpu in report['machine']['gpus'])}")
    print("| engine | rows/s | tokens/s | BLEU | vs ct2-direct | peak MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in report["engines"].items():
        if isinstance(row, dict):
            print(f"| {name} | {row['rows_per_s']} | {row['tokens_per_s']} | {row['bleu']} | "
                  f"{row.get('vs_ct2_direct', '')} | {row.get('torch_peak_memory_mib', '')} |")  # fmt: skip
    for name, found in report["tiny_model_parity"].items():
        print(
            f"tiny model, greedy tokens identical to CPU float32: {name} {found['identical']}/{found['of']}"
        )
    for check in report["checks"]:
        print(("ok   " if check["ok"] else "FAIL ") + check["check"])
    print(f"{report['seconds']} s; written to bench/results/gpu.json")


if __name__ == "__main__":
    sys.exit(main())
