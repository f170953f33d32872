"""POST /v1/responses: a turn answered as server-sent events, or as one JSON response; and
any other stream of events the bridge serves (a background response followed, a stored one
read as a stream).

Streams are aiohttp-sse's EventSourceResponse (its headers, its pings in the silences, a
clean end); events are written as the bridge encodes them (bridge.sse), a whole upstream
read's worth per write. Once a stream is prepared nothing raises out of the handler: an
error becomes response.failed inside it, never a second HTTP response written into the
body, and the body always ends cleanly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.http_writer import StreamWriter
from aiohttp_sse import EventSourceResponse

from bridge.access import CLIENT_CLOSED
from bridge.app_keys import BACKGROUND, BODIES, COLLECTOR, CONFIG, METRICS, REQUEST_LOG, TURNS
from bridge.bodies import Share, read_body
from bridge.emitter import WRITE_BUFFER_HIGH, ClientGone, DirectSink, StallWatch, discard
from bridge.handlers import json_response
from bridge.letting_go import let_go
from bridge.request_parsing import LARGE_REQUEST, parse_request_off_loop
from bridge.sse import DONE, encode_frames
from bridge.turn import SHUTTING_DOWN, Turn
from bridge.turn_context import turn_context
from bridge.wire.events import ResponseEvent

log = logging.getLogger(__name__)


async def create_response(request: web.Request) -> web.StreamResponse:
    """POST /v1/responses: translate, relay, and stream (or return) the response."""
    app = request.app
    if app[TURNS].draining:
        raise SHUTTING_DOWN
    # The body's share of the process's budget is held until the response has ended.
    with app[BODIES].share() as share:
        return await _create(request, share)


async def _create(request: web.Request, share: Share) -> web.StreamResponse:
    config = request.app[CONFIG]
    body = await read_body(
        request,
        share,
        seconds=config.server.body_timeout,
        limit=config.server.max_request_bytes,
    )
    with request.app[COLLECTOR].during(len(body)):
        return await _answer(request, body)


async def _answer(request: web.Request, body: bytes) -> web.StreamResponse:
    app = request.app
    req, items = await parse_request_off_loop(body)
    entry = request[REQUEST_LOG]
    context = turn_context(
        request,
        label=entry.request_id,
        transport="background" if req.background else "http",
    )
    turn = await Turn.plan(context, req, items, raw=body, large=len(body) >= LARGE_REQUEST)
    entry.model, entry.provider = req.model, turn.model.provider
    entry.response_id = turn.response.id
    if req.background:
        run = await app[BACKGROUND].start(turn)
        app[METRICS].background_started.inc()
        entry.outcome = "background"
        if not req.stream:
            return json_response(run.response)
        return await stream_frames(request, run.follow(-1))
    if not req.stream:
        response: web.StreamResponse = await _respond_whole(request, turn)
    else:
        response = await _respond_stream(request, turn)
    # The turn is over and recorded: what a very large input left is freed in steps.
    plan = turn.planned.plan
    await let_go(
        items,
        req.input if isinstance(req.input, list) else [],
        plan.messages,
        plan.body.get("tools") or [],
        plan.tool_map,
    )
    return response


def _note_end(request: web.Request, turn: Turn) -> None:
    """How the response ended, for the access log (and the body, if asked)."""
    entry = request[REQUEST_LOG]
    response = turn.response
    entry.outcome = response.status
    if response.usage is not None:
        entry.input_tokens = response.usage.input_tokens
        entry.output_tokens = response.usage.output_tokens
    if request.app[CONFIG].server.log_bodies and log.isEnabledFor(logging.DEBUG):
        log.debug("response for %s: %s", entry.request_id, json_response(response).text)


async def _respond_whole(request: web.Request, turn: Turn) -> web.Response:
    error = await turn.run(discard)
    _note_end(request, turn)
    if error is not None:
        raise error
    return json_response(turn.response)


def new_stream(request: web.Request) -> EventSourceResponse:
    """An event stream, not yet prepared: once it is, its headers are sent and
    aiohttp-sse's pings every heartbeat interval (comments, which clients skip) keep
    proxies and followers awake."""
    return EventSourceResponse(
        sep="\n",
        # POST /v1/responses streams too.
        allow_all_methods=True,
        # A client that stops reading is found by the writes (client_stall_timeout).
        send_timeout=None,
        ping_interval=request.app[CONFIG].server.heartbeat_interval,
    )


async def open_stream(request: web.Request) -> EventSourceResponse:
    """An event stream, prepared (new_stream)."""
    response = new_stream(request)
    await response.prepare(request)
    return response


async def close_stream(response: EventSourceResponse) -> None:
    """The end of a stream: the specification's sentinel, the pings stopped, the body
    ended."""
    await response.write(DONE)
    response.stop_streaming()
    await response.wait()
    await response.write_eof()


class SSESink(DirectSink):
    """Writes events as SSE frames, the stream prepared at the first write (the turn's
    request is on its way upstream by then); a client that does not take a write within
    the stall timeout (it stopped reading) has its turn ended.

    Once the stream's head is out, events can also be written at once (`write_now`, from
    the relay's callback: bridge.direct) while the client's connection keeps up: framed
    as aiohttp's writer frames them, and counted in its sizes."""

    __slots__ = ("_chunked", "_request", "_response", "_transport", "_watch", "_writer")

    def __init__(
        self, request: web.Request, response: web.StreamResponse, watch: StallWatch
    ) -> None:
        self._request = request
        self._response = response
        self._watch = watch
        # Set once a write has sent the stream's head.
        self._transport: asyncio.Transport | None = None
        self._writer: StreamWriter | None = None
        self._chunked = False

    async def __call__(self, events: list[ResponseEvent]) -> None:
        response = self._response
        if not response.prepared:
            await response.prepare(self._request)
        await self._watch.write(response.write(encode_frames(events)))
        if self._transport is None:
            self._opened()

    def _opened(self) -> None:
        """After the first write: the stream's head is out, later writes are body only."""
        writer = self._request.writer
        # aiohttp's own writer, uncompressed (a stream is never compressed): its framing
        # is known. Anything else gets only the awaited writes.
        if type(writer) is StreamWriter and not self._response.compression:
            self._writer = writer
            self._chunked = writer.chunked
            self._transport = writer.transport

    def ready(self) -> bool:
        transport = self._transport
        return (
            transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= WRITE_BUFFER_HIGH
        )

    def write_now(self, events: list[ResponseEvent]) -> None:
        transport, writer = self._transport, self._writer
        assert transport is not None and writer is not None
        data = encode_frames(events)
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        size = len(data)
        writer.buffer_size += size
        writer.output_size += size
        transport.write(data)


