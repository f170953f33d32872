"""What a web page in the owner's browser may do with the bridge: nothing, unless allowed.

A browser lets any page send "simple" cross-origin requests (a form post, or a fetch with a
text/plain body) to 127.0.0.1 without asking, and a DNS-rebinding page can even read the
answers under a name of its own. So every request is checked before anything else:
- its Host must be a name the bridge is reached by (localhost, an IP address, the address
  it listens on, or `[server] allowed_hosts`): a rebinding page's own name is refused;
- an Origin header, which browsers send and command-line clients do not, must be one of
  `[server] allowed_origins`;
- a POST body must be declared JSON, which no simple request can do.
An allowed origin gets the CORS answers a page needs (its preflight, and
Access-Control-Allow-Origin), so a page the owner trusts can use the API.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from bridge.app_keys import CONFIG, LISTEN_HOST
from bridge.errors import ApiError

# Hosts a wildcard listening address stands for (every address of the machine).
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
PREFLIGHT_SECONDS = 600
ALLOWED_METHODS = "GET, POST, DELETE"
EXPOSED_HEADERS = "x-request-id, retry-after"


def host_name(header: str) -> str:
    """The host of a Host header, without its port, brackets or trailing dot, lower case."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def host_allowed(host: str, listening: str, allowed: list[str]) -> bool:
    """Whether a request addressed to `host` may be one the bridge's owner meant: a loopback
    name or IP, the listening address (any IP for a wildcard one: an IP literal is never a
    rebound name), or one of `allowed` ("*": any)."""
    if host in ("127.0.0.1", "localhost") or host.endswith(".localhost"):
        return True  # browsers resolve *.localhost to loopback themselves (RFC 6761)
    address = _ip(host)
    if address is not None and address.is_loopback:
        return True
    listening = host_name(listening) if listening else ""
    if host == listening:
        return True
    if listening in WILDCARD_HOSTS and address is not None:
        return True
    return "*" in allowed or host in allowed


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def check_request(request: web.Request) -> str | None:
    """Refuse what a web page may have sent (ApiError 403/415); the allowed Origin of the
    request, if it has one."""
    settings = request.app[CONFIG].server
    host = request.headers.get("Host")
    if host is not None and not host_allowed(
        host_name(host), request.app[LISTEN_HOST], settings.allowed_hosts
    ):
        raise ApiError(
            403,
            f"Requests addressed to host {host_name(host)!r} are refused (the bridge answers "
            "to localhost, its IP addresses and its listening address); a reverse proxy's name "
            "goes in [server] allowed_hosts",
            code="host_not_allowed",
        )
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if origin.strip().rstrip("/").lower() not in settings.allowed_origins:
        raise ApiError(
            403,
            f"Requests from web pages are refused (Origin {origin!r}); to let a page you trust "
            "use the bridge, list its origin in [server] allowed_origins",
            code="origin_not_allowed",
        )
    return origin


def check_body_type(request: web.Request) -> None:
    """A POST with a body must declare it JSON (415 otherwise): no web page can send such a
    request to another origin without the browser asking first."""
    if request.method != "POST" or not request.body_exists or _is_json(request.content_type):
        return
    declared = request.headers.get("Content-Type")
    raise ApiError(
        415,
        f"The request body must be JSON, sent with 'Content-Type: application/json' (it was "
        f"{declared!r})"
        if declared
        else "The request body must be JSON, sent with 'Content-Type: application/json' "
        "(none was given)",
        code="unsupported_media_type",
    )


def preflight(request: web.Request, origin: str) -> web.Response:
    """The answer to an allowed page's CORS preflight (OPTIONS)."""
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Max-Age": str(PREFLIGHT_SECONDS),
        "Vary": "Origin",
    }
    asked = request.headers.get("Access-Control-Request-Headers")
    if asked:
        headers["Access-Control-Allow-Headers"] = asked
    return web.Response(status=204, headers=headers)


def is_preflight(request: web.Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def allow_origin(response: web.StreamResponse, origin: str) -> None:
    """The headers that let an allowed page read the answer."""
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    response.headers.add("Vary", "Origin")
