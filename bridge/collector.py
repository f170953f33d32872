"""The cyclic garbage collector: kept off the objects the bridge starts with, run less often,
and kept from scanning a very large request while it is served.

Once the bridge has started (its modules imported, its database opened and migrated), the
objects it holds, some 46,000 of them, live as long as the process: settle_after_startup
moves them out of the collector's sight (gc.freeze), where a full collection spent 27-43 ms
looking at them again each time. It also lets the youngest generation grow to
YOUNG_THRESHOLD allocations between collections instead of CPython's 700: a turn's objects
are mostly freed by reference counting before a collection sees them, and at 16 streams of
10-token turns the collector's time per turn fell from 75-100 us to 13-19 us, and its
longest pause from 30-43 ms to 4-6 (bench/README.md, "Garbage collection").

Now and then CPython's collector looks at every container object of the process at once (a
full collection), holding every thread, the event loop included. While a 50 MB request is
decoded and translated, that is millions of objects: translating 250,000 tools made eight
full collections of 0.1 to 0.9 s each. So while a request with a body of LARGE_BODY bytes or
more is in flight, automatic collection is paused; its objects form no reference cycles and
are freed by reference counting when it ends, and collection resumes then.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

LARGE_BODY = 8 * 1024 * 1024
# Allocations (less deallocations) of container objects between two collections of the
# youngest generation. A collection of it then took up to 3-5 ms at 16 streams, against
# 2-3 at CPython's 700; 10,000 saved little more and paused for up to 6 ms.
YOUNG_THRESHOLD = 5000


def settle_after_startup() -> None:
    """Collect what startup left, freeze the rest, and collect the young less often: for a
    serving process, once it is up (never in a process that builds many apps, as the tests
    do: what it froze would stay until it exits)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


class CollectorPause:
    """Pauses automatic garbage collection while large requests are in flight."""

    def __init__(self) -> None:
        self._holders = 0
        # Whether this pause turned collection off (it never turns on what it did not).
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    @contextmanager
    def during(self, size: int) -> Iterator[None]:
        """Collection paused for the block when `size` (a body's bytes) is large."""
        if size < LARGE_BODY:
            yield
            return
        self._holders += 1
        if self._holders == 1 and gc.isenabled():
            gc.disable()
            self._paused = True
        try:
            yield
        finally:
            self._holders -= 1
            if not self._holders and self._paused:
                self._paused = False
                gc.enable()
