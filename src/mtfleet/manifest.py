"""The manifest: accounts for every field of every row, and signs the result with what made it."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Any

from mtfleet.data import write_bytes_atomically

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


def write_manifest(
    output: str | Path, manifest: dict[str, Any], *, confine_to: Path | None = None
) -> Path:
    """Writes OUT.manifest.json beside the output, atomically (never through a planted symlink)."""
    path = manifest_path(output)
    content = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomically(path, content.encode(), confine_to=confine_to)
    return path