async def _respond_stream(request: web.Request, turn: Turn) -> web.StreamResponse:
    config = request.app[CONFIG]
    response = new_stream(request)
    watch = StallWatch(config.server.client_stall_timeout)
    try:
        await turn.run(SSESink(request, response, watch))
        _note_end(request, turn)
        await close_stream(response)
    except ClientGone as gone:
        # Leaving the turn closed the upstream request.
        log.info("client of %s %s", turn.response.id, gone.reason)
        _abort(request, response, stalled=gone.record)
    except (ConnectionResetError, RuntimeError):
        log.info("client disconnected at the end of %s", turn.response.id)
        _stop(response)
    except Exception:  # past prepare(): never a second response written into the stream
        log.exception("the stream of %s broke off", turn.response.id)
        _abort(request, response, stalled=True)
    finally:
        watch.stop()
    # Never prepared: the client was gone before the first event. (An EventSourceResponse
    # handed back unprepared would be prepared by aiohttp, its pings started for no one.)
    return response if response.prepared else web.Response(status=CLIENT_CLOSED)


def _stop(response: EventSourceResponse) -> None:
    """The stream's pings stopped, if it got as far as starting them."""
    if response.prepared:
        response.stop_streaming()


def _abort(request: web.Request, response: EventSourceResponse, *, stalled: bool) -> None:
    """Stop the stream's pings; a stalled peer never drains, so its connection is aborted
    rather than closed (a clean close would hang)."""
    _stop(response)
    if stalled and request.transport is not None:
        request.transport.abort()


async def stream_frames(request: web.Request, frames: AsyncIterator[bytes]) -> web.StreamResponse:
    """Encoded events as a stream (a background response's, followed from some event on,
    or a stored response's). The response goes on whatever this client does; one that
    stops reading for the stall timeout is cut off."""
    response = await open_stream(request)
    watch = StallWatch(request.app[CONFIG].server.client_stall_timeout)
    try:
        async for chunk in frames:
            await watch.write(response.write(chunk))
        await close_stream(response)
    except ClientGone as gone:
        # The client went away, or stopped reading; nothing of the response needs it.
        _abort(request, response, stalled=gone.record)
    finally:
        watch.stop()
    return response
