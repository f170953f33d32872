"""The aiohttp application: routes, middleware and the resources it owns."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from bridge.app_keys import (
    API_KEYS,
    CONFIG,
    HTTP_SESSION,
    OUTCOME,
    RESPONSE_ID,
    STORE,
    STORE_PATH,
    UPSTREAMS,
)
from bridge.config import Config, store_path
from bridge.errors import ApiError
from bridge.handlers import (
    create_response,
    delete_response,
    get_model,
    get_response,
    healthz,
    list_input_items,
    list_models,
)
from bridge.store import Store
from bridge.upstream import UpstreamClient

log = logging.getLogger(__name__)
access_log = logging.getLogger("bridge.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT_CLOSED = 499
_HTTP_ERROR_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


def _http_error_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"No such endpoint: {request.method} {request.path}"
    if exc.status == 405:
        return f"Method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        limit = request.app[CONFIG].server.max_request_bytes
        return f"The request body is larger than the limit of {limit} bytes"
    return exc.reason


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves in the one JSON error shape, and every request is logged once."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        return exc.response()
    except asyncio.CancelledError:
        # The client closed the connection (aiohttp cancels the handler). Clients often
        # hang up right after the final event; only an unfinished response is a 499
        # ("client closed request", as nginx logs it).
        status = 200 if OUTCOME in request else CLIENT_CLOSED
        raise
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        return ApiError(
            exc.status, _http_error_message(request, exc), code=_HTTP_ERROR_CODES.get(exc.status)
        ).response()
    except Exception:  # the boundary: an unexpected bug must still answer in the error shape
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiError(
            500,
            "The bridge failed unexpectedly; see its log.",
            type="server_error",
            code="server_error",
        ).response()
    finally:
        access_log.info(
            "%s %s %s %.1fms %s %s",
            request.method,
            request.path,
            status,
            (time.perf_counter() - started) * 1000,
            request.get(RESPONSE_ID, "-"),
            request.get(OUTCOME, "-"),
        )


PRUNE_INTERVAL = 3600.0


async def _store(app: web.Application) -> AsyncIterator[None]:
    """The database, migrated at startup, pruned in the background, closed last."""
    config = app[CONFIG]
    store = await Store.open(app[STORE_PATH], config.store.synchronous)
    app[STORE] = store
    pruner = asyncio.create_task(_prune_periodically(store, config))
    try:
        yield
    finally:
        pruner.cancel()
        await asyncio.gather(pruner, return_exceptions=True)
        await store.close()


async def _prune_periodically(store: Store, config: Config) -> None:
    while True:
        try:
            deleted = await store.prune(
                max_age_days=config.store.max_age_days, max_size_mb=config.store.max_size_mb
            )
        except sqlite3.Error:
            log.exception("pruning the store failed")
        else:
            if deleted:
                log.info("pruned %d stored responses", deleted)
        await asyncio.sleep(PRUNE_INTERVAL)


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    """One ClientSession for the process, pooled, closed on shutdown."""
    config = app[CONFIG]
    connector = aiohttp.TCPConnector(limit=config.upstream.max_connections, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
        app[HTTP_SESSION] = session
        app[UPSTREAMS] = {
            name: UpstreamClient(session, name, provider, app[API_KEYS].get(name), config.upstream)
            for name, provider in config.providers.items()
        }
        yield


def create_app(
    config: Config, api_keys: dict[str, str] | None = None, store_file: Path | None = None
) -> web.Application:
    """The bridge application for a validated config and the providers' API keys.

    The database is `store_file`, else the config's [store] path.
    """
    app = web.Application(
        client_max_size=config.server.max_request_bytes, middlewares=[error_middleware]
    )
    app[CONFIG] = config
    app[API_KEYS] = dict(api_keys or {})
    app[STORE_PATH] = store_file or store_path(config, os.environ)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_http_session)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/v1/responses", create_response)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.router.add_get("/v1/responses/{response_id}/input_items", list_input_items)
    return app
