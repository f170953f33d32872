"""One response's life, the same for every transport, in four stages:

    plan    the request checked, its conversation found, translated for the provider
    relay   upstream attempts (retried while nothing was output, each from fresh state),
            their events sent as they come
    record  the store's write, before the final event
    end     the terminal event: response.completed, .incomplete or .failed

A transport (SSE over HTTP, a WebSocket, a background run, or nothing for a JSON answer)
makes the turn with `Turn.plan` and runs it with a sink that writes events. Every event is
numbered and written in order (bridge.emitter), and nothing follows the terminal event.
Whatever fails once the turn has started, the turn ends with response.failed and is
recorded as failed: an error never turns into a second HTTP response or a torn stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from bridge.conversation import (
    Prefix,
)
from bridge.emitter import ClientGone, Emitter, EventSink
from bridge.errors import ApiError
from bridge.metrics import TurnObserver
from bridge.relay import Tap, pump, send_early
from bridge.store import StoreError
from bridge.turn_plan import TurnContext, TurnParts, needs_events, plan_parts
from bridge.turn_trace import TurnTrace
from bridge.turns import TurnAborted
from bridge.upstream import Sent
from bridge.wire.events import ResponseEvent, ResponseObject
from bridge.wire.responses import ResponsesRequest

log = logging.getLogger(__name__)

# First retry after about this many seconds, doubling each time.
RETRY_BACKOFF = 0.5

SHUTTING_DOWN = ApiError.server(
    "responses-bridge is shutting down; send the request again in a moment", status=503
)


class Turn:
    """A response from its plan to its end (see the module's docstring)."""

    def __init__(self, context: TurnContext, parts: TurnParts) -> None:
        self.context = context
        self.request = parts.request
        self.items = parts.items
        self.model = parts.model
        self.planned = parts.planned
        self.translator = parts.translator
        self._recorder = parts.recorder
        self._body = parts.body
        # The body's own messages encoded, for a WebSocket's next turn (keep_messages).
        self.messages = parts.messages
        # False: answered at once with an empty completed response, the upstream never
        # asked (a WebSocket's warm-up, `generate: false`).
        self._generate = parts.generate
        self._truncation = parts.truncation
        # False: the provider is asked for one JSON answer (nothing needs the events).
        self._streamed = parts.streamed
        self.upstream = context.upstreams[parts.model.provider]
        provider = context.config.providers[parts.model.provider]
        # The client's own Authorization header, for a provider with forward_client_key.
        self._authorization = (
            context.headers.get("Authorization") if provider.forward_client_key else None
        )
        # Heartbeats only for a client that takes the events as they come. A background
        # turn's followers get the stream's pings instead (a heartbeat carries the whole
        # output so far, and would be stored with the events); a JSON answer has no events.
        self._heartbeat: float | None = (
            context.config.server.heartbeat_interval
            if needs_events(context.transport, parts.request) and not parts.request.background
            else None
        )
        self.trace: TurnTrace | None = None
        self.observer: TurnObserver | None = None
        # The first attempt's request, sent before the client's first events (run).
        self._sent: Sent | None = None

    @property
    def response(self) -> ResponseObject:
        return self.translator.response

    # -- plan ----------------------------------------------------------------------

    @classmethod
    async def plan(
        cls,
        context: TurnContext,
        request: ResponsesRequest,
        items: list[Any],
        *,
        raw: bytes = b"",
        prefix: Prefix | None = None,
        generate: bool = True,
        keep_messages: bool = False,
        large: bool = False,
    ) -> Turn:
        """The turn for a parsed request (`raw`: its body as it came, for tracing);
        ApiError for a request that cannot be served. A WebSocket passes the `prefix` it
        kept of the conversation, if any, and asks to `keep_messages`. A `large` request
        does its CPU-bound steps in threads, so other streams go on meanwhile. A store that
        cannot be used while planning is a 503."""
        try:
            parts = await plan_parts(
                context,
                request,
                items,
                prefix=prefix,
                generate=generate,
                keep_messages=keep_messages,
                large=large,
            )
        except StoreError as exc:
            raise ApiError.server(
                f"The bridge's database is unavailable: {exc}", status=503
            ) from None
        turn = cls(context, parts)
        turn._observe(raw)
        return turn

    def _observe(self, raw: bytes) -> None:
        """Kept for GET /debug/turns and measured for GET /metrics, from here on."""
        context, model = self.context, self.request.model
        if context.ring is not None:
            self.trace = context.ring.begin(
                response_id=self.response.id,
                client=context.client,
                model=model,
                provider=self.model.provider,
                transport="websocket" if context.transport == "websocket" else "http",
                request=raw,
            )
        if context.metrics is not None:
            self.observer = context.metrics.observe(model, self.model.provider, context.transport)

    # -- relay, record, end ----------------------------------------------------------

    async def run(self, sink: EventSink) -> ApiError | None:
        """Run the turn to its end; the error it failed with (None: completed or
        incomplete). ClientGone and cancellation (the client disconnected) propagate."""
        translator = self.translator
        emitter = Emitter(sink, translator, self._heartbeat, self.trace)
        try:
            if self._generate:
                # The provider starts on the request while the client's stream opens: its
                # head and first events cost a few tenths of a millisecond, which the
                # first token need not wait for. Two loop steps put the request on its
                # way (aiohttp writes a body in a task of its own before Python 3.12).
                self._sent = send_early(
                    self.upstream, self._body, self._authorization, whole=not self._streamed
                )
                if self._sent is not None:
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
            self._recorder.begin()
            await emitter.send(translator.start)
            emitter.start_beats()
            try:
                return await self.context.turns.run(self._relay(emitter), lambda: emitter.ended)
            except TurnAborted:
                await self._fail(emitter, SHUTTING_DOWN)
                return SHUTTING_DOWN
            except ClientGone as gone:
                if gone.record:
                    log.warning("response %s: %s; turn ended", self.response.id, gone.reason)
                    translator.mark_failed(ApiError.server(f"the client {gone.reason}"))
                    await asyncio.shield(self.record())
                    self._recorder.remember()
                raise
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # the turn's boundary: a bug must still end it cleanly
                return await self._failed_inside(emitter, exc)
        finally:
            if self._sent is not None:
                self._sent.abandon()
                self._sent = None
            await emitter.close()
            if self.trace is not None:
                self.trace.status = self.response.status
            if self.observer is not None:
                self.observer.ended(self.response)

    async def _relay(self, emitter: Emitter) -> ApiError | None:
        """Upstream attempts until one ends the turn; retried only while nothing was
        output. Then the record, then the end."""
        translator = self.translator
        attempt = 0
        body = self._body
        truncation = self._truncation
        while True:
            error = await self._attempt(body, emitter)
            if error is None:
                try:
                    await emitter.send(translator.close)
                except ApiError as exc:  # the stream had no finish_reason
                    error = exc
                else:
                    error = translator.invalid_output
                if error is None:
                    await self._end(emitter)
                    return None
            if (
                truncation is not None
                and error.code == "context_length_exceeded"
                and not translator.produced_output
            ):
                shorter = await truncation.shorter(error)
                truncation = None
                if shorter is not None:
                    self._note_upstream_error(error, retried=True)
                    body = shorter
                    translator.restart()
                    continue
            wait = self._retry_wait(error, attempt)
            self._note_upstream_error(error, retried=wait is not None)
            if wait is None:
                await self._fail(emitter, error)
                return error
            log.info("retrying upstream %s in %.1fs: %s", self.upstream.name, wait, error.message)
            await asyncio.sleep(wait)
            translator.restart()
            attempt += 1

    async def _attempt(self, body: Any, emitter: Emitter) -> ApiError | None:
        """One upstream request, its events sent as they come; the error it ended with."""
        if not self._generate:
            self.translator.answered_without_generating()
            return None
        tap: Tap | None = None
        if self.trace is not None:
            self.trace.upstream_request(self.upstream.display_url, body.as_bytes())
            tap = self.trace.upstream_data
        if self.observer is not None:
            tap = self.observer.tap(tap)
        sent, self._sent = self._sent, None
        error = await pump(
            self.upstream,
            body,
            self.translator,
            emitter.send,
            self._authorization,
            tap,
            whole=not self._streamed,
            sent=sent,
            direct=emitter if emitter.direct else None,
        )
        if error is not None and self.trace is not None:
            self.trace.upstream_data(f"\n[ended with {error.code}: {error.message}]\n".encode())
        return error

    def _retry_wait(self, error: ApiError, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None when this error must not be
        retried: only while nothing of the answer was produced (so nothing reached the
        client), only for retryable errors, a bounded number of times, and never past
        max_retry_wait."""
        upstream = self.upstream
        if (
            not error.retryable
            or attempt >= upstream.max_retries
            or self.translator.produced_output
        ):
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= upstream.max_retry_wait else None
        backoff = RETRY_BACKOFF * 2.0**attempt * random.uniform(0.8, 1.2)
        return min(backoff, upstream.max_retry_wait)

    def _note_upstream_error(self, error: ApiError, *, retried: bool) -> None:
        if self.observer is not None:
            self.observer.upstream_error(error, retried=retried)

    async def record(self) -> bool:
        """The store's write; a failure of it is logged, never the turn's."""
        started = time.monotonic()
        stored = False
        try:
            stored = await self._recorder.write()
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            log.exception("recording response %s failed", self.response.id)
        if self.observer is not None:
            self.observer.stored(time.monotonic() - started, stored)
        return stored

    async def _end(self, emitter: Emitter) -> None:
        """Recorded, then the terminal event (saying whether it was kept)."""
        await self._recorded_then(emitter, self.translator.terminal)

    async def _fail(self, emitter: Emitter, error: ApiError) -> None:
        """End with response.failed, recorded first (as failed)."""
        self.translator.mark_failed(error)
        await self._recorded_then(emitter, self.translator.failed)

    async def _recorded_then(
        self, emitter: Emitter, final: Callable[[], list[ResponseEvent]]
    ) -> None:
        """Record the turn, then send its `final` events; the replay cache learns the
        stored input once they are out (the client need not wait for that)."""
        if not await self.record():
            self.response.store = False
        try:
            await emitter.end(final)
        finally:
            self._recorder.remember()

    async def _failed_inside(self, emitter: Emitter, exc: Exception) -> ApiError:
        """A bug inside the bridge: logged, and the turn still ends failed."""
        log.exception("response %s failed inside the bridge", self.response.id)
        error = ApiError.server(
            f"the bridge failed during this response ({type(exc).__name__}: {exc}); see its log",
            status=500,
        )
        if not emitter.ended:
            try:
                await self._fail(emitter, error)
            except ClientGone:
                raise
            except Exception:
                # Even response.failed could not be written: the transport ends the stream
                # (the failure is in the log twice).
                log.exception("response %s could not end failed", self.response.id)
                raise
        return error
