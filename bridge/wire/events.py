"""Responses API output shapes: the response object, its output items and stream events.

Field names and event types follow the OpenAI Responses API reference; the official
`openai` SDK's typed models accept every shape here (tests/test_sdk.py checks it).
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

# ---- output items -------------------------------------------------------------------


class _Item(msgspec.Struct, kw_only=True, tag_field="type"):
    """An output item; each subclass declares `id` first so it leads in the JSON."""


class SummaryText(msgspec.Struct, kw_only=True, tag_field="type", tag="summary_text"):
    text: str


class ReasoningTextPart(msgspec.Struct, kw_only=True, tag_field="type", tag="reasoning_text"):
    text: str


class OutputTextPart(msgspec.Struct, kw_only=True, tag_field="type", tag="output_text"):
    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class ReasoningOutput(_Item, tag="reasoning"):
    id: str
    summary: list[SummaryText] = msgspec.field(default_factory=list)
    content: list[ReasoningTextPart] = msgspec.field(default_factory=list)
    # Absent unless there is content: the specification allows a string or no field,
    # never null.
    encrypted_content: str | msgspec.UnsetType = msgspec.UNSET
    status: str = "in_progress"


class MessageOutput(_Item, tag="message"):
    id: str
    role: str = "assistant"
    status: str = "in_progress"
    content: list[OutputTextPart] = msgspec.field(default_factory=list)


class FunctionCallOutput(_Item, tag="function_call"):
    id: str
    call_id: str
    name: str
    arguments: str = ""
    namespace: str | None = None
    status: str = "in_progress"


class CustomToolCallOutput(_Item, tag="custom_tool_call"):
    id: str
    call_id: str
    name: str
    input: str = ""
    namespace: str | None = None
    status: str = "in_progress"


OutputItem = ReasoningOutput | MessageOutput | FunctionCallOutput | CustomToolCallOutput

# ---- the response object ------------------------------------------------------------


class InputTokensDetails(msgspec.Struct, kw_only=True):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(msgspec.Struct, kw_only=True):
    reasoning_tokens: int = 0


class Usage(msgspec.Struct, kw_only=True):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = msgspec.field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class ResponseError(msgspec.Struct, kw_only=True):
    code: str
    message: str


class IncompleteDetails(msgspec.Struct, kw_only=True):
    reason: str


class ResponseObject(msgspec.Struct, kw_only=True):
    id: str
    object: str = "response"
    created_at: int
    status: str = "in_progress"
    model: str
    output: list[OutputItem] = msgspec.field(default_factory=list)
    usage: Usage | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    parallel_tool_calls: bool = True
    # Sampling settings as sent upstream; where the request set none, the Chat Completions
    # defaults (the Open Responses schema wants numbers here, not nulls).
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    tool_choice: Any = "auto"
    tools: list[msgspec.Raw] = msgspec.field(default_factory=list)
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    store: bool = True
    background: bool = False
    service_tier: str = "default"
    truncation: str = "disabled"
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    completed_at: int | None = None
    # The Conversations API conversation the turn belongs to, as {"id": ...}.
    conversation: dict[str, str] | None = None
    # responses-bridge's own, only when the database could not take the turn: what of it
    # waits in the bridge's spool, written when the database answers (bridge.store.health).
    store_pending: list[str] | msgspec.UnsetType = msgspec.UNSET


# ---- stream events ------------------------------------------------------------------


class _Event(msgspec.Struct, kw_only=True, tag_field="type"):
    sequence_number: int = 0
    frame_prefix: ClassVar[bytes] = b""


class _ResponseEvent(_Event):
    response: ResponseObject


class ResponseCreated(_ResponseEvent, tag="response.created"):
    pass


class ResponseInProgress(_ResponseEvent, tag="response.in_progress"):
    pass


class ResponseCompleted(_ResponseEvent, tag="response.completed"):
    pass


class ResponseIncomplete(_ResponseEvent, tag="response.incomplete"):
    pass


class ResponseFailed(_ResponseEvent, tag="response.failed"):
    pass


class OutputItemAdded(_Event, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class OutputItemDone(_Event, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class ContentPartAdded(_Event, tag="response.content_part.added"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputTextPart | ReasoningTextPart


class ContentPartDone(_Event, tag="response.content_part.done"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputTextPart | ReasoningTextPart


class OutputTextDelta(_Event, tag="response.output_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = []


class OutputTextDone(_Event, tag="response.output_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = []


class ReasoningTextDelta(_Event, tag="response.reasoning_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningTextDone(_Event, tag="response.reasoning_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str


class ReasoningDelta(_Event, tag="response.reasoning.delta"):
    """ReasoningTextDelta as the Open Responses specification names it."""

    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningDone(_Event, tag="response.reasoning.done"):
    """ReasoningTextDone as the Open Responses specification names it."""

    item_id: str
    output_index: int
    content_index: int
    text: str


class ReasoningSummaryPartAdded(_Event, tag="response.reasoning_summary_part.added"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryPartDone(_Event, tag="response.reasoning_summary_part.done"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryTextDelta(_Event, tag="response.reasoning_summary_text.delta"):
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class ReasoningSummaryTextDone(_Event, tag="response.reasoning_summary_text.done"):
    item_id: str
    output_index: int
    summary_index: int
    text: str


class FunctionCallArgumentsDelta(_Event, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(_Event, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    name: str
    arguments: str


class CustomToolCallInputDelta(_Event, tag="response.custom_tool_call_input.delta"):
    item_id: str
    output_index: int
    delta: str


class CustomToolCallInputDone(_Event, tag="response.custom_tool_call_input.done"):
    item_id: str
    output_index: int
    input: str


ResponseEvent = (
    ResponseCreated
    | ResponseInProgress
    | ResponseCompleted
    | ResponseIncomplete
    | ResponseFailed
    | OutputItemAdded
    | OutputItemDone
    | ContentPartAdded
    | ContentPartDone
    | OutputTextDelta
    | OutputTextDone
    | ReasoningTextDelta
    | ReasoningTextDone
    | ReasoningDelta
    | ReasoningDone
    | ReasoningSummaryPartAdded
    | ReasoningSummaryPartDone
    | ReasoningSummaryTextDelta
    | ReasoningSummaryTextDone
    | FunctionCallArgumentsDelta
    | FunctionCallArgumentsDone
    | CustomToolCallInputDelta
    | CustomToolCallInputDone
)

for _cls in ResponseEvent.__args__:
    _cls.frame_prefix = f"event: {_cls.__struct_config__.tag}\ndata: ".encode()
