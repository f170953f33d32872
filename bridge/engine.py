"""The turn engine: one response's life, the same for every transport.

    start events -> upstream attempts (retried while nothing was output, each from fresh
    state) -> close the items -> the store's write -> the terminal event

Transports (SSE over HTTP, a WebSocket, or nothing for a non-streaming request) give it a
sink that writes events. Every event is numbered and written under one lock, so sequence
numbers leave strictly increasing, heartbeats included, and nothing follows the terminal
event. Whatever fails once the turn has started, the turn ends with response.failed and is
recorded as failed: an error never turns into a second HTTP response or a torn stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.body import UpstreamBody
from bridge.errors import ApiError
from bridge.relay import Tap, encode_frames, pump
from bridge.translate.stream import StreamTranslator
from bridge.turns import TurnAborted, TurnsInFlight
from bridge.upstream import UpstreamClient
from bridge.wire.events import ResponseEvent

if TYPE_CHECKING:
    from bridge.debug_turns import TurnTrace
    from bridge.metrics import TurnObserver

log = logging.getLogger(__name__)

# Writes events to the client; raises ClientGone when the client cannot take them.
EventSink = Callable[[list[ResponseEvent]], Awaitable[None]]
# Records the ended turn; True when it was stored.
Recorder = Callable[[], Awaitable[bool]]
# The upstream body made shorter after the provider refused its length.
Shorten = Callable[[ApiError], Awaitable[UpstreamBody | None]]

# First retry after about this many seconds, doubling each time.
RETRY_BACKOFF = 0.5

SHUTTING_DOWN = ApiError.server(
    "responses-bridge is shutting down; send the request again in a moment", status=503
)


class ClientGone(Exception):
    """The client went away or stopped reading; nothing more can be sent to it."""

    def __init__(self, reason: str, *, record: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # A client that stopped reading (its connection is still open) leaves a turn that
        # is recorded as failed; one that disconnected leaves none.
        self.record = record


class Emitter:
    """Numbers and writes a turn's events in order, and fills silences with heartbeats."""

    def __init__(
        self,
        sink: EventSink,
        translator: StreamTranslator,
        interval: float,
        trace: TurnTrace | None = None,
    ) -> None:
        self._sink = sink
        self._trace = trace
        self._translator = translator
        self._interval = interval
        self._lock = asyncio.Lock()
        self._last_write = time.monotonic()
        self._beats: asyncio.Task[None] | None = None
        self.ended = False

    async def send(self, produce: Callable[[], list[ResponseEvent]]) -> None:
        """Run `produce` (which numbers events) and write what it made, under the lock."""
        async with self._lock:
            if self.ended:
                return
            events = produce()
            if events:
                await self._write(events)

    async def end(self, produce: Callable[[], list[ResponseEvent]]) -> None:
        """The terminal event: written last, and nothing after it."""
        async with self._lock:
            if self.ended:
                return
            self.ended = True
            self._stop_beats()
            await self._write(produce())

    async def _write(self, events: list[ResponseEvent]) -> None:
        self._last_write = time.monotonic()
        if self._trace is not None:
            self._trace.sent(events, encode_frames)
        await self._sink(events)

    def start_beats(self) -> None:
        self._beats = asyncio.create_task(self._beat())

    def _stop_beats(self) -> None:
        if self._beats is not None and self._beats is not asyncio.current_task():
            self._beats.cancel()

    async def close(self) -> None:
        self._stop_beats()
        if self._beats is not None:
            with contextlib.suppress(asyncio.CancelledError, ClientGone):
                await self._beats

    async def _beat(self) -> None:
        # Thinking models may be silent for minutes; clients time out on missing events.
        while not self.ended:
            await asyncio.sleep(max(0.0, self._last_write + self._interval - time.monotonic()))
            if time.monotonic() - self._last_write >= self._interval:
                await self.send(lambda: [self._translator.heartbeat()])


@dataclass(slots=True)
class Turn:
    """What a response needs once the request is understood."""

    upstream: UpstreamClient
    body: UpstreamBody
    translator: StreamTranslator
    record: Recorder
    # Seconds of silence before a heartbeat event; None: none are sent.
    heartbeat_interval: float | None
    # The client's own Authorization header, for providers with forward_client_key.
    authorization: str | None = None
    # False: answered at once with an empty completed response, the upstream never asked
    # (a WebSocket's warm-up, `generate: false`).
    generate: bool = True
    # `truncation: "auto"`: the body without its oldest turns, for the provider's
    # context-length refusal (None: nothing can go); tried once.
    shorten: Shorten | None = None
    # Kept for GET /debug/turns ([debug] keep_turns), when on.
    trace: TurnTrace | None = None
    # Measures it for GET /metrics.
    observer: TurnObserver | None = None


