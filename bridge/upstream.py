"""The Chat Completions provider on the other side, over the process's shared session."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import msgspec

from bridge.config import ProviderConfig, UpstreamConfig
from bridge.errors import ApiError, parse_retry_after, upstream_error
from bridge.wire.chat import ERROR_DECODER

log = logging.getLogger(__name__)

# The most of an upstream error body read to find its message.
ERROR_BODY_LIMIT = 64 * 1024
# aiohttp warns that bytes bodies above 1 MiB block the loop while written; those go as a
# BytesIO, which it writes in chunks, yielding in between.
LARGE_BODY = 1024 * 1024


def connection_error(exc: BaseException, url: str) -> ApiError:
    """A failure to reach the provider, as a client-facing error.

    Connection failures (refused, reset, a connect timeout) are retryable; a provider that
    accepted the request and then went silent is not.
    """
    if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ApiError(
            504,
            f"upstream did not answer in time ({url})",
            type="server_error",
            code="server_error",
        )
    return ApiError(
        502,
        f"upstream unreachable ({url}): {exc}",
        type="server_error",
        code="server_error",
        retryable=True,
    )


def error_message(body: bytes) -> tuple[str, str | int | None]:
    """The message and code of an upstream error body, whatever its shape."""
    try:
        envelope = ERROR_DECODER.decode(body)
    except msgspec.DecodeError:
        return body.decode("utf-8", "replace").strip()[:2000], None
    error = envelope.error
    if isinstance(error, str):
        return error, None
    if error is not None and error.message:
        return error.message, error.code
    message = envelope.message or envelope.detail
    if message:
        return message, None
    return body.decode("utf-8", "replace").strip()[:2000], None


class UpstreamClient:
    """One configured provider: its URL, credentials and timeouts."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        name: str,
        provider: ProviderConfig,
        api_key: str | None,
        settings: UpstreamConfig,
    ) -> None:
        self.name = name
        self.url = provider.base_url.rstrip("/") + "/chat/completions"
        self._session = session
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        # sock_read bounds every read, the wait for the response headers included: it is
        # the idle time between upstream chunks. There is no total timeout on a stream.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.idle_timeout,
        )
        self.idle_timeout = settings.idle_timeout
        self.max_retries = settings.max_retries
        self.max_retry_wait = settings.max_retry_wait

    @asynccontextmanager
    async def stream(
        self, body: bytes, authorization: str | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST a streaming chat request; yields the 200 response, raises ApiError otherwise.

        `authorization` replaces the configured key (a provider with forward_client_key).
        """
        headers = self._headers
        if authorization:
            headers = {**headers, "Authorization": authorization}
        try:
            data = body if len(body) < LARGE_BODY else io.BytesIO(body)
            response = await self._session.post(
                self.url, data=data, headers=headers, timeout=self._timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error(exc, self.url) from None
        try:
            if response.status != 200:
                try:
                    payload = await response.content.read(ERROR_BODY_LIMIT)
                except (aiohttp.ClientError, TimeoutError):
                    payload = b""
                message, code = error_message(payload)
                log.info("upstream %s answered %s: %s", self.name, response.status, message)
                raise upstream_error(
                    response.status,
                    message or f"HTTP {response.status}",
                    code,
                    parse_retry_after(response.headers.get("Retry-After")),
                )
            yield response
        finally:
            # close(), not release(): an unfinished stream must not go back to the pool.
            if not response.content.at_eof():
                response.close()
            else:
                response.release()
