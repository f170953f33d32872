"""What is stored for a turn, built from the request and the finished response (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from bridge.translate.ids import new_id
from bridge.translate.reasoning import decode_reasoning, turn_fingerprint
from bridge.wire.events import (
    CustomToolCallOutput,
    FunctionCallOutput,
    MessageOutput,
    ReasoningOutput,
    ResponseObject,
)
from bridge.wire.responses import ResponsesRequest

_ENCODER = msgspec.json.Encoder()
_ITEM_ID_PREFIX = {
    "message": "msg",
    "reasoning": "rs",
    "function_call": "fc",
    "function_call_output": "fco",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
}


@dataclass(slots=True)
class TurnRecord:
    """One response as the store writes it, in one transaction."""

    id: str
    created_at: int
    model: str
    status: str
    previous_response_id: str | None
    retrievable: bool
    session_id: str | None
    thread_id: str | None
    input_tokens: int
    output_tokens: int
    request: bytes
    input_items: bytes
    output_items: bytes
    response: bytes
    # (call id or fingerprint, reasoning text, details JSON or None)
    reasoning_by_call: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    reasoning_by_turn: list[tuple[str, str, bytes | None]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return (
            len(self.request) + len(self.input_items) + len(self.output_items) + len(self.response)
        )


def _item_id(kind: str) -> str:
    return new_id(_ITEM_ID_PREFIX.get(kind, "item"))


def normalize_input_items(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Input items as the input_items endpoint lists them: typed, with ids and part lists."""
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    normalized = []
    for item in items:
        kind = item.get("type") or ("message" if "role" in item else "item")
        entry = {"type": kind, **item}
        if not entry.get("id"):
            entry["id"] = _item_id(kind)
        if kind == "message":
            content = entry.get("content")
            if isinstance(content, str):
                part_type = "output_text" if entry.get("role") == "assistant" else "input_text"
                entry["content"] = [{"type": part_type, "text": content}]
            entry.setdefault("status", "completed")
        normalized.append(entry)
    return normalized


@dataclass(slots=True)
class TurnSummary:
    """An assistant turn as the reasoning indexes see it."""

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
            carried = decode_reasoning(item.encrypted_content) if item.encrypted_content else None
            if carried is not None and carried.details:
                details.extend(carried.details)
        elif isinstance(item, MessageOutput):
            text.extend(part.text for part in item.content)
        elif isinstance(item, FunctionCallOutput | CustomToolCallOutput):
            call_ids.append(item.call_id)
    return TurnSummary("".join(reasoning), details or None, "".join(text), call_ids)


def build_turn_record(
    request: ResponsesRequest,
    input_items: list[dict[str, Any]],
    response: ResponseObject,
    *,
    session_id: str | None,
    thread_id: str | None,
) -> TurnRecord:
    """Everything stored for a finished response; reasoning is indexed unless it failed."""
    usage = response.usage
    record = TurnRecord(
        id=response.id,
        created_at=response.created_at,
        model=response.model,
        status=response.status,
        previous_response_id=response.previous_response_id,
        retrievable=request.store is not False,
        session_id=session_id,
        thread_id=thread_id,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        request=_ENCODER.encode(msgspec.structs.replace(request, input=[])),
        input_items=_ENCODER.encode(input_items),
        output_items=_ENCODER.encode(response.output),
        response=_ENCODER.encode(response),
    )
    if response.status != "failed":
        turn = summarize_turn(response)
        if turn.reasoning or turn.details:
            details = _ENCODER.encode(turn.details) if turn.details else None
            record.reasoning_by_call = [
                (call_id, turn.reasoning, details) for call_id in turn.call_ids
            ]
            fingerprint = turn_fingerprint(turn.text, turn.call_ids)
            record.reasoning_by_turn = [(fingerprint, turn.reasoning, details)]
    return record
