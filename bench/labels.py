"""A bench's runs kept side by side in one JSON file, each under its `label` (a change: run with
`--label before`, change, then `--label after`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def other_labels(out: Path, label: str) -> list[dict[str, Any]]:
    """The earlier runs in `out` under other labels: a run replaces only its own label's."""
    if not out.exists():
        return []
    return [run for run in json.loads(out.read_text()) if run["label"] != label]
