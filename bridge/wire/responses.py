"""Responses API request shapes: what clients POST to /v1/responses.

Wire structs ignore unknown fields: clients (Codex above all) add fields often, and a
bridge that rejected them would break on every client release.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec


class _Wire(msgspec.Struct, kw_only=True):
    """Base for request shapes; unknown fields are ignored."""


class ContentPart(_Wire):
    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class MessageItem(_Wire):
    role: str
    content: str | list[ContentPart]
    id: str | None = None


class ReasoningText(_Wire):
    type: str = "reasoning_text"
    text: str = ""


class ReasoningItem(_Wire):
    id: str | None = None
    summary: list[ReasoningText] = []
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


class CompactionItem(_Wire):
    """A compaction item (bridge.translate.compaction makes the bridge's own)."""

    encrypted_content: str
    id: str | None = None


class FunctionCallItem(_Wire):
    call_id: str
    name: str
    arguments: str = ""
    namespace: str | None = None
    id: str | None = None


class CustomToolCallItem(_Wire):
    call_id: str
    name: str
    input: str = ""
    id: str | None = None


class ToolOutputItem(_Wire):
    """function_call_output and custom_tool_call_output."""

    call_id: str
    output: str | list[ContentPart] = ""


class FunctionTool(_Wire):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class CustomToolFormat(_Wire):
    type: str = "text"
    syntax: str | None = None
    definition: str | None = None


class CustomTool(_Wire):
    name: str
    description: str | None = None
    format: CustomToolFormat | None = None


class NamespaceTool(_Wire):
    name: str
    description: str | None = None
    tools: list[dict[str, Any]] = []


class Reasoning(_Wire):
    effort: str | None = None
    summary: str | None = None


class TextFormat(_Wire):
    type: str = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Wire):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesRequest(_Wire):
    """Every field the Open Responses specification types as nullable takes null."""

    model: str
    # Items stay untyped here and are converted one by one, so an unknown item type can
    # be skipped instead of failing the whole request. Null: no input (a continuation
    # with nothing new).
    input: str | list[Any] | None = None
    instructions: str | None = None
    # Kept raw: echoed back verbatim in the response object without re-encoding. Null
    # (openai-python sends it for tools=None): no tools.
    tools: list[msgspec.Raw] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_logprobs: int | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    reasoning: Reasoning | None = None
    text: TextConfig | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    background: bool | None = None
    service_tier: str | None = None
    truncation: str | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    stream_options: dict[str, Any] | None = None
    # Not supported: a request that sets it is refused (bridge.turn_setup).
    prompt: Any = None
    # A Conversations API conversation: its id, or {"id": ...}.
    conversation: str | dict[str, Any] | None = None


_ENCODER = msgspec.json.Encoder()


def input_items(request: ResponsesRequest) -> list[Any]:
    """The input as a list of items; a string input is one user message."""
    if isinstance(request.input, str):
        return [{"role": "user", "content": request.input}]
    return list(request.input or ())


def encode_items(items: Sequence[Any]) -> list[bytes]:
    """Each item as compact JSON, its keys in the order the client sent them: the same
    items always give the same bytes."""
    return [_ENCODER.encode(item) for item in items]
