"""One turn: the upstream stream read, parsed and translated, events handed to a sink."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

import aiohttp
import msgspec

from bridge.errors import ApiError
from bridge.sse import SSEEvent, SSEParser, SSEProtocolError
from bridge.translate.stream import StreamTranslator
from bridge.upstream import UpstreamClient, connection_error
from bridge.wire.chat import CHUNK_DECODER, COMPLETION_DECODER
from bridge.wire.events import ResponseEvent

log = logging.getLogger(__name__)

EventSink = Callable[[list[ResponseEvent]], Awaitable[None]]
# Runs once the turn has ended and before its final event is sent (the store's write).
BeforeFinal = Callable[[], Awaitable[None]]

_DONE = b"[DONE]"
DRAIN_SECONDS = 1.0
# First retry after about this many seconds, doubling each time.
RETRY_BACKOFF = 0.5
_ENCODER = msgspec.json.Encoder()


def encode_frames(events: list[ResponseEvent]) -> bytes:
    """Events as SSE frames (`event:` and `data:` lines), ready for one write."""
    buffer = bytearray()
    for event in events:
        buffer += event.frame_prefix
        _ENCODER.encode_into(event, buffer, -1)
        buffer += b"\n\n"
    return bytes(buffer)


def _malformed(detail: str) -> ApiError:
    return ApiError(
        502,
        f"upstream sent a malformed stream chunk: {detail}",
        type="server_error",
        code="server_error",
    )


async def relay_turn(
    upstream: UpstreamClient,
    body: bytes,
    translator: StreamTranslator,
    sink: EventSink,
    before_final: BeforeFinal,
    *,
    authorization: str | None = None,
) -> ApiError | None:
    """Run the upstream request to its end; returns the error the turn failed with, if any
    (non-streaming answers report it as the HTTP error).

    The final event (completed, incomplete or failed) always goes to the sink, after
    `before_final` ran, except when the sink itself fails (the client went away), which
    propagates.
    """
    attempt = 0
    while True:
        try:
            error = await _pump(upstream, body, translator, sink, before_final, authorization)
        except ApiError as exc:
            error = exc
        if translator.ended:
            # The final event went out: completed, incomplete, or failed at the very end
            # (a stream without a finish_reason).
            return translator.failure
        assert error is not None
        wait = _retry_wait(error, attempt, upstream, translator)
        if wait is None:
            break
        log.info("retrying upstream %s in %.1fs: %s", upstream.name, wait, error.message)
        await asyncio.sleep(wait)
        attempt += 1
    await _deliver_final(translator.fail(error), before_final, sink)
    return error


def _retry_wait(
    error: ApiError, attempt: int, upstream: UpstreamClient, translator: StreamTranslator
) -> float | None:
    """Seconds to wait before trying again, or None when this error must not be retried.

    Only while nothing of the answer was produced (so nothing reached the client), only for
    retryable errors, a bounded number of times, and never past max_retry_wait.
    """
    if not error.retryable or attempt >= upstream.max_retries or translator.response.output:
        return None
    if error.retry_after is not None:
        after = float(error.retry_after)
        return after if after <= upstream.max_retry_wait else None
    backoff = RETRY_BACKOFF * 2.0**attempt * random.uniform(0.8, 1.2)
    return min(backoff, upstream.max_retry_wait)


async def _deliver_final(
    events: list[ResponseEvent], before_final: BeforeFinal, sink: EventSink
) -> None:
    """The last events of a turn, sent once `before_final` (the store's write) is done."""
    await before_final()
    await sink(events)


async def _pump(
    upstream: UpstreamClient,
    body: bytes,
    translator: StreamTranslator,
    sink: EventSink,
    before_final: BeforeFinal,
    authorization: str | None,
) -> ApiError | None:
    parser = SSEParser()
    async with upstream.stream(body, authorization) as response:
        if response.content_type == "application/json":
            return await _whole_answer(response, translator, sink, before_final)
        done = False
        try:
            async for data in response.content.iter_any():
                done, error = await _forward(parser.feed(data), translator, sink)
                if error is not None:
                    return error
                if done:
                    break
        except TimeoutError:
            return ApiError(
                504,
                f"upstream sent nothing for {upstream.idle_timeout:g} seconds",
                type="server_error",
                code="server_error",
            )
        except SSEProtocolError as exc:
            return _malformed(str(exc))
        except aiohttp.ClientError as exc:
            return connection_error(exc, upstream.url)
        if not done:
            # A last event without its blank line, then a stream with no [DONE]: fine
            # when a finish_reason came (a known provider quirk); failed otherwise.
            done, error = await _forward(parser.finish(), translator, sink)
            if error is not None:
                return error
            if not done and not translator.quirks.missing_done:
                return _malformed("the stream ended without data: [DONE]")
        await _deliver_final(translator.finish(), before_final, sink)
        if not response.content.at_eof():
            await _drain(response)
    return None


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows [DONE] (the chunked terminator) so the connection is reused.

    A server that keeps the body open after [DONE] gets a moment, then its connection is
    closed instead of pooled (see UpstreamClient.stream).
    """
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while await response.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        return


async def _whole_answer(
    response: aiohttp.ClientResponse,
    translator: StreamTranslator,
    sink: EventSink,
    before_final: BeforeFinal,
) -> ApiError | None:
    """A server that ignored `stream: true` and sent one JSON answer: translate it whole."""
    try:
        completion = COMPLETION_DECODER.decode(await response.read())
        translator.add(completion.as_chunk())
        events = translator.take()
    except msgspec.DecodeError as exc:
        return _malformed(str(exc))
    except ApiError as exc:
        return exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        return connection_error(exc, str(response.url))
    await sink(events)
    await _deliver_final(translator.finish(), before_final, sink)
    return None


async def _forward(
    events: list[SSEEvent], translator: StreamTranslator, sink: EventSink
) -> tuple[bool, ApiError | None]:
    """Translate one upstream read and send what it produced; whether [DONE] came, and
    the error that ended the stream."""
    start = 0
    while start < len(events):
        produced, done, error, start = _translate(events, translator, start)
        if produced:
            await sink(produced)
        if done or error is not None:
            return done, error
    return False, None


def _translate(
    events: list[SSEEvent], translator: StreamTranslator, start: int
) -> tuple[list[ResponseEvent], bool, ApiError | None, int]:
    """Responses events for upstream events from `start` on; whether [DONE] came; the error
    that ended it; where to go on from.

    All events of a read are taken together, so consecutive text deltas leave as one event,
    except that the answer's first output leaves at once (time to first token). Events
    produced before an error are still returned, so sequence numbers stay gapless.
    """
    first_output = not translator.response.output
    done = False
    error: ApiError | None = None
    index = start
    while index < len(events):
        data = events[index].data
        index += 1
        if data == _DONE:
            done = True
            break
        try:
            translator.add(CHUNK_DECODER.decode(data))
        except msgspec.DecodeError as exc:
            error = _malformed(str(exc))
            break
        except ApiError as exc:
            error = exc
            break
        if first_output and translator.response.output:
            break
    return translator.take(), done, error, index
