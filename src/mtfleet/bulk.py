"""Bulk work: a shard's lines decoded, its values segmented, with the cyclic garbage collector paused.

Such work makes many objects at once (dicts, tuples, lines, pieces) and no reference cycles, yet each
700 of them set off a collection, and each tenth of those one more over the objects that lived on:
the collector took a sixth of the machinery's time a row (`bench/scale.py`, 100k rows). Paused, it
runs once after instead; reference counting frees everything as it did.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The block runs without cyclic garbage collection, which is on again after it as it was;
    for blocks that make many objects and no cycles, and end."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
