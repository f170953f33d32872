"""What is stored for a turn, built from the request and the finished response (pure).

store: true keeps the request (without its input and tools), the response object (without
its tools, which are kept once by digest), and every input item as the client sent it; the
store writes only the items a replaying client had not sent before. store: false keeps one
metadata row and the reasoning. Reasoning is kept (unless the turn failed) under keys that
name its scope (bridge.scope).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bridge.scope import Scope, chain_scope
from bridge.translate.context import DIGEST_BYTES, ContextDigest, item_prefix_digests
from bridge.translate.ids import new_id
from bridge.translate.reasoning import decode_reasoning, turn_fingerprint
from bridge.translate.tool_list import echo_tools
from bridge.wire.events import (
    CustomToolCallOutput,
    FunctionCallOutput,
    MessageOutput,
    ReasoningOutput,
    ResponseObject,
)
from bridge.wire.responses import ResponsesRequest, encode_items, input_items

_ENCODER = msgspec.json.Encoder()
_ITEM_ID_PREFIX = {
    "message": "msg",
    "reasoning": "rs",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
}
# Reasoning key kinds (see migrations/0003_conversation_state_v2.sql).
KEY_CONTEXT = "ctx"
KEY_TURN = "turn"
KEY_CALL = "call"


def _item_id(kind: str) -> str:
    return new_id(_ITEM_ID_PREFIX.get(kind, "item"))


def item_kind(item: dict[str, Any]) -> str:
    return str(item.get("type") or ("message" if "role" in item else "item"))


def item_id_of(item: dict[str, Any]) -> str:
    """The item's own id, or a new one for an item sent without."""
    given = item.get("id")
    return given if isinstance(given, str) and given else _item_id(item_kind(item))


def normalize_input_item(item: dict[str, Any], item_id: str) -> dict[str, Any]:
    """An input item as the input_items endpoint lists it: typed, with its id and status,
    parts listed, and no null fields (clients may send null for an optional field; the
    specification's output items take a value or no field)."""
    kind = item_kind(item)
    entry = {"type": kind, **{key: value for key, value in item.items() if value is not None}}
    if not entry.get("id"):
        entry["id"] = item_id
    if kind == "message":
        content = entry.get("content")
        if isinstance(content, str):
            part_type = "output_text" if entry.get("role") == "assistant" else "input_text"
            content = [{"type": part_type, "text": content}]
        if isinstance(content, list):
            entry["content"] = [
                {**part, "annotations": []}
                if isinstance(part, dict)
                and part.get("type") == "output_text"
                and "annotations" not in part
                else part
                for part in content
            ]
        entry.setdefault("status", "completed")
    elif kind in _CALL_KINDS:
        entry.setdefault("status", "completed")
    elif kind == "reasoning":
        entry.setdefault("summary", [])
    return entry


def repeated_id(ids: Sequence[str]) -> tuple[int, str] | None:
    """The first id that an earlier one repeats, with its position; None when all differ."""
    seen: set[str] = set()
    for index, item_id in enumerate(ids):
        if item_id in seen:
            return index, item_id
        seen.add(item_id)
    return None


def conversation_items(items: Sequence[Any]) -> list[tuple[str, bytes]]:
    """A turn's items (input or output) as a conversation keeps them: id and JSON."""
    kept: list[tuple[str, bytes]] = []
    for item in items:
        if isinstance(item, dict) and item.get("type") != "item_reference":
            item_id = item_id_of(item)
            kept.append((item_id, _ENCODER.encode(normalize_input_item(item, item_id))))
    return kept


# Items the Responses API lists with a status (the client may send them without).
_CALL_KINDS = frozenset(
    {"function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"}
)


@dataclass(slots=True)
class StoredContent:
    """What store: true keeps besides the metadata row."""

    request: bytes  # the request body without input and tools
    response: bytes  # the response object without tools
    tools: bytes | None  # the tool list as JSON, kept once by its digest
    tools_hash: bytes | None
    items: Sequence[Any]  # every input item
    # Each item's JSON where it is known already; the others are encoded when written.
    encoded: list[bytes | None]
    # digest of items[:k + 1] for every k (the last is the digest of the whole input)
    item_digests: list[bytes]

    def item_json(self, position: int) -> bytes:
        data = self.encoded[position]
        if data is None:
            data = self.encoded[position] = _ENCODER.encode(self.items[position])
        return data


@dataclass(slots=True)
class ReasoningRecord:
    """A turn's reasoning and the (scope, kind, value) keys that find it again."""

    text: str
    details: bytes | None
    keys: list[tuple[str, str, str]]


@dataclass(slots=True)
class TurnRecord:
    """One response as the store writes it, in one transaction."""

    id: str
    created_at: int
    model: str
    status: str
    previous_response_id: str | None
    session_id: str | None
    thread_id: str | None
    input_tokens: int
    output_tokens: int
    client: str
    scope: str | None
    content: StoredContent | None = None
    reasoning: ReasoningRecord | None = None
    # The ids of the response's output items, in order (kept when content is).
    output_ids: list[str] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return self.content is not None


@dataclass(slots=True)
class TurnSummary:
    """An assistant turn as the reasoning index sees it."""

    reasoning: str
    details: list[dict[str, Any]] | None
    text: str
    call_ids: list[str]


