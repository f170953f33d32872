"""Garbage collection pauses while a very large request is served, and only then: it comes
back when the last one ends, and a pause never turns on what something else turned off."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bridge.collector import LARGE_BODY, CollectorPause


@pytest.fixture
def collecting() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()


def test_collection_pauses_while_large_requests_are_served(collecting: None) -> None:
    pause = CollectorPause()
    with pause.during(LARGE_BODY - 1):
        assert gc.isenabled()  # a small request changes nothing
    with pause.during(LARGE_BODY):
        assert not gc.isenabled()
        with pause.during(LARGE_BODY * 2):
            assert not gc.isenabled()
        assert not gc.isenabled()  # the first is still being served
    assert gc.isenabled()


def test_a_pause_never_turns_on_what_it_did_not_turn_off(collecting: None) -> None:
    gc.disable()
    pause = CollectorPause()
    with pause.during(LARGE_BODY):
        pass
    assert not gc.isenabled()
