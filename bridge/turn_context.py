"""A request's TurnContext, from the application's state: built once per request, with the
client identity the request middleware resolved."""

from __future__ import annotations

from aiohttp import web

from bridge.app_keys import CLIENT, CONFIG, DEBUG_TURNS, METRICS, STORE, TURNS, UPSTREAMS
from bridge.turn_plan import TurnContext


def turn_context(request: web.Request, *, label: str, transport: str) -> TurnContext:
    """What the turns of `request` need; `label` names them in the log, `transport` in the
    metrics."""
    app = request.app
    return TurnContext(
        config=app[CONFIG],
        store=app[STORE],
        upstreams=app[UPSTREAMS],
        turns=app[TURNS],
        client=request[CLIENT],
        headers=request.headers,
        label=label,
        transport=transport,
        ring=app[DEBUG_TURNS],
        metrics=app[METRICS],
    )