def summarize_turn(response: ResponseObject) -> TurnSummary:
    """The turn's reasoning, text and tool call ids, joined as a replay would join them."""
    reasoning: list[str] = []
    details: list[dict[str, Any]] = []
    text: list[str] = []
    call_ids: list[str] = []
    for item in response.output:
        if isinstance(item, ReasoningOutput):
            reasoning.extend(part.text for part in item.content)
            carried = (
                decode_reasoning(item.encrypted_content)
                if isinstance(item.encrypted_content, str)
                else None
            )
            if carried is not None and carried.details:
                details.extend(carried.details)
        elif isinstance(item, MessageOutput):
            text.extend(part.text for part in item.content)
        elif isinstance(item, FunctionCallOutput | CustomToolCallOutput):
            call_ids.append(item.call_id)
    return TurnSummary("".join(reasoning), details or None, "".join(text), call_ids)


def reasoning_record(
    response: ResponseObject, conversation: str | None, context: ContextDigest | None
) -> ReasoningRecord | None:
    """The turn's reasoning and its keys; None for a failed turn, or one with neither
    reasoning nor tool calls. A tool-call turn that came without reasoning is kept with
    "": replayed, it must still carry the field (DeepSeek, Kimi), and the store then knows
    that nothing is missing."""
    if response.status == "failed":
        return None
    turn = summarize_turn(response)
    if not turn.reasoning and not turn.details and not turn.call_ids:
        return None
    fingerprint = turn_fingerprint(turn.text, turn.call_ids)
    keys: list[tuple[str, str, str]] = []
    if context is not None:
        keys.append(("", KEY_CONTEXT, context.turn_key(fingerprint)))
    if conversation is not None:
        keys.append((conversation, KEY_TURN, fingerprint))
        keys.extend((conversation, KEY_CALL, call_id) for call_id in dict.fromkeys(turn.call_ids))
    details = _ENCODER.encode(turn.details) if turn.details else None
    return ReasoningRecord(turn.reasoning, details, keys)


def stored_content(
    request: ResponsesRequest,
    items: Sequence[Any],
    encoded: list[bytes | None],
    item_digests: list[bytes],
    response: ResponseObject,
) -> StoredContent:
    """The content store: true keeps: request and response without their tool list when the
    response echoes the request's (as it always does in the service), the list kept once."""
    tools = _ENCODER.encode(request.tools) if request.tools else None
    if tools is not None and _ENCODER.encode(response.tools) == _ENCODER.encode(
        echo_tools(request.tools or [])
    ):
        request = msgspec.structs.replace(request, tools=[])
        response = msgspec.structs.replace(response, tools=[])
    else:
        tools = None
    return StoredContent(
        request=_ENCODER.encode(msgspec.structs.replace(request, input=[])),
        response=_ENCODER.encode(response),
        tools=tools,
        tools_hash=hashlib.sha256(tools).digest()[:DIGEST_BYTES] if tools else None,
        items=items,
        encoded=encoded,
        item_digests=item_digests,
    )


# The largest count stored: the upstream's usage figures are any JSON integer, the
# database's columns 64-bit (and JSON readers exact only to 2**53).
MAX_COUNT = 2**53 - 1


def bounded_count(value: int) -> int:
    """An upstream's count as the store can hold it: within 0..MAX_COUNT."""
    return min(max(value, 0), MAX_COUNT)


def build_turn_record(
    response: ResponseObject,
    scope: Scope,
    *,
    session_id: str | None,
    thread_id: str | None,
    content: StoredContent | None,
    context: ContextDigest | None,
) -> TurnRecord:
    """Everything stored for a finished response."""
    usage = response.usage
    return TurnRecord(
        id=response.id,
        created_at=response.created_at,
        model=response.model,
        status=response.status,
        previous_response_id=response.previous_response_id,
        session_id=session_id,
        thread_id=thread_id,
        input_tokens=bounded_count(usage.input_tokens) if usage else 0,
        output_tokens=bounded_count(usage.output_tokens) if usage else 0,
        client=scope.client,
        scope=scope.conversation,
        content=content,
        reasoning=reasoning_record(response, scope.conversation, context),
        output_ids=[item.id for item in response.output] if content is not None else [],
    )


def recorded_scope(request: ResponsesRequest, response: ResponseObject, scope: Scope) -> Scope:
    """The scope a turn is recorded in: a stored turn without a conversation starts one,
    its chain, which later previous_response_id turns inherit."""
    if request.store is not False and scope.conversation is None:
        return Scope(scope.client, chain_scope(response.id))
    return scope


def record_turn(
    request: ResponsesRequest,
    response: ResponseObject,
    scope: Scope,
    *,
    session_id: str | None = None,
    thread_id: str | None = None,
    context: ContextDigest | None = None,
    items: Sequence[Any] | None = None,
    encoded: list[bytes | None] | None = None,
    item_digests: list[bytes] | None = None,
) -> TurnRecord:
    """The record of a finished turn: content as `request.store` says, reasoning keyed by
    `scope` (a stored turn without a conversation starts one: its chain) and `context`.

    Pieces the caller already has (the decoded items, their digests) are taken as given.
    """
    stored = request.store is not False
    scope = recorded_scope(request, response, scope)
    content = None
    if stored:
        if items is None:
            items = input_items(request)
        if encoded is None or item_digests is None:
            whole = encode_items(items)
            encoded, item_digests = list(whole), item_prefix_digests(whole)
        content = stored_content(request, items, encoded, item_digests, response)
    return build_turn_record(
        response,
        scope,
        session_id=session_id,
        thread_id=thread_id,
        content=content,
        context=context,
    )
