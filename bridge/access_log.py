"""The access log: one line per HTTP request and per WebSocket turn, in one format, through
aiohttp's AbstractAccessLogger.

The request middleware (bridge.access) writes each request's line once it knows how the
request ended, a client that left included (aiohttp itself logs nothing for a handler the
client's disconnect cancelled); a WebSocket writes one line per turn (bridge.ws_transport).
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from bridge.app_keys import REQUEST_LOG
from bridge.request_log import RequestLog


def printable(text: str) -> str:
    """`text` with control characters escaped: a %0A in a path cannot forge a log line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class AccessLogger(AbstractAccessLogger):
    """Lines of `METHOD path status time model= provider= tokens= response= outcome= ...
    request= client_request=` (a WebSocket turn's method is WS)."""

    def log(self, request: BaseRequest, response: StreamResponse | None, time: float) -> None:
        """An HTTP request's line; its status is the one the middleware noted."""
        entry = request[REQUEST_LOG]
        status = entry.status if response is None else response.status
        self.line(request.method, request.path, status, time, entry)

    def line(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        entry: RequestLog,
        extra: str = "",
    ) -> None:
        """One line; `extra` (` key=value` fields) goes before the request ids."""
        self.logger.info(
            "%s %s %s %.1fms model=%s provider=%s tokens=%d+%d response=%s outcome=%s%s "
            "request=%s client_request=%s",
            method,
            printable(path),
            status,
            seconds * 1000,
            entry.model,
            entry.provider,
            entry.input_tokens,
            entry.output_tokens,
            entry.response_id,
            entry.outcome or "-",
            extra,
            entry.request_id,
            entry.client_request_id or "-",
        )


ACCESS_LOG = AccessLogger(logging.getLogger("bridge.access"), "")
