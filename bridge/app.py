"""The aiohttp application: routes, middleware and the resources it owns."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from bridge.access import add_request_id, request_middleware
from bridge.app_keys import (
    API_KEYS,
    BACKGROUND,
    BODIES,
    CLIENT_KEYS,
    COLLECTOR,
    CONFIG,
    HTTP_SESSION,
    LISTEN_HOST,
    METRICS,
    MISSING_KEYS,
    STORE,
    STORE_PATH,
    TURNS,
    UPSTREAMS,
)
from bridge.background import BackgroundRuns
from bridge.background_http import cancel_response, get_response
from bridge.bodies import BodyBudget
from bridge.collector import CollectorPause
from bridge.compaction import compact_response
from bridge.config import Config
from bridge.config_env import store_path
from bridge.conversations_http import add_routes as add_conversation_routes
from bridge.debug_turns import add_routes as add_debug_routes
from bridge.demo import DemoUpstream
from bridge.fair_share import distinct_keys
from bridge.handlers import (
    delete_response,
    get_model,
    healthz,
    list_input_items,
    list_models,
    readyz,
)
from bridge.metrics import PREFIX, Metrics
from bridge.metrics_http import count_requests, metrics_endpoint
from bridge.open_sockets import SOCKETS, OpenSockets
from bridge.sse_transport import create_response
from bridge.store import StoreUnavailable
from bridge.store.backends import open_store, serving
from bridge.turns import TurnsInFlight
from bridge.upstream import UpstreamClient
from bridge.ws_transport import responses_socket

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0


async def _store(app: web.Application) -> AsyncIterator[None]:
    """The database, migrated at startup (as `[store] migrate` allows), pruned in the
    background, closed last."""
    config = app[CONFIG]
    store = await open_store(config, os.environ, opening=serving(config), path=app[STORE_PATH])
    app[STORE] = store
    schema = store.health.schema
    log.info(
        "database %s (%s; this release knows up to %d)",
        store.label,
        schema.describe(),
        schema.latest,
    )
    if store.health.spool is not None and store.health.pending:
        log.warning(
            "%d entries wait in the spool %s from an earlier run; written when the database "
            "takes them",
            store.health.pending,
            store.health.spool.directory,
        )
    directory = app[STORE_PATH].parent
    app[BACKGROUND] = BackgroundRuns(
        store,
        config.server.max_background,
        clients=distinct_keys(app[CLIENT_KEYS]),
        directory=directory if directory.is_dir() else None,
    )
    app[BACKGROUND].recover()
    pruner = asyncio.create_task(
        prune_periodically(
            functools.partial(
                store.prune,
                max_age_days=config.store.max_age_days,
                max_size_mb=config.store.max_size_mb,
            ),
            PRUNE_INTERVAL,
        )
    )
    try:
        yield
    finally:
        pruner.cancel()
        await asyncio.gather(pruner, return_exceptions=True)
        await store.close()


async def prune_periodically(prune: Callable[[], Awaitable[int]], interval: float) -> None:
    """Prune now and every `interval` seconds; a failure is logged and the next prune
    comes as planned (the task ends only when cancelled)."""
    while True:
        try:
            deleted = await prune()
        except StoreUnavailable as exc:
            log.warning("pruning the store skipped: %s", exc)
        except Exception:  # the task's boundary: it must outlive any one failure
            log.exception("pruning the store failed")
        else:
            if deleted:
                log.info("pruned %d stored responses", deleted)
        await asyncio.sleep(interval)


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    """One ClientSession for the process, pooled, closed on shutdown."""
    config = app[CONFIG]
    # No limit here: each provider bounds its own requests in flight (UpstreamClient), so
    # one provider's slow or stalled requests cannot take the others' connections.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    # No cookie jar: the session serves every client, so a cookie a provider set on one
    # client's answer (a load balancer's affinity, a CDN's bot check) would go upstream
    # with everyone's later requests. A request to a provider is authorized by its key alone.
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        read_bufsize=16384,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        app[HTTP_SESSION] = session
        upstreams: dict[str, UpstreamClient] = {}
        for name, provider in config.providers.items():
            if provider.profile == "demo":
                upstreams[name] = DemoUpstream(session, name, provider, config.upstream)
            elif name not in app[MISSING_KEYS]:
                key = app[API_KEYS].get(name)
                upstreams[name] = UpstreamClient(session, name, provider, key, config.upstream)
        app[UPSTREAMS] = upstreams
        yield


async def _drain(app: web.Application) -> None:
    """On shutdown (listening has stopped): let open responses finish, then end the rest;
    then close the WebSockets (1001, going away)."""
    await app[TURNS].drain(app[CONFIG].server.drain_seconds)
    if BACKGROUND in app:
        await app[BACKGROUND].close()
    await app[SOCKETS].close_all()


def _gauges(app: web.Application) -> Iterator[Metric]:
    """What is open now, read at each scrape of GET /metrics."""
    sockets = app[SOCKETS]
    values = (
        ("websocket_connections", "WebSocket connections open", len(sockets)),
        (
            "websocket_cache_bytes",
            "Bytes of conversations the open WebSockets keep",
            sum(conversations.size for conversations in sockets.conversations),
        ),
        (
            "background_runs",
            "Background responses running",
            len(app[BACKGROUND]) if BACKGROUND in app else 0,
        ),
        ("turns_in_flight", "Turns being answered", len(app[TURNS])),
    )
    for name, text, value in values:
        yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)


def create_app(
    config: Config,
    api_keys: dict[str, str] | None = None,
    store_file: Path | None = None,
    client_keys: tuple[str, ...] = (),
    missing_keys: frozenset[str] = frozenset(),
    listen_host: str | None = None,
) -> web.Application:
    """The bridge application for a validated config, the providers' API keys and the
    keys clients must present (none: no client authentication). The providers in
    `missing_keys` have no key here: their models answer with an error saying so.

    The database is `store_file`, else the config's [store] path; `listen_host` is the
    address served on when not the config's (`serve --host`).
    """
    app = web.Application(
        client_max_size=config.server.max_request_bytes,
        middlewares=[count_requests, request_middleware],
    )
    app[METRICS] = Metrics()
    app[CONFIG] = config
    app[API_KEYS] = dict(api_keys or {})
    app[CLIENT_KEYS] = client_keys
    app[MISSING_KEYS] = missing_keys
    app[LISTEN_HOST] = config.server.host if listen_host is None else listen_host
    app.on_response_prepare.append(add_request_id)
    app[STORE_PATH] = store_file or store_path(config, os.environ)
    app[TURNS] = TurnsInFlight()
    app[BODIES] = BodyBudget(config.server.max_request_bytes_in_flight)
    app[COLLECTOR] = CollectorPause()
    app[SOCKETS] = OpenSockets(config.websocket.max_connections, distinct_keys(client_keys))
    app[METRICS].read_on_scrape(lambda: _gauges(app))
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_http_session)
    app.on_shutdown.append(_drain)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/v1/responses", create_response)
    app.router.add_post("/v1/responses/compact", compact_response)
    app.router.add_get("/v1/responses", responses_socket)
    app.router.add_get("/v1/responses/{response_id}", get_response)
    app.router.add_delete("/v1/responses/{response_id}", delete_response)
    app.router.add_post("/v1/responses/{response_id}/cancel", cancel_response)
    add_conversation_routes(app)
    add_debug_routes(app)
    app.router.add_get("/v1/responses/{response_id}/input_items", list_input_items)
    return app
