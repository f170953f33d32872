"""One error shape for every endpoint, and upstream failures mapped to Responses codes (pure).

Codes are chosen for what Codex does with them (codex-wire.md, verified with Codex 0.169.0):
context_length_exceeded and insufficient_quota are fatal with Codex's own text;
rate_limit_exceeded carries "try again in N seconds", which Codex waits for; a provider that
stays unavailable is a server_error, which Codex retries; a request the provider refuses
(4xx) is UPSTREAM_REFUSED, which Codex shows as it is and does not retry.

The HTTP layer (bridge.access.error_response) turns an ApiError into a response; streams
turn it into response.failed.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# A code Codex neither retries nor rewrites: the provider refused the request itself.
UPSTREAM_REFUSED = "invalid_prompt"
# The longest Retry-After taken literally (a day); beyond is nonsense.
MAX_RETRY_AFTER = 86400.0
# How much of an upstream message reaches the client and the log.
MAX_MESSAGE = 2000


@dataclass(slots=True)
class ApiError(Exception):
    """An error answered to the client as `{"error": {...}}` with an HTTP status, or sent
    as the error of response.failed once a stream has started."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None
    # Worth sending again unchanged: the upstream was unreachable, overloaded or rate-limited.
    retryable: bool = False
    # The provider's own HTTP status, for an error it answered with (metrics count by it).
    upstream_status: int | None = None

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

    @classmethod
    def invalid(
        cls, message: str, param: str | None = None, code: str = "invalid_value"
    ) -> ApiError:
        """A request the bridge cannot take (400)."""
        return cls(400, message, param=param, code=code)

    @classmethod
    def server(
        cls, message: str, *, status: int = 502, code: str = "server_error", retryable: bool = False
    ) -> ApiError:
        """Something went wrong on the bridge's or the provider's side."""
        return cls(status, message, type="server_error", code=code, retryable=retryable)


_CONTEXT_MARKERS = re.compile(
    r"maximum context length|context[ _]length|context window|too many tokens|"
    r"prompt is too long|exceeds the (?:model's )?(?:maximum|max)",
    re.IGNORECASE,
)
# Money, not rate: the account has no balance or credit left. A per-minute or per-day quota
# ("Quota exceeded for quota metric ... per minute", Gemini's "You exceeded your current
# quota") is a rate limit, which passes; Codex takes insufficient_quota as fatal.
_BILLING_MARKERS = re.compile(
    r"insufficient[ _](?:quota|balance|funds|credits?)|credit balance|out of credits|"
    r"payment required|billing hard limit",
    re.IGNORECASE,
)
# A wait named in the message when there is no Retry-After header ("Please retry in 52.4s",
# "try again in 20s", "in 500ms"): Gemini and OpenAI word it so.
_RETRY_IN = re.compile(r"(?:retry|try again) in (\d+(?:\.\d+)?)\s*(ms|s|sec|seconds?)\b", re.I)


def upstream_error(
    status: int | None,
    message: str,
    code: str | int | None = None,
    retry_after: float | None = None,
    *,
    url: str | None = None,
) -> ApiError:
    """Classify an upstream failure (HTTP status and/or message) as a client-facing error.

    `url` (already redacted) is named in the errors a user must fix in their config.
    """
    error = _classified(status, message, code, retry_after, url=url)
    error.upstream_status = status
    return error


def _classified(
    status: int | None,
    message: str,
    code: str | int | None = None,
    retry_after: float | None = None,
    *,
    url: str | None = None,
) -> ApiError:
    """The client-facing error for an upstream failure (upstream_error)."""
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
    if status == 402 or code_text == "insufficient_quota" or _BILLING_MARKERS.search(message):
        return ApiError(402, text, type="insufficient_quota", code="insufficient_quota")
    if status == 429 or code_text in ("rate_limit_exceeded", "429", "RESOURCE_EXHAUSTED"):
        if retry_after is None:
            retry_after = wait_named_in(message)
        # Codex waits for the "try again in N seconds" of the text; the bridge's own retry
        # without a named wait backs off with jitter (bridge.engine).
        shown = retry_after if retry_after is not None else 1.0
        return ApiError(
            429,
            f"{text}. Please try again in {max(1, math.ceil(shown))} seconds.",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            retry_after=retry_after,
            retryable=status == 429,
        )
    if (status is not None and status >= 500) or code_text in (
        "server_is_overloaded",
        "overloaded",
    ):
        # The provider is down or overloaded: Codex retries a server_error with its backoff.
        return ApiError(
            503 if status in (502, 503, 504) else 502,
            f"{text} (HTTP {status})" if status else text,
            type="server_error",
            code="server_error",
            retryable=status in (502, 503, 504),
        )
    where = f" at {url}" if url else ""
    if status in (401, 403):
        return ApiError(
            502,
            f"{text} (the provider{where} rejected the bridge's API key: HTTP {status}; "
            "check the provider's api_key_env)",
            type="server_error",
            code=UPSTREAM_REFUSED,
        )
    if status == 404:
        return ApiError(
            502,
            f"{text} (HTTP 404 from {url or 'the provider'}: check the provider's base_url, "
            "which should end before /chat/completions, and the model name)",
            type="server_error",
            code=UPSTREAM_REFUSED,
        )
    if status is not None and 400 <= status < 500:
        return ApiError(400, f"{text} (HTTP {status})", code=UPSTREAM_REFUSED)
    return ApiError(502, text, type="server_error", code="server_error")


def wait_named_in(message: str) -> float | None:
    """Seconds to wait that an error message names, or None."""
    found = _RETRY_IN.search(message)
    if found is None:
        return None
    seconds = float(found.group(1)) / (1000.0 if found.group(2).lower() == "ms" else 1.0)
    return seconds if seconds <= MAX_RETRY_AFTER else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110).

    Anything else (negative, not finite, past a day) is ignored.
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_RETRY_AFTER:
        return None
    return seconds


# What an API key looks like in a provider's error text ("Incorrect API key provided:
# sk-abc...xyz"): OpenAI-style prefixes and long opaque tokens after "key".
_KEY_LIKE = re.compile(
    r"\b(?:sk|pk|rk|ak|key)-[A-Za-z0-9_\-*.]{6,}"
    r"|(?<=[Kk]ey[:= ])\s*[A-Za-z0-9_\-.]{20,}"
    r"|\bBearer\s+[A-Za-z0-9_\-.~+/]{8,}=*",
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secrets, key-like tokens, or credentials in URLs."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _KEY_LIKE.sub("[redacted]", text)
    return _URL_CREDENTIALS.sub(r"\1[redacted]@", text)


_URL_CREDENTIALS = re.compile(r"(https?://)[^/@\s]+@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """A URL without the user and password it may carry."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"[redacted]@{host}", parts.path, parts.query, ""))


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duplicate_item(index: int, item_id: str, param: str) -> ApiError:
    """An item id given twice in one request: a conversation could keep only one of them."""
    return ApiError.invalid(
        f"Duplicate item id '{item_id}' in one request: each item of a conversation needs "
        "its own id",
        f"{param}[{index}].id",
        code="duplicate_item_id",
    )
