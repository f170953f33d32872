"""One error shape for every endpoint, and upstream failures mapped to Responses codes.

Codes are the ones Codex acts on (codex-wire.md): context_length_exceeded and
insufficient_quota are fatal, rate_limit_exceeded carries "try again in N seconds",
server_is_overloaded means capacity; anything else is retried as server_error.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
from aiohttp import web


@dataclass(slots=True)
class ApiError(Exception):
    """An error answered to the client as `{"error": {...}}` with an HTTP status."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    # Worth sending again unchanged: the upstream was unreachable, overloaded or rate-limited.
    retryable: bool = False

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> web.Response:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after)))
        return web.Response(
            status=self.status,
            body=orjson.dumps(self.body()),
            content_type="application/json",
            headers=headers,
        )


_CONTEXT_MARKERS = re.compile(
    r"maximum context length|context[ _]length|context window|too many tokens|"
    r"prompt is too long|exceeds the (?:model's )?(?:maximum|max)",
    re.IGNORECASE,
)
_QUOTA_MARKERS = re.compile(r"insufficient[ _](?:quota|balance)|quota exceeded", re.IGNORECASE)


def upstream_error(
    status: int | None,
    message: str,
    code: str | int | None = None,
    retry_after: float | None = None,
) -> ApiError:
    """Classify an upstream failure (HTTP status and/or message) as a client-facing error."""
    text = f"upstream: {message}" if message else "upstream request failed"
    code_text = str(code) if code is not None else ""
    if code_text == "context_length_exceeded" or (
        status in (None, 400, 413, 422) and _CONTEXT_MARKERS.search(message)
    ):
        return ApiError(
            400,
            f"{text} (the input exceeds the model's maximum context length)",
            code="context_length_exceeded",
        )
    if status == 402 or code_text == "insufficient_quota" or _QUOTA_MARKERS.search(message):
        return ApiError(402, text, type="insufficient_quota", code="insufficient_quota")
    if status == 429 or code_text in ("rate_limit_exceeded", "429"):
        wait = retry_after if retry_after is not None else 1.0
        return ApiError(
            429,
            f"{text}. Please try again in {max(1, round(wait))} seconds.",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            retry_after=wait,
            retryable=status == 429,
        )
    if status in (502, 503, 504) or code_text in ("server_is_overloaded", "overloaded"):
        return ApiError(
            503,
            text,
            type="server_error",
            code="server_is_overloaded",
            retryable=status in (502, 503, 504),
        )
    if status in (401, 403):
        return ApiError(
            502,
            f"{text} (the provider rejected the bridge's API key: HTTP {status})",
            type="server_error",
            code="upstream_auth_failed",
        )
    if status is not None and 400 <= status < 500:
        return ApiError(
            400 if status != 404 else 502,
            text,
            type="invalid_request_error",
            code=code_text or "upstream_bad_request",
        )
    return ApiError(502, text, type="server_error", code="server_error")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(0.0, seconds)
    return seconds if seconds >= 0 else None
