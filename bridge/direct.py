"""An upstream's body handed to a callback as it is read, instead of waiting in aiohttp's
buffer for a task to wake up and take it.

aiohttp's HTTP parser gives each piece of a response's body to its StreamReader
(`feed_data`), which buffers it and wakes the task reading. For a paced stream, one token
per read, that wake-up, the task's step and the awaited write to the client cost more than
the token's whole translation (issue 25). While a consumer is attached, the reader's class
is swapped for one with the same layout whose `feed_data` calls the consumer instead, in
the parser's own callback; the end of the body and its failure are the reader's as always,
the consumer told of them. Detached (the default, and whenever the consumer cannot go on at
once), the reader buffers as aiohttp made it.

aiohttp re-arms a timer at every read of the body to notice an upstream gone silent; while
the reads go to a consumer, one timer a stream (IdleWatch) does that instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import StreamReader

__all__ = ["Consumer", "IdleWatch", "attach", "attachable", "detach"]

log = logging.getLogger(__name__)


class Consumer(Protocol):
    def data(self, data: bytes) -> None:
        """A piece of the body, as the parser read it; never raises."""

    def ended(self) -> None:
        """The body ended or failed (the reader is detached by then, and has it)."""


# The consumer of each attached reader, by the reader's id (the reader has no room for it).
_CONSUMERS: dict[int, Consumer] = {}


class _Attached(StreamReader):
    """A StreamReader whose body goes to its consumer."""

    __slots__ = ()

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        if data:
            _CONSUMERS[id(self)].data(data)
        return False

    def feed_eof(self) -> None:
        consumer = detach(self)
        self.feed_eof()
        if consumer is not None:
            consumer.ended()

    def set_exception(self, *args: Any, **kwargs: Any) -> None:
        consumer = detach(self)
        self.set_exception(*args, **kwargs)
        if consumer is not None:
            consumer.ended()


# False once a reader could not be attached (an aiohttp whose StreamReader no longer has
# _Attached's layout): every stream then reads as aiohttp made it.
_usable = True


def attachable(reader: object) -> bool:
    """Whether `reader` is aiohttp's own StreamReader, detached, not at its end and not
    failed."""
    return (
        _usable
        and type(reader) is StreamReader
        and reader.exception() is None
        and not reader.is_eof()
    )


def attach(reader: StreamReader, consumer: Consumer) -> bool:
    """From now on the reader's body goes to `consumer` (True), if it can: `attachable`,
    and its buffer emptied first (`read_nowait()`), or what it holds would come after what
    follows."""
    global _usable
    _CONSUMERS[id(reader)] = consumer
    try:
        reader.__class__ = _Attached
    except TypeError as exc:  # the layouts differ: this aiohttp's reader changed
        del _CONSUMERS[id(reader)]
        _usable = False
        log.warning("upstream reads go through aiohttp's buffer from now on: %s", exc)
        return False
    return True


def detach(reader: StreamReader) -> Consumer | None:
    """The reader buffers again; the consumer it had, if any."""
    consumer = _CONSUMERS.pop(id(reader), None)
    if consumer is not None:
        reader.__class__ = StreamReader
    return consumer


class IdleWatch:
    """An upstream's silence watched by one timer every half of `seconds`, not re-armed
    at every read: `silent` is called once nothing was read for `seconds` (up to half as
    long again)."""

    __slots__ = ("_clock", "_handle", "_last", "_loop", "_seconds", "_silent")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, seconds: float, silent: Callable[[], None]
    ) -> None:
        self._loop = loop
        self._clock = loop.time
        self._seconds = seconds
        self._silent = silent
        self._last = loop.time()
        self._handle: asyncio.TimerHandle | None = loop.call_later(seconds / 2, self._check)

    def read(self) -> None:
        """Something was read just now."""
        self._last = self._clock()

    def _check(self) -> None:
        if self._clock() - self._last >= self._seconds:
            self._handle = None
            self._silent()
            return
        self._handle = self._loop.call_later(self._seconds / 2, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
