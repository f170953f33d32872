"""Responses request -> Chat Completions request body (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.translate.errors import RequestError
from bridge.translate.gaps import ReasoningGap, ReplayNeeds, reasoning_gaps
from bridge.translate.messages import Continuation, MessageBuilder, translate_input
from bridge.translate.output_format import (
    JSON_OBJECT_INSTRUCTION,
    OutputCheck,
    StructuredOutput,
    schema_instruction,
)
from bridge.translate.tool_list import allowed_only, translate_tool_choice, translate_tools
from bridge.translate.tools import ToolMap
from bridge.wire.chat import ChatMessage
from bridge.wire.responses import ResponsesRequest, input_items

# Most providers take reasoning back as text.
TEXT_ONLY = ReplayNeeds()


@dataclass(slots=True)
class ChatRequestPlan:
    """The upstream body plus what the stream translator needs to map calls back."""

    body: dict[str, Any]
    tool_map: ToolMap
    # Replayed assistant turns whose reasoning must be looked up elsewhere.
    reasoning_gaps: list[ReasoningGap] = field(default_factory=list)
    # Leading messages that are not conversation (the instructions): context digests skip them.
    context_start: int = 0
    # Images replaced by a note because the model takes text only.
    omitted_images: int = 0
    # What was left out of replayed history (logged once per request: bridge.conversation).
    skipped_outputs: list[str] = field(default_factory=list)
    foreign_compactions: int = 0
    # What built the messages; it goes on with the response's output (bridge.socket_state).
    builder: MessageBuilder | None = None
    # What the answer must be, when the provider cannot be held to the requested format.
    output_check: OutputCheck | None = None

    @property
    def messages(self) -> list[ChatMessage]:
        messages: list[ChatMessage] = self.body["messages"]
        return messages


@dataclass(frozen=True, slots=True)
class _Format:
    """text.format as the upstream gets it."""

    response_format: dict[str, Any] | None = None
    # Said to the model after the instructions (the provider cannot enforce the format).
    instruction: str | None = None
    check: OutputCheck | None = None


def _output_format(request: ResponsesRequest, structured: StructuredOutput) -> _Format:
    fmt = request.text.format if request.text else None
    if fmt is None or fmt.type == "text":
        return _Format()
    if fmt.type == "json_object":
        if structured == "json_schema":
            return _Format({"type": "json_object"})
        # DeepSeek's JSON mode refuses a prompt without the word "json"; MiniMax has none.
        response_format = {"type": "json_object"} if structured == "json_object" else None
        return _Format(response_format, JSON_OBJECT_INSTRUCTION, OutputCheck())
    if fmt.type == "json_schema":
        if fmt.schema is None or not fmt.name:
            raise RequestError("text.format json_schema needs name and schema", "text.format")
        if structured != "json_schema":
            return _Format(
                {"type": "json_object"} if structured == "json_object" else None,
                schema_instruction(fmt.name, fmt.description, fmt.schema),
                OutputCheck(fmt.schema, fmt.name),
            )
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema}
        if fmt.description:
            schema["description"] = fmt.description
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        return _Format({"type": "json_schema", "json_schema": schema})
    raise RequestError(f"Unknown text.format type {fmt.type!r}", "text.format.type")


def _instructions(request: ResponsesRequest, note: str | None) -> str | None:
    """The instructions message's text: the request's instructions, then the format note."""
    if note is None:
        return request.instructions
    return f"{request.instructions}\n\n{note}" if request.instructions else note


def translate_request(
    request: ResponsesRequest,
    upstream_model: str,
    *,
    items: Sequence[Any] | None = None,
    developer_role: bool = False,
    history: Sequence[dict[str, Any]] = (),
    needs: ReplayNeeds = TEXT_ONLY,
    images: bool = True,
    continuation: Continuation | None = None,
    structured: StructuredOutput = "json_schema",
    stream: bool = True,
) -> ChatRequestPlan:
    """The whole upstream body for a Responses request: streamed, unless `stream` is
    False (one JSON answer, for a client that needs no events).

    Without `images` (a text-only model) every image is replaced by a short note.

    `items` are the request's input items, decoded (bridge.wire.responses.input_items; by
    default decoded here), `history` the items of a stored previous_response_id chain,
    oldest first. With a `continuation` (a conversation translated on a WebSocket) the
    body's messages are the instructions and what is new; the caller puts the earlier
    messages between them (see MessageBuilder.replaces_last). `needs` says what the provider
    wants back of replayed reasoning, `structured` how it takes text.format.
    """
    if items is None:
        items = input_items(request)
    output = _output_format(request, structured)
    instructions = _instructions(request, output.instruction)
    built = translate_input(
        instructions, items, developer_role, history, needs.carried, images, continuation
    )
    messages = built.messages
    if not messages and not (continuation and continuation.messages):
        raise RequestError("input is empty: there is nothing to send", "input")
    tools, tool_map = translate_tools(request.tools or [])
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": messages,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    tools = allowed_only(tools, request.tool_choice)
    if tools:
        body["tools"] = tools
        choice = translate_tool_choice(request.tool_choice, tool_map)
        if choice is not None:
            body["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.presence_penalty is not None:
        body["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        body["frequency_penalty"] = request.frequency_penalty
    # The next three go only to providers that take them (bridge.providers.shape_body).
    if request.prompt_cache_key:
        body["prompt_cache_key"] = request.prompt_cache_key
    if request.safety_identifier:
        body["safety_identifier"] = request.safety_identifier
    if request.text is not None and request.text.verbosity:
        body["verbosity"] = request.text.verbosity
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if output.response_format is not None:
        body["response_format"] = output.response_format
    # `user` is what every provider takes to tell end users apart; the newer
    # safety_identifier stands in for it when only that is given.
    user = request.user or request.safety_identifier
    if user:
        body["user"] = user
    return ChatRequestPlan(
        body=body,
        tool_map=tool_map,
        reasoning_gaps=reasoning_gaps(messages, needs),
        context_start=1 if instructions else 0,
        omitted_images=built.omitted_images,
        skipped_outputs=built.skipped_outputs,
        foreign_compactions=built.foreign_compactions,
        builder=built,
        output_check=output.check,
    )