async def run_turn(turn: Turn, sink: EventSink, turns: TurnsInFlight) -> ApiError | None:
    """Run a turn to its end; returns the error it failed with (None: completed or
    incomplete). ClientGone and cancellation (the client disconnected) propagate."""
    translator = turn.translator
    emitter = Emitter(sink, translator, turn.heartbeat_interval or 0.0, turn.trace)
    try:
        await emitter.send(translator.start)
        if turn.heartbeat_interval is not None:
            emitter.start_beats()
        try:
            return await turns.run(_attempts(turn, emitter), lambda: emitter.ended)
        except TurnAborted:
            await _fail(turn, emitter, SHUTTING_DOWN)
            return SHUTTING_DOWN
        except ClientGone as gone:
            if gone.record:
                log.warning("response %s: %s; turn ended", translator.response.id, gone.reason)
                translator.mark_failed(ApiError.server(f"the client {gone.reason}"))
                await asyncio.shield(_record(turn))
            raise
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # the turn's boundary: a bug must still end it cleanly
            log.exception("response %s failed inside the bridge", translator.response.id)
            error = ApiError.server(
                f"the bridge failed during this response ({type(exc).__name__}: {exc}); "
                "see its log",
                status=500,
            )
            if not emitter.ended:
                try:
                    await _fail(turn, emitter, error)
                except ClientGone:
                    raise
                except Exception:
                    # Even response.failed could not be written: the transport ends the
                    # stream (the failure is in the log twice).
                    log.exception("response %s could not end failed", translator.response.id)
                    raise
            return error
    finally:
        await emitter.close()
        if turn.trace is not None:
            turn.trace.status = translator.response.status
        if turn.observer is not None:
            turn.observer.ended(translator.response)


async def _attempts(turn: Turn, emitter: Emitter) -> ApiError | None:
    """Upstream attempts until one ends the turn; retried only while nothing was output."""
    translator = turn.translator
    attempt = 0
    body = turn.body
    shorten = turn.shorten
    while True:
        if turn.generate:
            tap: Tap | None = None
            if turn.trace is not None:
                turn.trace.upstream_request(turn.upstream.display_url, body.as_bytes())
                tap = turn.trace.upstream_data
            if turn.observer is not None:
                tap = turn.observer.tap(tap)
            error = await pump(
                turn.upstream, body, translator, emitter.send, turn.authorization, tap
            )
            if error is not None and turn.trace is not None:
                turn.trace.upstream_data(f"\n[ended with {error.code}: {error.message}]\n".encode())
        else:
            translator.answered_without_generating()
            error = None
        if error is None:
            try:
                await emitter.send(translator.close)
            except ApiError as exc:  # the stream had no finish_reason
                error = exc
            else:
                error = translator.invalid_output
            if error is None:
                stored = await _record(turn)
                if not stored:
                    translator.response.store = False
                await emitter.end(translator.terminal)
                return None
        if (
            shorten is not None
            and error.code == "context_length_exceeded"
            and not translator.produced_output
        ):
            shorter = await shorten(error)
            shorten = None
            if shorter is not None:
                if turn.observer is not None:
                    turn.observer.upstream_error(error, retried=True)
                body = shorter
                translator.restart()
                continue
        wait = _retry_wait(error, attempt, turn.upstream, translator)
        if turn.observer is not None:
            turn.observer.upstream_error(error, retried=wait is not None)
        if wait is None:
            await _fail(turn, emitter, error)
            return error
        log.info("retrying upstream %s in %.1fs: %s", turn.upstream.name, wait, error.message)
        await asyncio.sleep(wait)
        translator.restart()
        attempt += 1


def _retry_wait(
    error: ApiError, attempt: int, upstream: UpstreamClient, translator: StreamTranslator
) -> float | None:
    """Seconds to wait before trying again, or None when this error must not be retried.

    Only while nothing of the answer was produced (so nothing reached the client), only for
    retryable errors, a bounded number of times, and never past max_retry_wait.
    """
    if not error.retryable or attempt >= upstream.max_retries or translator.produced_output:
        return None
    if error.retry_after is not None:
        return error.retry_after if error.retry_after <= upstream.max_retry_wait else None
    backoff = RETRY_BACKOFF * 2.0**attempt * random.uniform(0.8, 1.2)
    return min(backoff, upstream.max_retry_wait)


async def _record(turn: Turn) -> bool:
    """The store's write; a failure of it is the recorder's to log, never the turn's."""
    started = time.monotonic()
    stored = False
    try:
        stored = await turn.record()
    except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        raise
    except Exception:
        log.exception("recording response %s failed", turn.translator.response.id)
    if turn.observer is not None:
        turn.observer.stored(time.monotonic() - started, stored)
    return stored


async def _fail(turn: Turn, emitter: Emitter, error: ApiError) -> None:
    """End with response.failed, recorded first (as failed)."""
    translator = turn.translator
    translator.mark_failed(error)
    stored = await _record(turn)
    if not stored:
        translator.response.store = False
    await emitter.end(translator.failed)
