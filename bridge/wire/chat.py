"""Chat Completions shapes: the messages the bridge sends and the chunks it reads back."""

from __future__ import annotations

from typing import Any

import msgspec

# ---- what the bridge sends upstream -------------------------------------------------


class ChatFunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str


class ChatToolCall(msgspec.Struct, kw_only=True):
    id: str
    function: ChatFunctionCall
    type: str = "function"
    # Gemini's thought signature for the call; left out unless set.
    extra_content: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One upstream message; unset optional fields are left out of the JSON."""

    role: str
    # Always sent (null for an assistant message that only calls tools).
    content: str | list[dict[str, Any]] | None
    tool_calls: list[ChatToolCall] | None = None
    tool_call_id: str | None = None
    # The turn's reasoning; bridge.providers moves it to the field the provider reads.
    reasoning_content: str | None = None
    reasoning: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None


# ---- what comes back in a stream ----------------------------------------------------


class FunctionDelta(msgspec.Struct, kw_only=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, kw_only=True):
    # Absent or null: the call the delta's id names, else the call being streamed.
    index: int | None = None
    id: str | None = None
    function: FunctionDelta | None = None
    # Gemini: {"google": {"thought_signature": ...}} on a signed call.
    extra_content: dict[str, Any] | None = None


class ChunkDelta(msgspec.Struct, kw_only=True):
    content: str | None = None
    reasoning_content: str | None = None
    # vLLM, Ollama and OpenRouter call the reasoning text `reasoning`.
    reasoning: str | None = None
    # OpenRouter's structured reasoning, to be sent back unchanged.
    reasoning_details: list[dict[str, Any]] | None = None
    tool_calls: list[ToolCallDelta] | None = None
    refusal: str | None = None
    # Gemini: a thought signature or a `thought` flag for the content.
    extra_content: dict[str, Any] | None = None


class ChunkChoice(msgspec.Struct, kw_only=True):
    index: int | None = 0
    delta: ChunkDelta | None = None
    finish_reason: str | None = None
    # Moonshot/Kimi send the last chunk's usage here instead of at the top level.
    usage: ChatUsage | None = None


class PromptTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int | None = None


class CompletionTokensDetails(msgspec.Struct, kw_only=True):
    reasoning_tokens: int | None = None


class ChatUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    # DeepSeek reports cache hits here, sometimes instead of prompt_tokens_details.
    prompt_cache_hit_tokens: int | None = None
    # Moonshot reports them at the top level of usage.
    cached_tokens: int | None = None


class UpstreamErrorBody(msgspec.Struct, kw_only=True):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None
    param: str | None = None


class ChatChunk(msgspec.Struct, kw_only=True):
    """One `data:` payload of an upstream stream; unknown fields are ignored."""

    choices: list[ChunkChoice] = []
    usage: ChatUsage | None = None
    error: UpstreamErrorBody | None = None


class CompletionMessage(msgspec.Struct, kw_only=True):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int = 0
    message: CompletionMessage | None = None
    finish_reason: str | None = None


class ChatCompletion(msgspec.Struct, kw_only=True):
    """A whole (non-streamed) answer, from servers that ignore `stream: true`."""

    choices: list[CompletionChoice] = []
    usage: ChatUsage | None = None
    error: UpstreamErrorBody | None = None

    def as_chunk(self) -> ChatChunk:
        """The same answer as one stream chunk, so one translator serves both."""
        choices = []
        for choice in self.choices:
            message = choice.message or CompletionMessage()
            calls = message.tool_calls
            if calls is not None:
                # Whole messages list their calls in order; `index` may be absent.
                calls = [
                    ToolCallDelta(
                        index=position,
                        id=call.id,
                        function=call.function,
                        extra_content=call.extra_content,
                    )
                    for position, call in enumerate(calls)
                ]
            delta = ChunkDelta(
                content=message.content,
                reasoning_content=message.reasoning_content,
                reasoning=message.reasoning,
                reasoning_details=message.reasoning_details,
                refusal=message.refusal,
                tool_calls=calls,
            )
            choices.append(
                ChunkChoice(index=choice.index, delta=delta, finish_reason=choice.finish_reason)
            )
        return ChatChunk(choices=choices, usage=self.usage, error=self.error)


class UpstreamErrorEnvelope(msgspec.Struct, kw_only=True):
    """The body of an upstream HTTP error: `{"error": {...}}`, or a bare message."""

    error: UpstreamErrorBody | str | None = None
    message: str | None = None
    detail: str | None = None


CHUNK_DECODER = msgspec.json.Decoder(ChatChunk)
COMPLETION_DECODER = msgspec.json.Decoder(ChatCompletion)
ERROR_DECODER = msgspec.json.Decoder(UpstreamErrorEnvelope)
ERROR_LIST_DECODER = msgspec.json.Decoder(list[UpstreamErrorEnvelope])
