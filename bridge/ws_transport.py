"""GET /v1/responses as a WebSocket: the Responses API's WebSocket mode (Codex's
`supports_websockets`).

A thin transport over the turn (bridge.turn), like bridge.sse_transport: each
`response.create` text message runs one turn and each of its events goes
back as one text message, the same JSON as an SSE `data:` payload. One turn at a time per
socket. A turn whose previous_response_id names a response completed on this socket is
continued from what the socket kept of the conversation (bridge.socket_state), so only its
new items are translated; any other previous_response_id is looked up in the store, as
over HTTP, and one found nowhere is answered `previous_response_not_found`, which Codex
takes as "send everything again". Errors before a turn starts are `error` events with the
HTTP status the same error would have over HTTP; errors after it started end it with
response.failed, as over SSE.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time

import msgspec
import orjson
from aiohttp import WSMsgType, web

from bridge.access_log import ACCESS_LOG
from bridge.app_keys import BODIES, CLIENT, COLLECTOR, CONFIG, REQUEST_LOG, TURNS
from bridge.bodies import Share
from bridge.conversation import Prefix
from bridge.emitter import WRITE_BUFFER_HIGH, ClientGone, DirectSink, StallWatch
from bridge.errors import ApiError
from bridge.lone_surrogates import replace_lone_surrogates
from bridge.open_sockets import SOCKETS
from bridge.request_log import RequestLog
from bridge.request_parsing import LARGE_REQUEST, parse_request_off_loop
from bridge.socket_state import SocketConversations, conversation_after
from bridge.turn import SHUTTING_DOWN, Turn
from bridge.turn_context import turn_context
from bridge.wire.events import (
    ResponseCompleted,
    ResponseEvent,
    ResponseFailed,
    ResponseIncomplete,
)

log = logging.getLogger(__name__)

FINAL_EVENTS = (ResponseCompleted, ResponseFailed, ResponseIncomplete)
# Conversations with more messages than this are kept (translated, encoded) in a thread.
KEEP_IN_THREAD = 2000
_ENCODER = msgspec.json.Encoder()
# A WebSocket frame's first two bytes, then its length in 2 or 8 more (network order).
_LENGTH_1 = struct.Struct("!BB").pack
_LENGTH_2 = struct.Struct("!BBH").pack
_LENGTH_8 = struct.Struct("!BBQ").pack


class _Envelope(msgspec.Struct):
    """What every client message is read for first; the rest is the request body."""

    type: str
    generate: bool | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)


def _read_envelope(data: bytes) -> tuple[_Envelope, bytes]:
    """The message's envelope, and the message with any lone surrogate escape (half an
    emoji from a JavaScript client, bridge.lone_surrogates) replaced."""
    try:
        return _ENVELOPE.decode(data), data
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError:
        repaired = replace_lone_surrogates(data)
        if repaired is None:
            raise
        return _ENVELOPE.decode(repaired), repaired


def error_event(error: ApiError) -> bytes:
    """An error before a turn started, as Codex reads it: the error object nested under
    `error`, with the HTTP status the same error has over HTTP."""
    return orjson.dumps({"type": "error", "status": error.status, **error.body()})


async def responses_socket(request: web.Request) -> web.StreamResponse:
    """GET /v1/responses with an Upgrade: websocket."""
    app = request.app
    settings = app[CONFIG].websocket
    ws = web.WebSocketResponse(
        max_msg_size=settings.max_message_bytes,
        heartbeat=settings.ping_interval,
        # Loopback needs no compression; it would cost CPU on every event.
        compress=False,
        # Text messages arrive as the bytes they were sent as (msgspec checks the UTF-8).
        decode_text=False,
    )
    if not ws.can_prepare(request).ok:
        raise ApiError(
            405,
            "GET /v1/responses opens a WebSocket (send Upgrade: websocket); a single "
            "response is created with POST /v1/responses",
            code="method_not_allowed",
        )
    # 426 is what Codex takes as "no WebSocket here": it goes on over HTTP at once (other
    # statuses make it try the upgrade again, six times over about 7 s, first).
    if not settings.enabled:
        raise ApiError(
            426,
            "The WebSocket mode is off in this bridge ([websocket] enabled = false); send "
            "each response with POST /v1/responses",
            code="websocket_disabled",
        )
    if app[TURNS].draining:
        raise SHUTTING_DOWN
    # A web page's Origin was checked with every request's (bridge.browsers): browsers
    # apply no same-origin rule to WebSockets.
    sockets = app[SOCKETS]
    client = request[CLIENT]
    if sockets.full:
        log.warning("refused a WebSocket: %d are open ([websocket] max_connections)", len(sockets))
        raise ApiError(
            426,
            f"The bridge has {sockets.limit} WebSocket connections open, its limit "
            "([websocket] max_connections); use POST /v1/responses, or close another",
            type="server_error",
            code="websocket_connection_limit_reached",
        )
    if sockets.held_by(client) >= sockets.share:
        raise ApiError(
            426,
            f"This client key has {sockets.share} WebSocket connections open, its share of "
            f"the bridge's {sockets.limit} ([websocket] max_connections, shared by its client "
            "keys); use POST /v1/responses, or close another",
            type="server_error",
            code="websocket_connection_limit_reached",
        )
    await ws.prepare(request)
    entry = request[REQUEST_LOG]
    entry.upgraded = True
    sockets.add(ws, client)
    try:
        await _Socket(request, ws).serve()
    finally:
        sockets.discard(ws)
        entry.outcome = "closed"
    return ws


def text_frame(payload: bytes) -> bytes:
    """A server's unmasked, unfragmented WebSocket text message (RFC 6455, 5.2)."""
    size = len(payload)
    if size < 126:
        return _LENGTH_1(0x81, size) + payload
    if size < 65536:
        return _LENGTH_2(0x81, 126, size) + payload
    return _LENGTH_8(0x81, 127, size) + payload


