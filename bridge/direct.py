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


# Whether readers can be attached: None until the first attach checks it (_works), False
# once that check or an attach failed (an aiohttp whose parser or StreamReader no longer do
# what this module relies on): every stream then reads as aiohttp made it.
_usable: bool | None = None


def attachable(reader: object) -> bool:
    """Whether `reader` is aiohttp's own StreamReader, detached, not at its end and not
    failed."""
    return (
        _usable is not False
        and type(reader) is StreamReader
        and reader.exception() is None
        and not reader.is_eof()
    )


def attach(reader: StreamReader, consumer: Consumer) -> bool:
    """From now on the reader's body goes to `consumer` (True), if it can: `attachable`,
    and its buffer emptied first (`read_nowait()`), or what it holds would come after what
    follows."""
    global _usable
    if _usable is None:
        _usable = _works()
        if not _usable:
            return False
    _CONSUMERS[id(reader)] = consumer
    try:
        reader.__class__ = _Attached
    except TypeError as exc:  # the layouts differ: this aiohttp's reader changed
        del _CONSUMERS[id(reader)]
        _usable = False
        log.warning("upstream reads go through aiohttp's buffer from now on: %s", exc)
        return False
    return True


class _Probe:
    """The consumer of _works' one response."""

    def __init__(self) -> None:
        self.body = b""
        self.over = False

    def data(self, data: bytes) -> None:
        self.body += data

    def ended(self) -> None:
        self.over = True


class _Quiet:
    """The protocol a StreamReader asks to pause and resume reading: here, nothing."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def _works() -> bool:
    """Whether aiohttp's response parser (the one its client uses) gives an attached
    reader its body and its end as this module expects: one chunked response parsed, once
    a process. Anything else (another aiohttp) is said in the log, and nothing attached."""
    from aiohttp.http import HttpResponseParser  # the one aiohttp's client parses with

    probe = _Probe()
    try:
        quiet: Any = _Quiet()  # all a StreamReader asks of aiohttp's protocol
        parser = HttpResponseParser(quiet, asyncio.get_running_loop(), 2**16)
        messages, _, _ = parser.feed_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        reader = messages[0][1]
        if type(reader) is not StreamReader:
            raise TypeError(f"the body is read by {type(reader).__name__}")
        _CONSUMERS[id(reader)] = probe
        try:
            reader.__class__ = _Attached
            parser.feed_data(b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")
        finally:
            detach(reader)
        if probe.body != b"onetwo" or not probe.over:
            raise ValueError(f"the body came as {probe.body!r}, its end {probe.over}")
    except Exception as exc:
        log.warning(
            "upstream reads go through aiohttp's buffer: this aiohttp does not hand "
            "a body to its reader as the bridge expects (%s)",
            exc,
        )
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
