"""POST /v1/responses: a turn answered as server-sent events, or as one JSON response.

A thin transport over the turn engine (bridge.engine): once the SSE response is prepared,
nothing raises out of the handler (an error becomes response.failed inside the stream,
never a second HTTP response written into the body), and the body always ends cleanly.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bridge.app_keys import (
    BACKGROUND,
    BODIES,
    CLIENT,
    COLLECTOR,
    CONFIG,
    REQUEST_LOG,
    STORE,
    TURNS,
    UPSTREAMS,
)
from bridge.background_http import DONE, SSE_HEADERS, stream_frames
from bridge.bodies import Share, read_body
from bridge.debug_turns import begin_trace
from bridge.engine import SHUTTING_DOWN, ClientGone, EventSink, run_turn
from bridge.handlers import json_response
from bridge.letting_go import let_go
from bridge.metrics import METRICS, observe_turn
from bridge.relay import encode_frames
from bridge.turn_setup import DECODE_IN_THREAD, PreparedTurn, parse_request_off_loop, setup_turn
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
    app = request.app
    config = app[CONFIG]
    body = await read_body(
        request,
        share,
        seconds=config.server.body_timeout,
        limit=config.server.max_request_bytes,
    )
    with app[COLLECTOR].during(len(body)):
        return await _answer(request, body)


async def _answer(request: web.Request, body: bytes) -> web.StreamResponse:
    app = request.app
    config = app[CONFIG]
    req, items = await parse_request_off_loop(body)
    entry = request[REQUEST_LOG]
    prepared = await setup_turn(
        req,
        items,
        large=len(body) >= DECODE_IN_THREAD,
        config=config,
        store=app[STORE],
        upstreams=app[UPSTREAMS],
        client=request[CLIENT],
        headers=request.headers,
        log_label=entry.request_id,
    )
    entry.model, entry.provider = req.model, prepared.model.provider
    entry.response_id = prepared.turn.translator.response.id
    begin_trace(request, prepared, "http", body)
    observe_turn(request, prepared, "background" if req.background else "http")
    if req.background:
        run = await app[BACKGROUND].start(prepared, request[CLIENT])
        app[METRICS].background_started.inc()
        entry.outcome = "background"
        if not req.stream:
            return json_response(run.response)
        return await stream_frames(request, run.follow(-1, app[BACKGROUND].keep_alive))
    if not req.stream:
        response: web.StreamResponse = await _respond_whole(request, prepared)
    else:
        response = await _respond_stream(request, prepared)
    # The turn is over and recorded: what a very large input left is freed in steps.
    plan = prepared.planned.plan
    await let_go(
        items,
        req.input if isinstance(req.input, list) else [],
        plan.messages,
        plan.body.get("tools") or [],
        plan.tool_map,
    )
    return response


def _note_end(request: web.Request, prepared: PreparedTurn) -> None:
    """How the response ended, for the access log (and the body, if asked)."""
    entry = request[REQUEST_LOG]
    response = prepared.turn.translator.response
    entry.outcome = response.status
    if response.usage is not None:
        entry.input_tokens = response.usage.input_tokens
        entry.output_tokens = response.usage.output_tokens
    if request.app[CONFIG].server.log_bodies and log.isEnabledFor(logging.DEBUG):
        log.debug("response for %s: %s", entry.request_id, json_response(response).text)


async def _discard(events: list[ResponseEvent]) -> None:
    """The sink of a non-streaming request: only the final response object matters."""


async def _respond_whole(request: web.Request, prepared: PreparedTurn) -> web.Response:
    error = await run_turn(prepared.turn, _discard, request.app[TURNS])
    _note_end(request, prepared)
    if error is not None:
        raise error
    return json_response(prepared.turn.translator.response)


def sse_sink(request: web.Request, response: web.StreamResponse, stall_seconds: float) -> EventSink:
    """Writes events as SSE frames; a client that does not take a write within
    `stall_seconds` (it stopped reading) has its connection aborted."""

    async def write(events: list[ResponseEvent]) -> None:
        try:
            async with asyncio.timeout(stall_seconds):
                await response.write(encode_frames(events))
        except TimeoutError:
            # The transport is aborted once the turn is recorded (see _respond_stream).
            raise ClientGone(
                f"stopped reading (a write waited {stall_seconds:g}s)", record=True
            ) from None
        except (ConnectionResetError, RuntimeError) as exc:
            # RuntimeError: aiohttp refuses writes once the transport is closed.
            raise ClientGone(f"went away ({exc})") from None

    return write


async def _respond_stream(request: web.Request, prepared: PreparedTurn) -> web.StreamResponse:
    config = request.app[CONFIG]
    response = web.StreamResponse(headers=SSE_HEADERS)
    response.enable_chunked_encoding()
    await response.prepare(request)
    translator = prepared.turn.translator
    try:
        await run_turn(
            prepared.turn,
            sse_sink(request, response, config.server.client_stall_timeout),
            request.app[TURNS],
        )
        _note_end(request, prepared)
        # The sentinel the Open Responses specification ends a stream with (OpenAI's own
        # streams end with it too; every SDK and Codex skip it).
        await response.write(DONE)
        await response.write_eof()
    except ClientGone as gone:
        # Leaving the turn closed the upstream request.
        log.info("client of %s %s", translator.response.id, gone.reason)
        if gone.record and request.transport is not None:
            request.transport.abort()  # a stalled peer never drains: a clean close would hang
    except (ConnectionResetError, RuntimeError):
        log.info("client disconnected at the end of %s", translator.response.id)
    except Exception:  # past prepare(): never a second response written into the stream
        log.exception("the stream of %s broke off", translator.response.id)
        if request.transport is not None:
            request.transport.abort()
    return response