class _SocketSink(DirectSink):
    """A turn's events to the socket: sent in turn with anything else the socket sends,
    or written at once from the relay's callback while the socket keeps up."""

    __slots__ = ("_socket",)

    def __init__(self, socket: _Socket) -> None:
        self._socket = socket

    async def __call__(self, events: list[ResponseEvent]) -> None:
        await self._socket._sink(events)

    def ready(self) -> bool:
        return self._socket.ready()

    def write_now(self, events: list[ResponseEvent]) -> None:
        self._socket.write_now(events)


class _Socket:
    """One client's socket: its messages, its one turn at a time, its conversations."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        self._request = request
        self._ws = ws
        self._config = request.app[CONFIG]
        self._conversations = SocketConversations(self._config.websocket.cache_bytes)
        request.app[SOCKETS].conversations.add(self._conversations)
        self._send_lock = asyncio.Lock()
        # The last turn's task; it may go on briefly after its final event (keeping its
        # conversation), and the next turn waits for that.
        self._turn: asyncio.Task[None] | None = None
        # A response is being answered: from its response.create to its final event.
        self._busy = False
        self._label = request[REQUEST_LOG].request_id
        self._turns = 0
        # A client that stops reading is found by one watchdog for the whole socket.
        self._watch = StallWatch(self._config.server.client_stall_timeout)

    async def serve(self) -> None:
        try:
            async for message in self._ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_text(message.data)
                elif message.type == WSMsgType.BINARY:
                    await self._send_error(
                        ApiError.invalid(
                            "Messages must be text: a JSON response.create event",
                            code="invalid_message",
                        )
                    )
                elif message.type == WSMsgType.ERROR:
                    log.info("WebSocket %s: %s", self._label, self._ws.exception())
                    break
        finally:
            turn = self._turn
            if turn is not None and not turn.done():
                # The client went away mid-turn: ending the turn closes its upstream request.
                turn.cancel()
                await asyncio.gather(turn, return_exceptions=True)
            self._watch.stop()

    async def _on_text(self, data: bytes) -> None:
        if self._busy:
            await self._send_error(
                ApiError.invalid(
                    "A response is already in progress on this socket: send the next "
                    "response.create after its final event, or open another socket",
                    code="response_in_progress",
                )
            )
            return
        try:
            envelope, data = _read_envelope(data)
        except msgspec.ValidationError as exc:
            await self._send_error(ApiError.invalid(f"Invalid message: {exc}", "type"))
            return
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            await self._send_error(
                ApiError.invalid(f"The message is not valid JSON: {exc}", code="invalid_json")
            )
            return
        if envelope.type != "response.create":
            await self._send_error(
                ApiError.invalid(
                    f"Unknown event type {envelope.type!r}: this socket takes response.create",
                    "type",
                    code="unknown_event",
                )
            )
            return
        self._busy = True
        self._turn = asyncio.create_task(
            self._create(data, envelope.generate is not False, self._turn)
        )

    def _kept(self, model: str, previous: str | None) -> Prefix | None:
        """The conversation this socket kept up to `previous`, if it fits `model`."""
        if previous is None:
            return None
        prefix = self._conversations.get(previous)
        config = self._config.models.get(model)
        if prefix is None or config is None:
            return None
        profile = self._config.providers[config.provider].profile
        # Kept messages are shaped for one provider: another model starts over (from the
        # store, or by asking the client for everything).
        return prefix if prefix.shaped_for == (model, profile) else None

    async def _create(
        self, data: bytes, generate: bool, previous: asyncio.Task[None] | None
    ) -> None:
        """One turn, from its message to its final event, then what the socket keeps."""
        try:
            if previous is not None:
                # The turn before has sent its final event; it may still be keeping its
                # conversation, which this turn may continue.
                await asyncio.gather(previous, return_exceptions=True)
            await self._turn_of(data, generate)
        finally:
            self._busy = False

    async def _turn_of(self, data: bytes, generate: bool) -> None:
        request = self._request
        app = request.app
        started = time.perf_counter()
        self._turns += 1
        label = f"{self._label}#{self._turns}"
        # The message's share of the process's body budget, held to the end of its turn.
        with app[BODIES].share() as share, app[COLLECTOR].during(len(data)):
            await self._turn_in_share(data, generate, share, label, started)

    async def _turn_in_share(
        self, data: bytes, generate: bool, share: Share, label: str, started: float
    ) -> None:
        request = self._request
        app = request.app
        previous: str | None = None
        try:
            if app[TURNS].draining:
                raise SHUTTING_DOWN
            share.hold(len(data))
            req, items = await parse_request_off_loop(data)
            previous = req.previous_response_id
            if req.background:
                raise ApiError.invalid(
                    "Background responses are created over HTTP (POST /v1/responses), "
                    "not on a WebSocket",
                    "background",
                )
            prefix = self._kept(req.model, req.previous_response_id)
            context = turn_context(request, label=label, transport="websocket")
            turn = await Turn.plan(
                context,
                req,
                items,
                raw=data,
                prefix=prefix,
                generate=generate,
                keep_messages=True,
                large=len(data) >= LARGE_REQUEST,
            )
        except ApiError as exc:
            self._log(label, started, exc.status, outcome=exc.code or "error")
            self._conversations.evict(previous)
            self._busy = False
            await self._send_error(exc)
            return
        except Exception as exc:  # a bug in setting up: the socket must survive it
            log.exception("setting up a turn on WebSocket %s failed", label)
            self._conversations.evict(previous)
            self._busy = False
            await self._send_error(
                ApiError.server(
                    f"The bridge failed setting up this response ({type(exc).__name__}); "
                    "see its log",
                    status=500,
                )
            )
            return
        try:
            failed = await turn.run(_SocketSink(self))
        except ClientGone as gone:
            log.info("client of %s %s", turn.response.id, gone.reason)
            if gone.record and request.transport is not None:
                request.transport.abort()  # it stopped reading: a clean close would hang
            return
        self._log(label, started, 200, turn, items=len(items), kept=prefix is not None)
        if failed is not None:
            self._conversations.evict(previous)
        await self._keep(turn)

    async def _keep(self, turn: Turn) -> None:
        """Keep the conversation up to this response, for a turn that continues it."""
        profile = self._config.providers[turn.model.provider].profile
        try:
            if turn.messages is not None and len(turn.messages) > KEEP_IN_THREAD:
                kept = await asyncio.to_thread(conversation_after, turn, profile)
            else:
                kept = conversation_after(turn, profile)
        except Exception:  # keeping is an optimisation: the client can always resend
            log.exception("could not keep the conversation of %s", turn.response.id)
            return
        if kept is not None:
            self._conversations.add(kept)

    async def _sink(self, events: list[ResponseEvent]) -> None:
        """Each event as one text message; a client that takes none for
        client_stall_timeout seconds has stopped reading."""
        async with self._send_lock:
            await self._watch.write(self._send_events(events))
            if isinstance(events[-1], FINAL_EVENTS):
                # The client may send its next turn now.
                self._busy = False

    def ready(self) -> bool:
        """Whether events can be written at once (bridge.emitter.DirectSink): nothing else
        is being sent, the socket is not closing and its connection has room."""
        transport = self._request.transport
        return (
            not self._send_lock.locked()
            and not self._ws.closed
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= WRITE_BUFFER_HIGH
        )

    def write_now(self, events: list[ResponseEvent]) -> None:
        """Each event as one text message, framed here (the socket is never compressed),
        in one write; only right after `ready`. Never a turn's final event: that comes
        through `_sink` (Emitter.end), which frees the socket for the next turn."""
        transport = self._request.transport
        assert transport is not None
        transport.write(b"".join([text_frame(_ENCODER.encode(event)) for event in events]))

    async def _send_events(self, events: list[ResponseEvent]) -> None:
        for event in events:
            await self._ws.send_frame(_ENCODER.encode(event), WSMsgType.TEXT)

    async def _send_error(self, error: ApiError) -> None:
        """An error event, sent like events are: a client that takes none for
        client_stall_timeout seconds has stopped reading, and its socket is closed (a client
        flooding bad messages and reading nothing kept its slot for ever)."""
        try:
            async with self._send_lock:
                await self._watch.write(self._ws.send_frame(error_event(error), WSMsgType.TEXT))
        except ClientGone as gone:
            if gone.record:
                log.info("WebSocket %s: the client %s", self._label, gone.reason)
                if self._request.transport is not None:
                    self._request.transport.abort()  # it never drains: a clean close would hang

    def _log(
        self,
        label: str,
        started: float,
        status: int,
        turn: Turn | None = None,
        outcome: str = "-",
        items: int = 0,
        kept: bool = False,
    ) -> None:
        """One access-log line per turn, as for a POST, with how many input items the turn
        brought and where its earlier conversation came from: `kept` on this socket,
        `stored`, or `-` (the turn carried everything)."""
        entry = RequestLog(label, self._request[REQUEST_LOG].client_request_id, outcome=outcome)
        previous = None
        if turn is not None:
            response = turn.response
            entry.model, entry.provider = turn.request.model, turn.model.provider
            entry.response_id, entry.outcome = response.id, response.status
            if response.usage is not None:
                entry.input_tokens = response.usage.input_tokens
                entry.output_tokens = response.usage.output_tokens
            previous = turn.request.previous_response_id
        source = "kept" if kept else ("stored" if previous else "-")
        ACCESS_LOG.line(
            "WS",
            self._request.path,
            status,
            time.perf_counter() - started,
            entry,
            f" items={items} history={source}",
        )
