"""The manifest: accounts for every field of every row, and signs the result with what made it."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

from mtfleet.data import write_bytes_atomically
from mtfleet.spec import TARGET_PLACEHOLDER

PACKAGES = ("mtfleet", "torch", "transformers", "sentencepiece", "ctranslate2", "ray", "pyarrow")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def manifest_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".manifest.json")


def job_manifest_path(output: str | Path) -> Path:
    """The manifest of a job with several target languages, beside theirs: OUT with `targets` in
    place of {tgt_lang} (out/alpaca.{tgt_lang}.jsonl -> out/alpaca.targets.jsonl.manifest.json)."""
    return manifest_path(_all_targets(output))


def write_job_manifest(
    output: str | Path, manifest: dict[str, Any], *, confine_to: Path | None = None
) -> Path:
    """Writes the manifest of a job with several target languages (`job_manifest_path`)."""
    return write_manifest(_all_targets(output), manifest, confine_to=confine_to)


def _all_targets(output: str | Path) -> str:
    return str(output).replace(TARGET_PLACEHOLDER, "targets")


def write_manifest(
    output: str | Path, manifest: dict[str, Any], *, confine_to: Path | None = None
) -> Path:
    """Writes OUT.manifest.json beside the output, atomically (never through a planted symlink)."""
    path = manifest_path(output)
    content = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomically(path, content.encode(), confine_to=confine_to)
    return path
