"""The Hugging Face Hub, asked only about a model that is no local directory, and in seconds.

Without a network, huggingface_hub retries each request for about 25 s before transformers gives
up. A hub id is therefore preceded by one quick look at the Hub (REACH_TIMEOUT_S): where it cannot
be reached, a model in this machine's cache loads in huggingface_hub's offline mode, and any other
is refused at once with one sentence. A local directory never reaches the Hub: transformers reads
it as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mtfleet.errors import ModelError

# How long the Hub may take to answer the look before a job goes on without it
REACH_TIMEOUT_S = 3.0


def use_hub(source: str) -> None:
    """Before `source` is loaded: nothing for a local directory or in offline mode; for a hub id
    the Hub must answer, else the model is loaded offline from the cache, or refused."""
    from huggingface_hub import constants

    if Path(source).is_dir() or constants.HF_HUB_OFFLINE:
        return
    why = hub_unreachable(constants.ENDPOINT)
    if why is None:
        return
    if not in_hub_cache(source):
        raise ModelError(
            f"Model {source!r} is no local directory, and the Hugging Face Hub "
            f"({constants.ENDPOINT}) cannot be reached to fetch it ({why}): give a model "
            f"directory, or run where the Hub can be reached."
        )
    # this process stays offline: the Hub did not answer, and the model's files are here
    constants.HF_HUB_OFFLINE = True


@functools.cache
def hub_unreachable(endpoint: str) -> str | None:
    """None when the Hub at `endpoint` answers at all (any status); else why not, in a few words.
    Asked once per process."""
    import httpx

    try:
        httpx.head(endpoint, timeout=REACH_TIMEOUT_S)
    except httpx.HTTPError as error:
        return str(error) or type(error).__name__
    return None


def in_hub_cache(model: str) -> bool:
    """Whether the hub model `model` has its config.json in this machine's cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except ValueError:  # not a valid hub id
        return False


@contextmanager
def hub_offline() -> Iterator[None]:
    """huggingface_hub's offline mode while inside: only the cache is read."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
