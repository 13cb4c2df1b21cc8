"""How much of the libraries' own logging a user sees: their errors, or with --verbose all of it.

Ray (its INFO lines and its workers' output), the Hugging Face Hub and transformers talk a lot
about things that are not news to a user of mtfleet; the CLI shows only their errors unless told
--verbose.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

# Set (by the CLI's --verbose) where Ray's, the Hub's and transformers' logs are all shown; in the
# environment, so that the processes this one starts (Ray's own) keep it
VERBOSE_ENV = "MTFLEET_VERBOSE"
LIBRARY_VERBOSITY_ENVS = ("TRANSFORMERS_VERBOSITY", "HF_HUB_VERBOSITY")


def set_verbose(verbose: bool) -> None:
    """--verbose: Ray's INFO lines and its workers' output, the Hub's and transformers' INFO
    lines; without it only their errors (a verbosity the user set for a library is kept)."""
    os.environ[VERBOSE_ENV] = "1" if verbose else ""
    level = "info" if verbose else "error"
    for name in LIBRARY_VERBOSITY_ENVS:
        if verbose or name not in os.environ:
            os.environ[name] = level
    # a library imported already read its variable: it is told directly
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.set_verbosity(
            _level(os.environ[LIBRARY_VERBOSITY_ENVS[0]])
        )
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity(_level(os.environ[LIBRARY_VERBOSITY_ENVS[1]]))


def verbose() -> bool:
    return bool(os.environ.get(VERBOSE_ENV))


def ray_logging() -> dict[str, Any]:
    """ray.init's logging settings: its workers' output and INFO lines only with --verbose."""
    return {
        "log_to_driver": verbose(),
        "logging_level": logging.INFO if verbose() else logging.WARNING,
    }


def _level(name: str) -> int:
    return logging.getLevelNamesMapping().get(name.upper(), logging.WARNING)
