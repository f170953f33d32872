"""A turn's events on their way to the client: numbered and written in order, one lock,
heartbeats in the silences, nothing after the final event."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.translate.stream import StreamTranslator
from bridge.turn_trace import TurnTrace
from bridge.wire.events import ResponseEvent

# Writes events to the client; raises ClientGone when the client cannot take them.
EventSink = Callable[[list[ResponseEvent]], Awaitable[None]]


# A client's connection with more than this waiting in its send buffer takes no more
# events at once (DirectSink.ready): they go through the awaited write, which waits for it
# to drain and is watched for a stall. uvloop's and asyncio's transports pause their writer
# at 64 KiB too.
WRITE_BUFFER_HIGH = 64 * 1024


class DirectSink(abc.ABC):
    """A sink that can also take events at once, from a callback (bridge.direct): when
    `ready` (the client is there and its connection's buffer is not full), `write_now`
    puts the events on the connection without waiting. A base class, not a Protocol: the
    emitter asks every turn's sink whether it is one, and a runtime Protocol's isinstance
    walks its attributes each time (3 % of a `stream: false` request's CPU)."""

    @abc.abstractmethod
    async def __call__(self, events: list[ResponseEvent]) -> None: ...

    @abc.abstractmethod
    def ready(self) -> bool: ...

    @abc.abstractmethod
    def write_now(self, events: list[ResponseEvent]) -> None: ...


class StallWatch:
    """One watchdog per stream for a client that stopped reading: a write still waiting (its
    bytes not taken) after `seconds` is interrupted, and ends with ClientGone, the turn then
    recorded as failed and the connection aborted by the transport. One timer a stream,
    every `seconds / 2`, instead of a timeout armed around every write (about 13 us each,
    measured under 64 streams); the interruption is what asyncio.timeout does (a cancel the
    write's task takes back)."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        # The write waiting now: when it began, and the task awaiting it.
        self._since: float | None = None
        self._writer: asyncio.Task[Any] | None = None
        self.stalled = False
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(seconds / 2, self._check)

    def _check(self) -> None:
        since, writer = self._since, self._writer
        if since is not None and writer is not None and self._loop.time() - since >= self._seconds:
            self.stalled = True
            self._timer = None
            writer.cancel()
            return
        self._timer = self._loop.call_later(self._seconds / 2, self._check)

    async def write(self, write: Awaitable[None]) -> None:
        """Await one write to the client; ClientGone when it cannot take it."""
        self._since = self._loop.time()
        self._writer = task = asyncio.current_task(self._loop)
        try:
            await write
        except asyncio.CancelledError:
            if not self.stalled or task is None or task.uncancel() > 0:
                raise  # not (only) the watchdog's: the client left, or the bridge stops
            raise ClientGone(
                f"stopped reading (a write waited {self._seconds:g}s)", record=True
            ) from None
        except (ConnectionResetError, RuntimeError) as exc:
            # RuntimeError: aiohttp refuses writes once the transport is closed.
            raise ClientGone(f"went away ({exc})") from None
        finally:
            self._since = self._writer = None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def discard(events: list[ResponseEvent]) -> None:
    """The sink of a turn answered as one JSON object (or of one nobody reads): only the
    final response matters."""


class ClientGone(Exception):
    """The client went away or stopped reading; nothing more can be sent to it."""

    def __init__(self, reason: str, *, record: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # A client that stopped reading (its connection is still open) leaves a turn that
        # is recorded as failed; one that disconnected leaves none.
        self.record = record


class Emitter:
    """Numbers and writes a turn's events in order, and fills silences with heartbeats."""

    def __init__(
        self,
        sink: EventSink,
        translator: StreamTranslator,
        interval: float | None,
        trace: TurnTrace | None = None,
    ) -> None:
        self._sink = sink
        # The sink's own way to take events at once, if it has one.
        self._direct = sink if isinstance(sink, DirectSink) else None
        self._trace = trace
        self._translator = translator
        self._interval = interval
        self._lock = asyncio.Lock()
        self._last_write = time.monotonic()
        self._beats: asyncio.Task[None] | None = None
        self.ended = False

    async def send(self, produce: Callable[[], list[ResponseEvent]]) -> None:
        """Run `produce` (which numbers events) and write what it made, under the lock."""
        async with self._lock:
            if self.ended:
                return
            events = produce()
            if events:
                await self._write(events)

    @property
    def direct(self) -> bool:
        """Whether events can ever be written at once (`ready`, `write_now`)."""
        return self._direct is not None

    def ready(self) -> bool:
        """Whether events made now can be written now: nothing else is writing (the lock
        is free), the turn has not ended, and the sink can take them without waiting."""
        direct = self._direct
        return direct is not None and not self._lock.locked() and not self.ended and direct.ready()

    def write_now(self, events: list[ResponseEvent]) -> None:
        """Write events numbered just now, at once; only right after `ready` said so, with
        nothing awaited in between (so they still leave in the order they were numbered)."""
        if not events:
            return
        assert self._direct is not None
        self._last_write = time.monotonic()
        if self._trace is not None:
            self._trace.sent(events)
        self._direct.write_now(events)

    async def end(self, produce: Callable[[], list[ResponseEvent]]) -> None:
        """The terminal event: written last, and nothing after it."""
        async with self._lock:
            if self.ended:
                return
            self.ended = True
            self._stop_beats()
            await self._write(produce())

    async def _write(self, events: list[ResponseEvent]) -> None:
        self._last_write = time.monotonic()
        if self._trace is not None:
            self._trace.sent(events)
        await self._sink(events)

    def start_beats(self) -> None:
        """Heartbeats from now on (when the turn has an interval)."""
        if self._interval is not None:
            self._beats = asyncio.create_task(self._beat(self._interval))

    def _stop_beats(self) -> None:
        if self._beats is not None and self._beats is not asyncio.current_task():
            self._beats.cancel()

    async def close(self) -> None:
        self._stop_beats()
        if self._beats is not None:
            with contextlib.suppress(asyncio.CancelledError, ClientGone):
                await self._beats

    async def _beat(self, interval: float) -> None:
        # Thinking models may be silent for minutes; clients time out on missing events.
        while not self.ended:
            await asyncio.sleep(max(0.0, self._last_write + interval - time.monotonic()))
            if time.monotonic() - self._last_write >= interval:
                await self.send(lambda: [self._translator.heartbeat()])
