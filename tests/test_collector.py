"""Garbage collection pauses while a very large request is served, and only then: it comes
back when the last one ends, and a pause never turns on what something else turned off.
Once a serving process is up, what it holds is left out of later collections, and the
youngest generation is collected less often."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bridge.collector import LARGE_BODY, YOUNG_THRESHOLD, CollectorPause, settle_after_startup


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


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_after_startup_its_garbage_is_gone_and_what_it_holds_is_not_scanned_again(
    collecting: None, restored: None
) -> None:
    held = _Node()
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    settle_after_startup()
    assert gone() is None
    assert gc.get_freeze_count() > 0
    assert not any(item is held for item in gc.get_objects())
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    # What comes later is collected as before.
    later = _Node()
    later_gone = weakref.ref(later)
    del later
    gc.collect()
    assert later_gone() is None
