"""The suite runs on the versions of the lock, the ones `make install`, CI and the images install."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

LOCK = Path(__file__).resolve().parent.parent / "deploy" / "constraints.txt"


def locked_versions() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def installed_versions() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def test_every_locked_package_is_installed_at_its_locked_version() -> None:
    installed = installed_versions()

    drifted = {
        name: (version, installed.get(name))
        for name, version in locked_versions().items()
        if installed.get(name) != version
    }

    assert drifted == {}, "installed versions differ from deploy/constraints.txt (run make install)"


def test_the_lock_pins_the_packages_that_change_translations_and_leaves_torch_apart() -> None:
    pins = locked_versions()

    assert {"transformers", "tokenizers", "sentencepiece", "ctranslate2", "ray"} <= pins.keys()
    assert "torch" not in pins
