"""POST /v1/responses/compact: a conversation's window compacted by the upstream model.

The window is the request's stored chain (previous_response_id) and its input. What can go
is summarised by the model in one ordinary turn (run by the turn engine, so retries, error
mapping and the provider's replay rules are those of any response); the answer is the
Responses API's compacted response: the newest user message, one `compaction` item, and the
assistant turns whose tool calls are still open (bridge.translate.compaction). Nothing is
stored: the compacted window is the client's, to start a new chain from.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDictProxy

from bridge.app_keys import BODIES, CLIENT, CONFIG, REQUEST_LOG, STORE
from bridge.bodies import Share, read_body
from bridge.config import Config
from bridge.conversation import plan_turn, resolve_item_references
from bridge.emitter import discard
from bridge.errors import ApiError
from bridge.handlers import json_response
from bridge.records import item_id_of, normalize_input_item
from bridge.request_parsing import parse_request
from bridge.request_rules import unknown_model
from bridge.store import ChainNotFound
from bridge.store.protocol import Store
from bridge.translate.compaction import (
    Compacted,
    Window,
    encode_compaction,
    split_window,
    summary_request_input,
)
from bridge.translate.ids import new_id
from bridge.translate.reasoning import Reasoning
from bridge.turn import Turn
from bridge.turn_context import turn_context
from bridge.wire.events import MessageOutput, Usage
from bridge.wire.responses import ResponsesRequest

log = logging.getLogger(__name__)


class _CompactBody(msgspec.Struct, kw_only=True):
    """What the request must have before it is read as a response request."""

    model: str | None = None


_COMPACT_BODY = msgspec.json.Decoder(_CompactBody)


async def compact_response(request: web.Request) -> web.Response:
    """POST /v1/responses/compact {model, input?, previous_response_id?, instructions?}."""
    with request.app[BODIES].share() as share:
        return await _compact(request, share)


async def _compact(request: web.Request, share: Share) -> web.Response:
    app = request.app
    config = app[CONFIG]
    body = await read_body(
        request, share, seconds=config.server.body_timeout, limit=config.server.max_request_bytes
    )
    req, items = parse_request(_with_model_checked(body))
    entry = request[REQUEST_LOG]
    entry.model = req.model
    model = config.models.get(req.model)
    if model is None:
        raise unknown_model(config, req.model)
    entry.provider = model.provider
    store = app[STORE]
    client = request[CLIENT]
    window = await _window(store, req, items, client)
    if not window:
        raise ApiError.invalid("There is nothing to compact: give input or previous_response_id")
    split = split_window(window)
    headers = request.headers
    summary, usage = "", Usage()
    if split.has_history:
        summary, usage = await _summarise(request, req, split, client, entry.request_id)
    reasoning = await _kept_reasoning(store, config, req, split, client, headers)
    compaction = {
        "type": "compaction",
        "id": new_id("cmp"),
        "encrypted_content": encode_compaction(Compacted(summary, reasoning)),
    }
    output = _kept(split, compaction)
    entry.outcome = "compacted"
    entry.input_tokens, entry.output_tokens = usage.input_tokens, usage.output_tokens
    return json_response(
        {
            "id": new_id("resp"),
            "object": "response.compaction",
            "created_at": int(time.time()),
            "output": output,
            "usage": usage,
        }
    )


def _with_model_checked(body: bytes) -> bytes:
    """The body, once it is known to name a model (400 otherwise, as OpenAI answers)."""
    try:
        found = _COMPACT_BODY.decode(body)
    except msgspec.DecodeError:
        return body  # parse_request says what is wrong with it
    if not found.model:
        raise ApiError.invalid(
            "Missing required parameter: 'model'.", "model", code="missing_required_parameter"
        )
    return body


async def _window(store: Store, req: ResponsesRequest, items: list[Any], client: str) -> list[Any]:
    """The conversation to compact: the stored chain, then the input."""
    items = await resolve_item_references(store, items, client)
    if req.previous_response_id is None:
        return items
    try:
        chain = await store.chain(req.previous_response_id, client)
    except ChainNotFound as exc:
        raise ApiError(
            404,
            f"Previous response with id '{exc.response_id}' not found.",
            param="previous_response_id",
            code="previous_response_not_found",
        ) from None
    return [*chain.items, *items]


def _summary_request(req: ResponsesRequest, window: Window) -> ResponsesRequest:
    """The turn that asks for the summary: the window without its kept turns, then the
    summary prompt; the tools the client gave (a history of calls reads better with them)
    but none to call."""
    return ResponsesRequest(
        model=req.model,
        input=summary_request_input(window),
        instructions=req.instructions,
        tools=req.tools,
        tool_choice="none" if req.tools else None,
        store=False,
        prompt_cache_key=req.prompt_cache_key,
        reasoning=req.reasoning,
    )


async def _summarise(
    request: web.Request, req: ResponsesRequest, window: Window, client: str, label: str
) -> tuple[str, Usage]:
    """The model's summary of what goes, and what it cost; the turn's error otherwise."""
    summary_req = _summary_request(req, window)
    # The summarising turn is the compaction's own: not traced or counted as a response.
    context = dataclasses.replace(
        turn_context(request, label=f"{label} (compaction)", transport="compaction"),
        client=client,
        ring=None,
        metrics=None,
    )
    turn = await Turn.plan(context, summary_req, list(summary_req.input or ()))
    error = await turn.run(discard)
    if error is not None:
        raise error
    response = turn.response
    text = "".join(
        part.text
        for item in response.output
        if isinstance(item, MessageOutput)
        for part in item.content
    ).strip()
    if not text:
        raise ApiError.server(
            "the model answered the compaction request without a summary; try again"
        )
    return text, response.usage or Usage()


async def _kept_reasoning(
    store: Store,
    config: Config,
    req: ResponsesRequest,
    window: Window,
    client: str,
    headers: CIMultiDictProxy[str],
) -> dict[str, Reasoning]:
    """The reasoning of each kept tool-call turn, by call id: from its reasoning items, or
    where the client left them out, from the store (as a turn replaying it would find it)."""
    call_ids = set(window.kept_call_ids())
    if not call_ids:
        return {}
    model = config.models[req.model]
    whole = ResponsesRequest(model=req.model, input=list(window.items), tools=req.tools)
    planned = await plan_turn(
        store,
        whole,
        window.items,
        config.upstream_model(req.model),
        config.providers[model.provider],
        client=client,
        headers=headers,
    )
    found: dict[str, Reasoning] = {}
    for message in planned.plan.messages:
        calls = [call.id for call in message.tool_calls or () if call.id in call_ids]
        if calls and (message.reasoning_content or message.reasoning_details):
            reasoning = Reasoning(message.reasoning_content or "", message.reasoning_details)
            found.update(dict.fromkeys(calls, reasoning))
    return found


def _kept(window: Window, compaction: dict[str, Any]) -> list[dict[str, Any]]:
    """The compacted window: the newest user message, the compaction item, the kept turns;
    each item as the Responses API lists items (typed, with its id and status)."""
    output: list[dict[str, Any]] = []
    if window.newest_user is not None:
        output.append(_listed(window.items[window.newest_user]))
    output.append(compaction)
    output.extend(_listed(window.items[index]) for index in window.kept_turns)
    return output


def _listed(item: dict[str, Any]) -> dict[str, Any]:
    return normalize_input_item(item, item_id_of(item))
