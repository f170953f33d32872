"""The Chat Completions provider on the other side, over the process's shared session.

Each provider has a bounded number of requests in flight of its own (one provider cannot
take every connection), never follows redirects (that would send the prompt elsewhere),
reads error bodies whole but bounded, in whatever charset, and keeps its API key and any
credentials in its base_url out of every message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import msgspec
from aiohttp.payload import Payload

from bridge.body import UpstreamBody
from bridge.config import ProviderConfig, UpstreamConfig
from bridge.errors import ApiError, clip, parse_retry_after, redact, redact_url, upstream_error
from bridge.wire.chat import ERROR_DECODER, ERROR_LIST_DECODER, UpstreamErrorEnvelope

log = logging.getLogger(__name__)

# The most of an upstream error body read to find its message.
ERROR_BODY_LIMIT = 256 * 1024
# aiohttp warns that bytes bodies above 1 MiB block the loop while written; those (and
# bodies in pieces) go as a payload written in runs (bridge.body).
LARGE_BODY = 1024 * 1024


def connection_error(exc: BaseException, url: str) -> ApiError:
    """A failure to reach the provider, as a client-facing error.

    Connection failures (refused, reset, a connect timeout) are retryable; a provider that
    accepted the request and then went silent is not.
    """
    if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ApiError.server(f"upstream did not answer in time ({url})", status=504)
    return ApiError.server(f"upstream unreachable ({url}): {redact(str(exc))}", retryable=True)


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes (the rest is not read)."""
    buffer = bytearray()
    while True:
        chunk = await response.content.read(min(65536, limit + 1 - len(buffer)))
        if not chunk:
            return bytes(buffer)
        buffer += chunk
        if len(buffer) > limit:
            return None


def _text(body: bytes, charset: str | None) -> str:
    """Body bytes as text in their declared charset, else UTF-8, never failing."""
    for encoding in (charset, "utf-8"):
        if not encoding:
            continue
        try:
            return body.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return body.decode("utf-8", "replace")


def _envelope(body: bytes) -> UpstreamErrorEnvelope | None:
    """The error envelope of a JSON body: `{"error": ...}`, or the first of a list of them
    (Gemini's OpenAI-compatible endpoint answers `[{"error": {...}}]`)."""
    try:
        return ERROR_DECODER.decode(body)
    except msgspec.ValidationError:
        pass
    try:
        envelopes = ERROR_LIST_DECODER.decode(body)
    except msgspec.ValidationError:
        return None
    return envelopes[0] if envelopes else None


