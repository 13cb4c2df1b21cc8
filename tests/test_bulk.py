"""Bulk work pauses the cyclic garbage collector and leaves it as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mtfleet.bulk import collector_paused


@pytest.fixture
def collector_as_it_was() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("collector_as_it_was")
def test_the_collector_is_paused_inside_the_block_and_on_again_after_it() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_as_it_was")
def test_the_collector_is_on_again_after_a_block_that_raised() -> None:
    gc.enable()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("a line that does not decode")
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_as_it_was")
def test_a_collector_paused_before_the_block_stays_paused_after_it() -> None:
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
