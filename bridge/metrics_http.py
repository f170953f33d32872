"""GET /metrics in Prometheus' text format (bridge.metrics counts), and the count of every
request. The endpoint answers as GET /debug/turns does: loopback clients, or clients with a
client key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bridge.access import CLIENT_CLOSED
from bridge.app_keys import METRICS
from bridge.debug_turns import may_look

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request counted by its route (not its path: ids would make endless series)."""
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        # A method is whatever token the client sent: only the known ones are series of
        # their own, or a client could make series without end.
        method = request.method if request.method in METHODS else "other"
        metrics = request.app[METRICS]
        metrics.series(metrics.requests, route, method, str(status)).inc()


async def metrics_endpoint(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text format."""
    may_look(request)
    return web.Response(
        body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
