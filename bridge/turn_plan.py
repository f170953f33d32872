"""A turn's first stage: the request checked, its conversation found, translated for the
provider, and everything the later stages need made ready (bridge.turn runs them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDictProxy

from bridge.body import UpstreamBody
from bridge.config import Config, ModelConfig
from bridge.conversation import (
    PlannedTurn,
    Prefix,
    conversation_history,
    plan_turn,
    resolve_item_references,
)
from bridge.errors import duplicate_item
from bridge.metrics import Metrics
from bridge.providers import PROFILES
from bridge.records import item_id_of, repeated_id
from bridge.request_rules import conversation_of, keyless_model, refuse_unsupported, unknown_model
from bridge.response_template import (
    ENCRYPTED_REASONING,
    echo_tools_off_loop,
    response_template,
    wants_summary,
)
from bridge.store.protocol import Store
from bridge.translate.stream import StreamTranslator
from bridge.turn_record import TurnRecorder
from bridge.turn_trace import TurnRing
from bridge.turns import TurnsInFlight
from bridge.upstream import UpstreamClient
from bridge.upstream_body import Truncation, encode_upstream_body
from bridge.wire.responses import ResponsesRequest

log = logging.getLogger(__name__)


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


@dataclass(slots=True)
class TurnParts:
    """What planning a turn made."""

    request: ResponsesRequest
    items: list[Any]
    model: ModelConfig
    planned: PlannedTurn
    translator: StreamTranslator
    recorder: TurnRecorder
    body: UpstreamBody
    # The body's own messages encoded, for a WebSocket's next turn (keep_messages).
    messages: list[bytes] | None
    generate: bool
    truncation: Truncation | None
    # Whether the provider is asked to stream (else for one JSON answer).
    streamed: bool = True


async def plan_parts(
    context: TurnContext,
    req: ResponsesRequest,
    items: list[Any],
    *,
    prefix: Prefix | None,
    generate: bool,
    keep_messages: bool,
    large: bool,
) -> TurnParts:
    """The turn's parts for a parsed request (see Turn.plan)."""
    config, store, client = context.config, context.store, context.client
    model = config.models.get(req.model)
    if model is None:
        raise unknown_model(config, req.model)
    refuse_unsupported(req)
    store.health.check_usable()  # every turn is recorded: none starts on an unusable schema
    provider = config.providers[model.provider]
    if model.provider not in context.upstreams:
        raise keyless_model(config, req.model)
    streamed = needs_events(context.transport, req) or not PROFILES[provider.profile].whole_answers
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
        stream=streamed,
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
        body_size=encoded.body.size,
    )
    truncation = None
    if req.truncation == "auto" and generate:
        earlier: Sequence[bytes] = ()
        if prefix is not None:
            earlier = prefix.pieces[:-1] if replaces_last else prefix.pieces
        truncation = Truncation(plan.body, context.label, plan.context_start, earlier)
    return TurnParts(
        req,
        items,
        model,
        planned,
        translator,
        recorder,
        encoded.body,
        encoded.messages,
        generate,
        truncation,
        streamed,
    )


def needs_events(transport: str, req: ResponsesRequest) -> bool:
    """Whether the turn's client takes its events as they come: a stream, a WebSocket, a
    background response (its followers); not a JSON answer or a compaction's summary."""
    return transport not in ("http", "compaction") or bool(req.stream) or bool(req.background)


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
