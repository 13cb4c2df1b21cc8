"""Ray's, the Hub's and transformers' logs: only their errors, unless the CLI is told --verbose."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from mtfleet.cli.main import app
from mtfleet.verbosity import LIBRARY_VERBOSITY_ENVS, VERBOSE_ENV, ray_logging, set_verbose


@pytest.fixture(autouse=True)
def verbosity_restored(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment and transformers' verbosity as they were, after each test."""
    import transformers

    before = transformers.logging.get_verbosity()
    for name in (VERBOSE_ENV, *LIBRARY_VERBOSITY_ENVS):
        monkeypatch.delenv(name, raising=False)
    yield
    transformers.logging.set_verbosity(before)


def test_by_default_ray_and_the_libraries_show_only_their_errors() -> None:
    import transformers

    set_verbose(False)

    assert ray_logging() == {"log_to_driver": False, "logging_level": logging.WARNING}
    assert transformers.logging.get_verbosity() == logging.ERROR


def test_verbose_shows_ray_workers_output_and_every_librarys_info_lines() -> None:
    import transformers

    result = CliRunner().invoke(app, ["--verbose", "models", "inspect", "--help"])

    assert result.exit_code == 0, result.output
    assert ray_logging() == {"log_to_driver": True, "logging_level": logging.INFO}
    assert transformers.logging.get_verbosity() == logging.INFO


def test_a_verbosity_the_user_set_for_a_library_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "warning")

    set_verbose(False)

    assert transformers.logging.get_verbosity() == logging.WARNING


def test_version_prints_the_version_without_a_command() -> None:
    from mtfleet.manifest import versions

    result = CliRunner().invoke(app, ["--version"])

    assert (result.exit_code, result.output) == (0, f"{versions()['mtfleet']}\n")
