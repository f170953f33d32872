"""A turn's place in its conversation: its scope, its chain (or the conversation it names,
or what a WebSocket kept), the reasoning recovered for its replayed turns, and the upstream
request planned from all of it."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from multidict import CIMultiDictProxy

from bridge.config import ProviderConfig
from bridge.errors import ApiError
from bridge.log_lines import some
from bridge.providers import PROFILES, Profile, shape_body
from bridge.scope import Scope, session_scope
from bridge.store import ChainNotFound, ReasoningQuery, StoreError
from bridge.store.protocol import Store
from bridge.translate.context import ContextDigest
from bridge.translate.errors import RequestError
from bridge.translate.gaps import ReasoningGap
from bridge.translate.messages import Continuation
from bridge.translate.request import ChatRequestPlan, translate_request
from bridge.wire.chat import ChatMessage
from bridge.wire.responses import ResponsesRequest

log = logging.getLogger(__name__)

# Conversations longer than this (items) are translated in a thread.
TRANSLATE_IN_THREAD = 20_000
# ... and tool lists this long: a tool costs the translation some forty times what an
# item does (100,000 tools held the loop 4 s).
TOOLS_IN_THREAD = 2000
_ITEM = msgspec.json.Decoder(Any)


def _references(items: list[Any]) -> list[tuple[int, Any]]:
    """(index, id) of each item_reference in the input: so typed, or (the specification's
    type may be null or left out) an item with an id and neither a type nor a role."""
    return [
        (index, item["id"])
        for index, item in enumerate(items)
        if isinstance(item, dict)
        and (
            item.get("type") == "item_reference"
            or (item.get("type") is None and "role" not in item and "id" in item)
        )
    ]


async def resolve_item_references(store: Store, items: list[Any], client: str) -> list[Any]:
    """The input with each `item_reference` replaced by the item it names (from the client's
    stored responses); ApiError 400 naming the first one not found."""
    if len(items) > TRANSLATE_IN_THREAD:
        wanted = await asyncio.to_thread(_references, items)
    else:
        wanted = _references(items)
    if not wanted:
        return items
    for index, item_id in wanted:
        if not isinstance(item_id, str) or not item_id:
            raise ApiError.invalid("item_reference needs the id of an item", f"input[{index}].id")
    try:
        found = await store.find_items([item_id for _, item_id in wanted], client)
    except StoreError as exc:
        raise ApiError.server(f"the store cannot be read: {exc}", status=503) from None
    resolved = list(items)
    for index, item_id in wanted:
        body = found.get(item_id)
        if body is None:
            raise ApiError.invalid(
                f"Item with id '{item_id}' not found: an item_reference names an item of a "
                "stored response (store: true) of this client",
                f"input[{index}].id",
                code="item_not_found",
            )
        resolved[index] = msgspec.json.decode(body)
    return resolved


@dataclass(slots=True, frozen=True)
class Prefix:
    """A conversation translated on a WebSocket, up to the end of one of its responses:
    what the next turn needs to send only what is new (bridge.socket_state keeps them)."""

    response_id: str
    # Its upstream messages, shaped for `shaped_for` and encoded, the instructions left
    # out: single messages and comma-joined runs of them (bridge.body.extend_pieces), the
    # last piece always the last message alone.
    pieces: tuple[bytes, ...]
    continuation: Continuation
    scope: Scope
    # (model, provider profile) the messages were translated and shaped for.
    shaped_for: tuple[str, str]
    # When the conversation has no name: the digest of all its messages, and of all but
    # the last (a tool call joining the last turn replaces it).
    context: ContextDigest | None = None
    context_head: ContextDigest | None = None
    # The response that began the conversation on this socket.
    root: str = ""
    # Bytes of `pieces`.
    size: int = 0


@dataclass(frozen=True, slots=True)
class StoredHistory:
    """A Conversations API conversation: its items, and the scope its reasoning is in."""

    items: list[Any]
    scope: str


async def conversation_history(store: Store, conversation_id: str, client: str) -> StoredHistory:
    """The items of the conversation a request names (404 when it is not the client's)."""
    found = await store.conversation_items(conversation_id, client)
    if found is None:
        raise ApiError(
            404,
            f"Conversation with id '{conversation_id}' not found.",
            param="conversation",
            code="not_found",
        )
    items = [_ITEM.decode(body) for body in found]
    return StoredHistory(items, f"c:{conversation_id}")


@dataclass(slots=True)
class PlannedTurn:
    """The upstream request and what recording the turn needs."""

    plan: ChatRequestPlan
    scope: Scope
    # The conversation has no name (no thread or session header): its turns are found
    # again by their context keys.
    by_context: bool
    # Continued from a conversation kept on a WebSocket: the body's messages follow it.
    prefix: Prefix | None = None
    # The digest of what comes before the body's messages (by_context, with a prefix).
    context_base: ContextDigest | None = None


async def plan_turn(
    store: Store,
    req: ResponsesRequest,
    items: Sequence[Any],
    upstream_model: str,
    provider: ProviderConfig,
    *,
    client: str,
    headers: CIMultiDictProxy[str],
    images: bool = True,
    prefix: Prefix | None = None,
    stored: StoredHistory | None = None,
    large: bool = False,
    stream: bool = True,
) -> PlannedTurn:
    """The upstream request for `req`: its stored chain first (or the `prefix` a WebSocket
    kept of it, or the `stored` conversation it names), reasoning filled in from its own
    scope, and shaped for the provider's profile; streamed unless `stream` is False. A
    `large` request (its body is) is translated and shaped in a thread."""
    profile = PROFILES[provider.profile]
    conversation = session_scope(headers)
    by_context = conversation is None
    history: list[dict[str, Any]] = []
    if prefix is not None:
        conversation = conversation or prefix.scope.conversation
    elif req.previous_response_id is not None:
        try:
            chain = await store.chain(req.previous_response_id, client)
        except ChainNotFound as exc:
            detail = (
                ""
                if exc.missing == exc.response_id
                else (f" (its chain is broken: '{exc.missing}' is no longer stored)")
            )
            raise ApiError(
                404,
                f"Previous response with id '{exc.response_id}' not found{detail}.",
                param="previous_response_id",
                code="previous_response_not_found",
            ) from None
        history = chain.items
        conversation = conversation or chain.scope
    elif stored is not None:
        history = stored.items
        conversation = conversation or stored.scope
    translate = functools.partial(
        translate_request,
        req,
        upstream_model,
        items=items,
        developer_role=provider.developer_role,
        history=history,
        needs=profile.needs,
        images=images,
        continuation=prefix.continuation if prefix else None,
        structured=profile.structured_output,
        stream=stream,
    )
    try:
        # A very long conversation takes seconds to translate: off the loop then.
        # (A tool costs about what an item does: 100,000 tools held the loop for 4 s.)
        tools = len(req.tools or ())
        if (
            large
            or len(items) + len(history) + tools > TRANSLATE_IN_THREAD
            or tools >= TOOLS_IN_THREAD
        ):
            plan = await asyncio.to_thread(translate)
        else:
            plan = translate()
    except RequestError as exc:
        raise ApiError(400, exc.message, param=exc.param, code="invalid_value") from None
    _log_skipped(plan)
    if plan.omitted_images:
        log.info(
            "left %d image(s) out of the request for %s, which takes text only",
            plan.omitted_images,
            req.model,
        )
    scope = Scope(client, conversation)
    context_base = None
    if prefix is not None and by_context:
        replaced = plan.builder is not None and plan.builder.replaces_last
        context_base = prefix.context_head if replaced else prefix.context
    if plan.reasoning_gaps:
        await recover_reasoning(store, scope, plan, by_context, context_base, profile)
    shape = functools.partial(
        shape_body,
        plan.body,
        profile,
        req.reasoning.effort if req.reasoning else None,
        extra_body=provider.extra_body,
        drop_params=provider.drop_params,
        max_tokens_param=provider.max_tokens_param,
    )
    if large or len(plan.messages) > TRANSLATE_IN_THREAD:
        await asyncio.to_thread(shape)
    else:
        shape()
    return PlannedTurn(plan, scope, by_context, prefix, context_base)


def _log_skipped(plan: ChatRequestPlan) -> None:
    """One line for each kind of item left out of the request, however many (a request
    of 100,000 such items wrote 100,000 lines)."""
    if plan.skipped_outputs:
        log.warning(
            "skipped %d stored tool output(s) whose call_id answers no call (Chat Completions "
            "takes none): %s",
            len(plan.skipped_outputs),
            some(plan.skipped_outputs),
        )
    if plan.foreign_compactions:
        log.warning(
            "skipped %d compaction item(s) that responses-bridge did not make (their content "
            "cannot be read)",
            plan.foreign_compactions,
        )


def _context_keys(
    messages: list[ChatMessage],
    start: int,
    gaps: list[ReasoningGap],
    base: ContextDigest | None = None,
) -> None:
    """Each gap's context key: the digest of the conversation before it, `base` being the
    digest of what comes before `messages[start:]` (pure, CPU-bound)."""
    digest = base.copy() if base is not None else ContextDigest()
    position = start
    for gap in gaps:
        digest.extend(messages[position : gap.index])
        position = gap.index
        gap.context_key = digest.turn_key(gap.fingerprint)


async def recover_reasoning(
    store: Store,
    scope: Scope,
    plan: ChatRequestPlan,
    by_context: bool,
    context_base: ContextDigest | None = None,
    profile: Profile = PROFILES["openai"],
) -> None:
    """Reasoning for replayed turns that came without it, from the store, within the scope.

    (Reasoning items in the input and the stored chain's own items are already in the
    translated history.) No placeholder text is ever made up: DeepSeek rejects it; a turn
    the store knows had none gets "". Misses are logged once per request, and only for a
    provider that wants reasoning back.
    """
    gaps = plan.reasoning_gaps
    if by_context:
        await asyncio.to_thread(
            _context_keys, plan.messages, plan.context_start, gaps, context_base
        )
    found = await store.find_reasoning(
        scope.client,
        scope.conversation,
        [ReasoningQuery(gap.context_key, gap.fingerprint, gap.call_ids) for gap in gaps],
    )
    missed: list[str] = []
    for gap, reasoning in zip(gaps, found, strict=True):
        if reasoning is not None:
            gap.fill(reasoning)
        elif gap.call_ids:
            missed.extend(gap.call_ids)
    if missed and profile.wants_reasoning_back:
        log.warning(
            "no reasoning found in the request or the store for the replayed tool calls "
            "%s; %s may refuse the request or answer worse",
            some(missed),
            profile.name,
        )
