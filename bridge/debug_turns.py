"""GET /debug/turns: the last turns kept whole (bridge.turn_trace), to see what happened.

It answers loopback clients, or clients that presented a client key (and then only their own
turns).
"""

from __future__ import annotations

from aiohttp import web

from bridge.app_keys import API_KEYS, CLIENT, CLIENT_KEYS, CONFIG, DEBUG_TURNS
from bridge.config_env import is_loopback
from bridge.errors import ApiError
from bridge.handlers import json_response
from bridge.turn_trace import TurnRing


def may_look(request: web.Request) -> str | None:
    """Who may look: a client that presented a key sees its own turns (the middleware
    checked the key); without client keys, only a loopback peer sees them (all)."""
    if request.app[CLIENT_KEYS]:
        return request[CLIENT]
    if not is_loopback(request.remote or ""):
        raise ApiError(
            403,
            "/debug/turns answers loopback clients only (or clients with a client key)",
            code="forbidden",
        )
    return None


def _ring(request: web.Request) -> TurnRing:
    ring = request.app[DEBUG_TURNS]
    if not ring.enabled:
        raise ApiError(
            404,
            "Turn tracing is off: set [debug] keep_turns (e.g. 20) in the config and restart "
            "the bridge",
            code="not_found",
        )
    return ring


def _secrets(request: web.Request) -> list[str]:
    return [*request.app[API_KEYS].values(), *request.app[CLIENT_KEYS]]


async def list_turns(request: web.Request) -> web.Response:
    """GET /debug/turns: the turns kept, newest first (`?full=true`: with their contents)."""
    ring = _ring(request)
    client = may_look(request)
    turns = ring.visible(client)
    if request.query.get("full") in ("1", "true"):
        secrets = _secrets(request)
        return json_response({"object": "list", "data": [t.whole(secrets) for t in turns]})
    return json_response({"object": "list", "data": [t.summary() for t in turns]})


async def get_turn(request: web.Request) -> web.Response:
    """GET /debug/turns/{id}: one turn whole."""
    ring = _ring(request)
    client = may_look(request)
    wanted = request.match_info["response_id"]
    for trace in ring.visible(client):
        if trace.response_id == wanted:
            return json_response(trace.whole(_secrets(request)))
    raise ApiError(
        404,
        f"No turn {wanted} is kept ([debug] keep_turns = {request.app[CONFIG].debug.keep_turns})",
        code="not_found",
    )


def add_routes(app: web.Application) -> None:
    app[DEBUG_TURNS] = TurnRing(app[CONFIG].debug.keep_turns, app[CONFIG].debug.max_part_bytes)
    app.router.add_get("/debug/turns", list_turns)
    app.router.add_get("/debug/turns/{response_id}", get_turn)