def error_message(body: bytes, charset: str | None = None) -> tuple[str, str | int | None]:
    """The message and code of an upstream error body, whatever its shape or charset."""
    try:
        envelope = _envelope(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        text = _text(body, charset)
        try:
            envelope = _envelope(text.encode("utf-8"))
        except (msgspec.DecodeError, RecursionError):
            return text.strip(), None
    if envelope is None:
        return _text(body, charset).strip(), None
    error = envelope.error
    if isinstance(error, str):
        return error, None
    if error is not None and error.message:
        return error.message, error.code
    message = envelope.message or envelope.detail
    if message:
        return message, None
    return _text(body, charset).strip(), None


class UpstreamClient:
    """One configured provider: its URL, credentials, timeouts and share of connections."""

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
        # The URL as messages and logs show it: without credentials.
        self.display_url = redact_url(self.url)
        self._session = session
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        self._secrets = [api_key] if api_key else []
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._whole_headers = {**self._headers, "Accept": "application/json"}
        # sock_read bounds every read, the wait for the response headers included: it is
        # the idle time between upstream chunks. There is no total timeout on a stream.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.idle_timeout,
        )
        # A non-streamed answer arrives whole when it is done: only its total time is bound.
        self._whole_timeout = aiohttp.ClientTimeout(
            total=settings.answer_timeout,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
        )
        self.idle_timeout = settings.idle_timeout
        self.answer_timeout = settings.answer_timeout
        self.max_retries = settings.max_retries
        self.max_retry_wait = settings.max_retry_wait
        self.max_answer_bytes = settings.max_answer_bytes
        self.max_event_bytes = settings.max_event_bytes
        # This provider's requests in flight: its own share of the session's connections.
        self._slots = asyncio.Semaphore(settings.max_connections)

    def redact(self, text: str) -> str:
        """`text` safe to show and log: no API key, no credentials, bounded."""
        return clip(redact(text, self._secrets))

    def request_error(self, exc: BaseException, *, whole: bool = False) -> ApiError:
        """A failure to reach the provider or to get its answer in time, as a client-facing
        error; for a non-streamed (`whole`) answer, a timeout names answer_timeout."""
        connecting = isinstance(exc, aiohttp.ConnectionTimeoutError)
        if whole and isinstance(exc, TimeoutError) and not connecting:
            return ApiError.server(
                f"upstream did not finish its answer within {self.answer_timeout:g} seconds "
                f"([upstream] answer_timeout; {self.display_url})",
                status=504,
            )
        return connection_error(exc, self.display_url)

    def send(
        self, body: UpstreamBody, authorization: str | None = None, *, whole: bool = False
    ) -> Sent:
        """Start the request now, in a task of its own, for `stream(sent=...)` to take up:
        the provider starts on it while the bridge goes on (a turn's first attempt sends
        it before it writes its first events to the client)."""
        headers, secrets = self._credentials(authorization, whole)
        return Sent(self, asyncio.ensure_future(self._post(body, headers, whole)), secrets)

    @asynccontextmanager
    async def stream(
        self,
        body: UpstreamBody,
        authorization: str | None = None,
        *,
        whole: bool = False,
        sent: Sent | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST a chat request, streamed or (`whole`) for one JSON answer; yields the 200
        response, raises ApiError otherwise.

        `authorization` replaces the configured key (a provider with forward_client_key).
        `sent`: the same request already started by `send`, taken up here.
        """
        if sent is not None:
            secrets = sent.secrets
            response = await sent.take()
        else:
            headers, secrets = self._credentials(authorization, whole)
            response = await self._post(body, headers, whole)
        try:
            if response.status != 200:
                raise await self._refusal(response, secrets)
            yield response
        finally:
            self.finish(response)

    def _credentials(
        self, authorization: str | None, whole: bool
    ) -> tuple[dict[str, str], list[str]]:
        """The request's headers, and the secrets no message may show."""
        headers = self._whole_headers if whole else self._headers
        if not authorization:
            return headers, self._secrets
        headers = {**headers, "Authorization": authorization}
        return headers, [*self._secrets, authorization.partition(" ")[2]]

    async def _post(
        self, body: UpstreamBody, headers: dict[str, str], whole: bool
    ) -> aiohttp.ClientResponse:
        """The request sent and its response's head read, holding one of the provider's
        slots until `finish(response)`; ApiError when the provider cannot be reached."""
        await self._slots.acquire()
        try:
            data: bytes | Payload = (
                body.pieces[0]
                if len(body.pieces) == 1 and body.size < LARGE_BODY
                else body.payload()
            )
            return await self._session.post(
                self.url,
                data=data,
                headers=headers,
                timeout=self._whole_timeout if whole else self._timeout,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._slots.release()
            raise self.request_error(exc, whole=whole) from None
        except BaseException:
            self._slots.release()
            raise

    def finish(self, response: aiohttp.ClientResponse) -> None:
        """Done with a response: its connection back to the pool when it was read to the
        end (close(), not release(), otherwise: an unfinished stream must not be reused),
        and its slot given back."""
        try:
            if not response.content.at_eof():
                response.close()
            else:
                response.release()
        finally:
            self._slots.release()

    async def _refusal(self, response: aiohttp.ClientResponse, secrets: list[str]) -> ApiError:
        """The error an upstream's non-200 answer stands for, its message made safe."""
        status = response.status
        if 300 <= status < 400:
            where = redact_url(response.headers.get("Location", "elsewhere"))
            log.warning("upstream %s redirected to %s; not followed", self.name, where)
            return ApiError.server(
                f"upstream redirected the request to {where} (HTTP {status}); the bridge "
                f"does not follow redirects: point the provider's base_url at the final "
                f"address (it is {self.display_url})",
                code="invalid_prompt",
            )
        try:
            payload = await read_bounded(response, ERROR_BODY_LIMIT) or b""
        except (aiohttp.ClientError, TimeoutError):
            payload = b""
        message, code = error_message(payload, response.charset)
        message = clip(redact(message, secrets)) or f"HTTP {status}"
        error = upstream_error(
            status,
            message,
            code,
            parse_retry_after(response.headers.get("Retry-After")),
            url=self.display_url,
        )
        level = logging.WARNING if status in (401, 403, 404) else logging.INFO
        log.log(
            level, "upstream %s (%s) answered %s: %s", self.name, self.display_url, status, message
        )
        return error


class Sent:
    """A request `UpstreamClient.send` started: taken up by `stream(sent=...)` once, or
    abandoned (its task cancelled, or its response closed and its slot given back)."""

    __slots__ = ("_client", "_taken", "_task", "secrets")

    def __init__(
        self,
        client: UpstreamClient,
        task: asyncio.Future[aiohttp.ClientResponse],
        secrets: list[str],
    ) -> None:
        self._client = client
        self._task = task
        self._taken = False
        self.secrets = secrets

    async def take(self) -> aiohttp.ClientResponse:
        """The response (ApiError when the provider could not be reached); from here on
        the taker finishes it."""
        self._taken = True
        try:
            return await self._task
        except asyncio.CancelledError:
            # Cancelled just as the answer came: it is nobody's to finish but this.
            self._finish_answered()
            raise

    def abandon(self) -> None:
        """Never taken up: nothing of it may be left holding a connection or a slot."""
        if self._taken:
            return
        self._taken = True
        if not self._task.done():
            self._task.cancel()  # _post gives its slot back
        else:
            self._finish_answered()

    def _finish_answered(self) -> None:
        """The response finished, if the request got one."""
        task = self._task
        if task.done() and not task.cancelled() and task.exception() is None:
            self._client.finish(task.result())
