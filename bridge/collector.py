"""The cyclic garbage collector, kept from scanning a very large request while it is served.

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
