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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy

from bridge.config import Config, ModelConfig
from bridge.conversation import (
    PlannedTurn,
    Prefix,
    conversation_history,
    plan_turn,
    resolve_item_references,
)
from bridge.emitter import ClientGone, Emitter, EventSink
from bridge.errors import ApiError, duplicate_item
from bridge.metrics import Metrics, TurnObserver
from bridge.providers import PROFILES
from bridge.records import item_id_of, repeated_id
from bridge.relay import Tap, pump
from bridge.request_rules import conversation_of, keyless_model, refuse_unsupported, unknown_model
from bridge.response_template import (
    ENCRYPTED_REASONING,
    echo_tools_off_loop,
    response_template,
    wants_summary,
)
from bridge.store import StoreError
from bridge.store.protocol import Store
from bridge.translate.stream import StreamTranslator
from bridge.turn_record import TurnRecorder
from bridge.turn_trace import TurnRing, TurnTrace
from bridge.turns import TurnAborted, TurnsInFlight
from bridge.upstream import UpstreamClient
from bridge.upstream_body import Truncation, encode_upstream_body
from bridge.wire.events import ResponseObject
from bridge.wire.responses import ResponsesRequest

log = logging.getLogger(__name__)

# First retry after about this many seconds, doubling each time.
RETRY_BACKOFF = 0.5

SHUTTING_DOWN = ApiError.server(
    "responses-bridge is shutting down; send the request again in a moment", status=503
)


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What a turn takes from the application and its request, resolved once: the client's
    identity is the one every read and write of the turn uses."""

    config: Config
    store: Store
    upstreams: dict[str, UpstreamClient]
    turns: TurnsInFlight
    # Who the client is (bridge.access.check_client_key), for scoping what is stored.
    client: str
    headers: CIMultiDictProxy[str]
    # Names the turn in log lines: the request id (and the turn's number on a socket).
    label: str
    # "http", "background", "websocket" or "compaction", as the metrics count turns.
    transport: str
    ring: TurnRing | None = None
    metrics: Metrics | None = None


class Turn:
    """A response from its plan to its end (see the module's docstring)."""

    def __init__(
        self,
        context: TurnContext,
        request: ResponsesRequest,
        items: list[Any],
        model: ModelConfig,
        planned: PlannedTurn,
        translator: StreamTranslator,
        recorder: TurnRecorder,
        body: Any,
        *,
        messages: list[bytes] | None,
        generate: bool,
        truncation: Truncation | None,
    ) -> None:
        self.context = context
        self.request = request
        self.items = items
        self.model = model
        self.planned = planned
        self.translator = translator
        self._recorder = recorder
        self._body = body
        # The body's own messages encoded, for a WebSocket's next turn (keep_messages).
        self.messages = messages
        # False: answered at once with an empty completed response, the upstream never
        # asked (a WebSocket's warm-up, `generate: false`).
        self._generate = generate
        self._truncation = truncation
        self.upstream = context.upstreams[model.provider]
        provider = context.config.providers[model.provider]
        # The client's own Authorization header, for a provider with forward_client_key.
        self._authorization = (
            context.headers.get("Authorization") if provider.forward_client_key else None
        )
        # A background turn's followers get the stream's pings instead: a heartbeat carries
        # the whole output so far, and would be stored with the events.
        self._heartbeat: float | None = (
            None if request.background else context.config.server.heartbeat_interval
        )
        self.trace: TurnTrace | None = None
        self.observer: TurnObserver | None = None

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
            turn = await cls._plan(
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
        turn._observe(raw)
        return turn

    @classmethod
    async def _plan(
        cls,
        context: TurnContext,
        req: ResponsesRequest,
        items: list[Any],
        *,
        prefix: Prefix | None,
        generate: bool,
        keep_messages: bool,
        large: bool,
    ) -> Turn:
        config, store, client = context.config, context.store, context.client
        model = config.models.get(req.model)
        if model is None:
            raise unknown_model(config, req.model)
        refuse_unsupported(req)
        store.health.check_usable()  # every turn is recorded: none starts on an unusable schema
        provider = config.providers[model.provider]
        if model.provider not in context.upstreams:
            raise keyless_model(config, req.model)
        items = await resolve_item_references(store, items, client)
        conversation_id = conversation_of(req)
        history = None
        if conversation_id is not None:
            history = await conversation_history(store, conversation_id, client)
            items = _with_ids(items)
        planned = await plan_turn(
            store,
            req,
            items,
            config.upstream_model(req.model),
            provider,
            client=client,
            headers=context.headers,
            images=config.takes_images(req.model),
            prefix=prefix,
            stored=history,
            large=large,
        )
        plan = planned.plan
        replaces_last = plan.builder is not None and plan.builder.replaces_last
        encoded = await encode_upstream_body(
            plan.body,
            context_start=plan.context_start,
            prefix=prefix,
            replaces_last=replaces_last,
            keep_messages=keep_messages,
            large=large,
        )
        if config.server.log_bodies and log.isEnabledFor(logging.DEBUG):
            log.debug("upstream request for %s: %s", context.label, encoded.body.as_bytes())
        translator = StreamTranslator(
            response_template(req, await echo_tools_off_loop(req.tools or [], large)),
            plan.tool_map,
            include_encrypted_reasoning=ENCRYPTED_REASONING in (req.include or ()),
            reasoning_summary=wants_summary(req, model.reasoning_summary),
            quirks=provider.quirks,
            reasoning_events=config.server.reasoning_events,
            dialect=PROFILES[provider.profile].dialect,
            output_check=plan.output_check,
        )
        if conversation_id is not None:
            translator.response.conversation = {"id": conversation_id}
        recorder = TurnRecorder(
            store,
            req,
            items,
            translator.response,
            planned,
            context.headers,
            conversation_id=conversation_id,
            large=large,
        )
        truncation = None
        if req.truncation == "auto" and generate:
            earlier: Sequence[bytes] = ()
            if prefix is not None:
                earlier = prefix.pieces[:-1] if replaces_last else prefix.pieces
            truncation = Truncation(plan.body, context.label, plan.context_start, earlier)
        return cls(
            context,
            req,
            items,
            model,
            planned,
            translator,
            recorder,
            encoded.body,
            messages=encoded.messages,
            generate=generate,
            truncation=truncation,
        )

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
                raise
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # the turn's boundary: a bug must still end it cleanly
                return await self._failed_inside(emitter, exc)
        finally:
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
        error = await pump(
            self.upstream, body, self.translator, emitter.send, self._authorization, tap
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
        if not await self.record():
            self.response.store = False
        await emitter.end(self.translator.terminal)

    async def _fail(self, emitter: Emitter, error: ApiError) -> None:
        """End with response.failed, recorded first (as failed)."""
        self.translator.mark_failed(error)
        if not await self.record():
            self.response.store = False
        await emitter.end(self.translator.failed)

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


def _with_ids(items: list[Any]) -> list[Any]:
    """Each input item with an id (one id per item, the same in the response's input_items
    and in the conversation); ApiError for an id given twice."""
    items = [
        {**item, "id": item_id_of(item)} if isinstance(item, dict) and not item.get("id") else item
        for item in items
    ]
    repeated = repeated_id([item["id"] if isinstance(item, dict) else "" for item in items])
    if repeated is not None:
        raise duplicate_item(*repeated, "input")
    return items
