"""Every request: client authentication, one error shape, a request id, one log line."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from bridge import browsers
from bridge.access_log import ACCESS_LOG, printable
from bridge.app_keys import ALLOWED_ORIGIN, CLIENT, CLIENT_KEYS, CONFIG, REQUEST_LOG
from bridge.errors import ApiError
from bridge.request_log import RequestLog
from bridge.scope import ANONYMOUS, client_identity
from bridge.store.errors import StoreError
from bridge.translate.ids import random_hex

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CLIENT_CLOSED = 499  # "client closed request", as nginx logs it
# The client's own id for the request, logged beside the bridge's (Codex: x-client-request-id).
REQUEST_ID_HEADERS = ("x-request-id", "x-client-request-id")
# Paths anyone on the machine may ask: liveness and readiness carry no data.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_HTTP_ERROR_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


def error_response(error: ApiError) -> web.Response:
    """The one JSON error shape, with Retry-After when the error says when to try again."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    return web.Response(
        status=error.status,
        body=orjson.dumps(error.body()),
        content_type="application/json",
        headers=headers,
    )


def client_request_id(request: web.Request) -> str | None:
    """The client's own id for the request, when it sends a usable one (Codex sends its
    session id as x-client-request-id: the same for every request of a session)."""
    for name in REQUEST_ID_HEADERS:
        value = request.headers.get(name)
        if value and len(value) <= 128 and value.isprintable() and " " not in value:
            return value
    return None


def _routed_under_v1(request: web.Request) -> bool:
    """Whether the path would name an endpoint with /v1 in front of it."""
    if request.path.startswith("/v1/") or request.path == "/v1":
        return False
    for resource in request.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter") or ""
        if path.startswith("/v1/"):
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", path[3:])
            if re.fullmatch(pattern, request.path):
                return True
    return False


def _http_error_message(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        if _routed_under_v1(request):
            return (
                f"No such endpoint: {request.method} {printable(request.path)}. The API is "
                f"under /v1: {request.method} /v1{printable(request.path)} (a client's base "
                "URL ends in /v1)"
            )
        return f"No such endpoint: {request.method} {printable(request.path)}"
    if exc.status == 405:
        return f"Method {request.method} is not allowed on {request.path}"
    if exc.status == 413:
        limit = request.app[CONFIG].server.max_request_bytes
        return f"The request body is larger than the limit of {limit} bytes"
    return exc.reason


def bearer_token(request: web.Request) -> str:
    """The token of an `Authorization: Bearer ...` header, or ""."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def check_client_key(request: web.Request) -> str:
    """Refuse a request without one of the configured client keys (when there are any);
    returns who the client is, the one identity every read and write of the request uses
    (bridge.scope.client_identity of its key, or anonymous).

    Without client keys, a bridge with a provider that forwards the client's own key
    (forward_client_key) tells its users apart by that key: each one's responses,
    conversations and background runs are its own, whatever endpoint reads them.
    """
    keys = request.app[CLIENT_KEYS]
    if request.path in OPEN_PATHS:
        return ANONYMOUS
    if not keys:
        providers = request.app[CONFIG].providers.values()
        if any(provider.forward_client_key for provider in providers):
            return client_identity(bearer_token(request))
        return ANONYMOUS
    token = bearer_token(request)
    offered = token.encode("utf-8", "surrogateescape")
    # Compare against every key without stopping early, in constant time each.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(offered, key.encode())
    if not matched:
        raise ApiError(
            401,
            "Incorrect or missing API key: send one of the bridge's client keys as "
            "'Authorization: Bearer <key>'.",
            type="invalid_request_error",
            code="invalid_api_key",
        )
    return client_identity(token)


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What browsers may send, authentication, the one JSON error shape for every failure,
    and one log line."""
    started = time.perf_counter()
    entry = request[REQUEST_LOG] = RequestLog(f"req_{random_hex(12)}", client_request_id(request))
    status = 500
    try:
        origin = browsers.check_request(request)
        if origin is not None:
            request[ALLOWED_ORIGIN] = origin
            if browsers.is_preflight(request):
                status = 204
                return browsers.preflight(request, origin)
        browsers.check_body_type(request)
        request[CLIENT] = check_client_key(request)
        response = await handler(request)
        status = response.status
        return response
    except ApiError as exc:
        status = exc.status
        return error_response(exc)
    except asyncio.CancelledError:
        # The client closed the connection (aiohttp cancels the handler). Clients often
        # hang up right after the final event; only an unfinished response is a 499.
        status = 101 if entry.upgraded else 200 if entry.outcome else CLIENT_CLOSED
        raise
    except StoreError as exc:
        # The database is unreachable (a PostgreSQL restart) or unusable: say so, briefly.
        log.warning("%s %s: %s", request.method, printable(request.path), exc)
        error = ApiError.server(f"The bridge's database is unavailable: {exc}", status=503)
        status = error.status
        return error_response(error)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        return error_response(
            ApiError(
                exc.status,
                _http_error_message(request, exc),
                code=_HTTP_ERROR_CODES.get(exc.status),
            )
        )
    except Exception:  # the boundary: an unexpected bug must still answer in the error shape
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(
            ApiError.server("The bridge failed unexpectedly; see its log.", status=500)
        )
    finally:
        entry.status = status
        ACCESS_LOG.log(request, None, time.perf_counter() - started)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response names its request id (streams included), and
    an allowed web page may read it."""
    entry = request.get(REQUEST_LOG)
    if entry is not None:
        response.headers["x-request-id"] = entry.request_id
    origin = request.get(ALLOWED_ORIGIN)
    if origin is not None:
        browsers.allow_origin(response, origin)
