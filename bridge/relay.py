"""One upstream attempt: the stream read, parsed and translated, its events emitted.

The attempt never raises for trouble on the upstream's side: it returns the error it ended
with (a connection that broke, a malformed chunk, an error inside the stream), or None when
the stream ended as it should. Ending the turn (the store's write and the final event) is
the turn engine's (bridge.engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import aiohttp
import msgspec
from aiohttp import StreamReader
from aiohttp.client_proto import ResponseHandler

from bridge.body import UpstreamBody
from bridge.demo import DemoUpstream
from bridge.direct import IdleWatch, attach, attachable, detach
from bridge.errors import UPSTREAM_REFUSED, ApiError, redact
from bridge.relay_steps import (
    STEP_EVENTS,
    AnswerBudget,
    Send,
    Steps,
    forward,
    malformed,
    translate,
)
from bridge.sse import SSEEvent, SSEParser, SSEProtocolError
from bridge.translate.stream import StreamTranslator
from bridge.upstream import Sent, UpstreamClient, connection_error, read_bounded
from bridge.wire.chat import COMPLETION_DECODER
from bridge.wire.events import ResponseEvent

log = logging.getLogger(__name__)

# Sees the upstream's bytes as they arrive.
Tap = Callable[[bytes], None]

DRAIN_SECONDS = 1.0


# A web page where the stream should be: a captive portal, a proxy's login page, or a
# base_url that names a web site rather than the API.
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def not_an_event_stream(content_type: str, url: str) -> ApiError:
    return ApiError.server(
        f"the provider at {url} answered HTTP 200 with a web page ({content_type}) instead of "
        "an event stream: a captive portal, a proxy asking to log in, or a base_url that "
        "names a web site rather than the API (it should end before /chat/completions)",
        code=UPSTREAM_REFUSED,
    )


def send_early(
    upstream: UpstreamClient, body: UpstreamBody, authorization: str | None, *, whole: bool
) -> Sent | None:
    """The request started now, for `pump(sent=...)` to take up; None for the demo model,
    which has no provider to start."""
    if isinstance(upstream, DemoUpstream):
        return None
    return upstream.send(body, authorization, whole=whole)


async def pump(
    upstream: UpstreamClient,
    body: UpstreamBody,
    translator: StreamTranslator,
    send: Send,
    authorization: str | None = None,
    tap: Tap | None = None,
    *,
    whole: bool = False,
    sent: Sent | None = None,
    direct: DirectSend | None = None,
) -> ApiError | None:
    """One upstream request through the translator, streamed or (`whole`: the body asks
    for one JSON answer) not; the error it ended with (its message safe to show: no key in
    it). `tap` sees the upstream's bytes as they arrive (turn tracing). `sent`: this
    request, already started by `send_early`. `direct`: events can also be written at
    once, from the callback that reads the stream."""
    try:
        if isinstance(upstream, DemoUpstream):
            async with contextlib.aclosing(upstream.answer(body)) as answer:
                return await _relay(answer, upstream, translator, send, tap)
        async with upstream.stream(body, authorization, whole=whole, sent=sent) as response:
            if response.content_type == "application/json":
                error = await _whole_answer(response, upstream, translator, send, tap, whole)
            elif response.content_type in HTML_TYPES:
                error = not_an_event_stream(response.content_type, upstream.display_url)
            else:
                connection = response.connection
                protocol = connection.protocol if connection is not None else None
                error = await _relay(
                    response.content, upstream, translator, send, tap, direct, protocol
                )
                if error is None and not response.content.at_eof():
                    await _drain(response)
    except ApiError as exc:
        return exc  # an HTTP error: its message is made safe where it is read
    if error is None:
        return None
    # An error inside an HTTP 200 stream or answer is the provider's text too: a provider
    # that echoes the key it was given ("bad key Bearer sk-...") must not pass it on.
    forwarded = [authorization.partition(" ")[2]] if authorization else []
    return dataclasses.replace(error, message=upstream.redact(redact(error.message, forwarded)))


class DirectSend(Protocol):
    """Events written at once, from a callback (the turn's Emitter): `ready` when nothing
    else is writing and the client can take them without a wait; `write_now` writes events
    numbered just before, with nothing awaited in between."""

    def ready(self) -> bool: ...

    def write_now(self, events: list[ResponseEvent]) -> None: ...


async def _relay(
    source: StreamReader | AsyncIterator[bytes],
    upstream: UpstreamClient,
    translator: StreamTranslator,
    send: Send,
    tap: Tap | None = None,
    direct: DirectSend | None = None,
    protocol: ResponseHandler | None = None,
) -> ApiError | None:
    """An upstream's SSE bytes, as they arrive, through the translator: an aiohttp
    response's body (written to the client from the read's callback whenever `direct`
    can; `protocol`: its connection's), or any stream of bytes."""
    relay = _Relay(upstream, translator, send, tap)
    try:
        if isinstance(source, StreamReader):
            await relay.read(source, direct, protocol)
        else:
            async for data in source:
                if await relay.forward(data):
                    break
    except TimeoutError:
        return ApiError.server(
            f"upstream sent nothing for {upstream.idle_timeout:g} seconds", status=504
        )
    except SSEProtocolError as exc:
        return malformed(str(exc))
    except aiohttp.ClientError as exc:
        return connection_error(exc, upstream.display_url)
    return await relay.outcome()


class _Relay:
    """One upstream stream's way through the translator.

    Read by the turn's task (`forward` each read, its events sent through the emitter's
    lock) or, while the client keeps up and nothing else is writing, in the callback that
    reads it (bridge.direct): each read parsed, translated and written to the client at
    once, with no task woken and nothing awaited. The callback hands back to the task
    whatever it cannot do at once: events past a step's worth or that the client cannot
    take now (`rest`), the stream's end, its failure.
    """

    __slots__ = (
        "_direct",
        "_failure",
        "_reader",
        "_waiter",
        "_watch",
        "budget",
        "done",
        "error",
        "parser",
        "rest",
        "send",
        "steps",
        "tap",
        "translator",
    )

    def __init__(
        self,
        upstream: UpstreamClient,
        translator: StreamTranslator,
        send: Send,
        tap: Tap | None,
    ) -> None:
        self.parser = SSEParser(max_event_bytes=upstream.max_event_bytes)
        self.budget = AnswerBudget(upstream.max_answer_bytes)
        self.steps = Steps()
        self.translator = translator
        self.send = send
        self.tap = tap
        # Whether [DONE] came; the error the stream ended with.
        self.done = False
        self.error: ApiError | None = None
        # Events the callback parsed and left for the task.
        self.rest: list[SSEEvent] = []
        self._direct: DirectSend | None = None
        self._reader: StreamReader | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._watch: IdleWatch | None = None
        self._failure: BaseException | None = None

    async def forward(self, data: bytes) -> bool:
        """One read through the translator, its events sent; whether the stream is over."""
        if self.tap is not None:
            self.tap(data)
        return await self._forward_events(self.parser.feed(data))

    async def _forward_events(self, events: list[SSEEvent]) -> bool:
        self.done, self.error = await forward(
            events, self.translator, self.send, self.budget, self.steps
        )
        return self.done or self.error is not None

    async def read(
        self, reader: StreamReader, direct: DirectSend | None, protocol: ResponseHandler | None
    ) -> None:
        """The body to its end ([DONE], an error, or the end of the body)."""
        while True:
            if direct is not None and direct.ready() and attachable(reader):
                # What came before is sent first.
                data = reader.read_nowait()
                if not data:
                    if await self._attached(reader, direct, protocol):
                        return
                    continue
            else:
                data = await reader.readany()
                if not data:
                    return
            if await self.forward(data):
                return

    async def _attached(
        self, reader: StreamReader, direct: DirectSend, protocol: ResponseHandler | None
    ) -> bool:
        """Reads taken in their callback until it hands back; whether the stream is over.

        Meanwhile the upstream's silence is watched here (IdleWatch) rather than by
        aiohttp, which re-arms a timer at every read."""
        if not attach(reader, self):
            return False
        self._direct, self._reader = direct, reader
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        idle = protocol.read_timeout if protocol is not None else None
        watch = None
        if protocol is not None and idle:
            watch = self._watch = IdleWatch(loop, idle, self._silent)
            protocol.read_timeout = None
        try:
            await waiter
        finally:
            detach(reader)
            self._waiter = self._reader = self._direct = self._watch = None
            if watch is not None and protocol is not None:
                watch.stop()
                protocol.read_timeout = idle
                # aiohttp's watch again, while the body goes on (at its end aiohttp has
                # stopped it: a timer left on a pooled connection would fail its next use).
                if not reader.is_eof() and reader.exception() is None:
                    protocol.start_timeout()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self.done or self.error is not None:
            return True
        rest, self.rest = self.rest, []
        return bool(rest) and await self._forward_events(rest)

    def data(self, data: bytes) -> None:
        """A read, in its callback (bridge.direct.Consumer)."""
        try:
            if self._watch is not None:
                self._watch.read()
            if self.tap is not None:
                self.tap(data)
            self._take(self.parser.feed(data))
        except Exception as exc:  # the task's to handle, as if it had read this itself
            self._failure = exc
            self._hand_back()

    def ended(self) -> None:
        """The body ended or failed: the task reads which from the reader."""
        self._hand_back()

    def _silent(self) -> None:
        """The upstream sent nothing for its idle timeout (IdleWatch)."""
        self._failure = TimeoutError("upstream idle")
        self._hand_back()

    def _take(self, events: list[SSEEvent]) -> None:
        """Translate and write a read's events, at most a step's worth; the rest, and the
        stream's end, to the task."""
        direct = self._direct
        assert direct is not None
        start, count, room = 0, len(events), STEP_EVENTS
        while start < count:
            if room <= 0 or not direct.ready():
                self.rest = events[start:]
                self._hand_back()
                return
            produced, done, error, stop = translate(
                events, self.translator, start, min(count, start + room), self.budget
            )
            direct.write_now(produced)
            room -= stop - start
            start = stop
            if done or error is not None:
                self.done, self.error = done, error
                self._hand_back()
                return

    def _hand_back(self) -> None:
        """Reads buffer again from here on; the task goes on."""
        if self._reader is not None:
            detach(self._reader)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def outcome(self) -> ApiError | None:
        """The error the stream ended with, once it has."""
        if self.error is not None or self.done:
            return self.error
        # A last event without its blank line, then a stream with no [DONE]: fine when a
        # finish_reason came (a known provider quirk); failed otherwise.
        done, error = await forward(self.parser.finish(), self.translator, self.send, self.budget)
        if error is not None:
            return error
        if not done and not self.translator.quirks.missing_done:
            return malformed("the stream ended without data: [DONE]")
        return None


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows [DONE] (the chunked terminator) so the connection is reused.

    A server that keeps the body open after [DONE] gets a moment, then its connection is
    closed instead of pooled (see UpstreamClient.stream).
    """
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await response.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        return


async def _whole_answer(
    response: aiohttp.ClientResponse,
    upstream: UpstreamClient,
    translator: StreamTranslator,
    send: Send,
    tap: Tap | None = None,
    whole: bool = False,
) -> ApiError | None:
    """One JSON answer, asked for (`whole`) or from a server that ignored `stream: true`:
    translated whole."""
    try:
        data = await read_bounded(response, upstream.max_answer_bytes)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return upstream.request_error(exc, whole=whole)
    if tap is not None and data is not None:
        tap(data)
    if data is None:
        return ApiError.server(
            f"upstream answer larger than {upstream.max_answer_bytes} bytes "
            "([upstream] max_answer_bytes)"
        )
    try:
        completion = COMPLETION_DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return malformed(str(exc))
    failure: list[ApiError] = []

    def produce() -> list[ResponseEvent]:
        try:
            translator.add(completion.as_chunk())
        except ApiError as exc:
            failure.append(exc)
        return translator.take()

    await send(produce)
    return failure[0] if failure else None
