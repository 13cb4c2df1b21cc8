"""The CLI's help in an 80-column terminal: every option's name shown whole."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from mtfleet.cli.main import app

COMMANDS = [
    [],
    ["translate"],
    ["submit"],
    ["serve"],
    ["status"],
    ["inspect"],
    ["models", "inspect"],
    ["jobs"],
    ["jobs", "rm"],
    ["prune"],
    ["memory"],
    ["memory", "export"],
    ["retry"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: " ".join(command) or "mtfleet")
def test_help_at_80_columns_shows_every_option_name_whole(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"})

    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert all(len(line) <= 80 for line in result.output.splitlines())
    names = re.findall(r"--[a-z][a-z0-9-]*", result.output)
    assert "--help" in names
    if command == ["translate"]:
        assert {"--max-batch-tokens", "--gpus-per-translator", "--no-speculative-tail"} <= set(
            names
        )
