"""Reading a response back: GET /v1/responses/{id} (as JSON, or as its event stream from
any event on) and POST /v1/responses/{id}/cancel.

A background response still running in this process is read from its run (bridge.background);
anything else from the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
import orjson
from aiohttp import web

from bridge.app_keys import BACKGROUND, CLIENT, CONFIG, STORE
from bridge.errors import ApiError
from bridge.event_log import stored_frames
from bridge.handlers import json_response, response_id_of, response_not_found
from bridge.sse import encode_frames
from bridge.sse_transport import stream_frames
from bridge.translate.replay import replay_events
from bridge.wire.events import ResponseObject

RUNNING = ("queued", "in_progress")
# A response run by another bridge: how often its row is read, how long it is followed.
POLL_SECONDS = 0.25
FOLLOW_ELSEWHERE_SECONDS = 3600.0
REAP_EVERY = 40
CANCEL_WAIT_SECONDS = 10.0

_RESPONSE = msgspec.json.Decoder(ResponseObject)
_TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.failed",
}


def _query_flag(value: str | None, name: str) -> bool:
    if value in (None, "", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise ApiError.invalid(f"Invalid value for '{name}': {value!r} (true or false)", name)


def _starting_after(value: str | None) -> int:
    if value is None:
        return -1
    try:
        number = int(value)
    except ValueError:
        number = -2
    if number < -1:
        raise ApiError.invalid(
            "Invalid value for 'starting_after': a sequence number (0 or more)", "starting_after"
        )
    return number


async def _stored_events(
    response: bytes, frames: bytes | None, after: int, reasoning_events: str
) -> AsyncIterator[bytes]:
    """The events of a stored response after `after`; a response stored without its
    events (not a background one) is told as the events that would have streamed it
    (bridge.translate.replay)."""
    if frames is not None:
        async for chunk in stored_frames(frames, after):
            yield chunk
        return
    try:
        stored = _RESPONSE.decode(response)
    except msgspec.ValidationError:
        # Not a response this release wrote: its one final event.
        status = orjson.loads(response).get("status")
        kind = _TERMINAL.get(status, "response.in_progress")
        if after >= 0:
            return
        data = b'{"type":"%s","sequence_number":0,"response":%s}' % (kind.encode(), response)
        yield b"event: %s\ndata: %s\n\n" % (kind.encode(), data)
        return
    events = replay_events(stored, reasoning_events)[after + 1 :]
    if events:
        yield encode_frames(events)


async def get_response(request: web.Request) -> web.StreamResponse:
    """GET /v1/responses/{id}: a stored response (not those created with store: false), or
    a background one as it is now; `?stream=true&starting_after=N` streams its events
    after N, following a running one to its end."""
    response_id = response_id_of(request)
    client = request[CLIENT]
    stream = _query_flag(request.query.get("stream"), "stream")
    after = _starting_after(request.query.get("starting_after"))
    runs = request.app[BACKGROUND]
    run = runs.get(response_id, client)
    if run is not None:
        if stream:
            return await stream_frames(request, run.follow(after))
        return json_response(run.response)
    store = request.app[STORE]
    if not stream:
        stored = await store.get_response(response_id, client)
        if stored is None:
            raise response_not_found(response_id)
        if _running(stored):
            # Left by a bridge that is gone? Whichever reap decides (this one, or the one
            # a restart runs), what it decided is read back and served.
            await _reap(request)
            stored = await store.get_response(response_id, client) or stored
        return web.Response(body=stored, content_type="application/json")
    found = await store.response_events(response_id, client)
    if found is None:
        raise response_not_found(response_id)
    if _running(found[0]):
        await _reap(request)
        found = await store.response_events(response_id, client) or found
    if _running(found[0]):
        # Another bridge runs it (PostgreSQL): its events are stored when it ends.
        return await stream_frames(request, _after_it_ends(request, response_id, after))
    reasoning_events = request.app[CONFIG].server.reasoning_events
    return await stream_frames(request, _stored_events(*found, after, reasoning_events))


def _running(stored: bytes) -> bool:
    return orjson.loads(stored).get("status") in RUNNING


async def _reap(request: web.Request) -> None:
    """Mark failed the responses stored as running that no bridge runs any more."""
    await request.app[BACKGROUND].reap()


async def _after_it_ends(
    request: web.Request, response_id: str, after: int
) -> AsyncIterator[bytes]:
    """The events of a response another bridge runs, once it has ended (polled)."""
    store = request.app[STORE]
    client = request[CLIENT]
    deadline = time.monotonic() + FOLLOW_ELSEWHERE_SECONDS
    checks = 0
    while time.monotonic() < deadline:
        found = await store.response_events(response_id, client)
        if found is None:
            return
        if not _running(found[0]):
            reasoning_events = request.app[CONFIG].server.reasoning_events
            async for chunk in _stored_events(*found, after, reasoning_events):
                yield chunk
            return
        checks += 1
        if checks % REAP_EVERY == 0:
            await _reap(request)
        await asyncio.sleep(POLL_SECONDS)


async def cancel_response(request: web.Request) -> web.Response:
    """POST /v1/responses/{id}/cancel: a background response running is stopped (its
    upstream request closed) and ends cancelled; one that has ended is returned as it is."""
    response_id = response_id_of(request)
    client = request[CLIENT]
    runs = request.app[BACKGROUND]
    run = await runs.cancel(response_id, client)
    if run is not None:
        return json_response(run.turn.response)
    store = request.app[STORE]
    stored = await store.get_response(response_id, client)
    if stored is None:
        raise response_not_found(response_id)
    if _running(stored):
        # Run by another bridge on the same database: it is told, and ends it.
        await store.ask_to_cancel(response_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while _running(stored) and time.monotonic() < deadline:
            await asyncio.sleep(POLL_SECONDS)
            stored = await store.get_response(response_id, client) or stored
        if _running(stored):
            await _reap(request)
            stored = await store.get_response(response_id, client) or stored
    if not orjson.loads(stored).get("background"):
        raise ApiError.invalid(
            "Only a response created with background: true can be cancelled.",
            "response_id",
            code="invalid_request",
        )
    return web.Response(body=stored, content_type="application/json")
