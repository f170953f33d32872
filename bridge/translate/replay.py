"""A stored response told again as the events that would have streamed it (pure).

GET /v1/responses/{id}?stream=true of a response that was not created in the background
(whose events were not kept) answers this sequence: created, in_progress, each output item
added, its content and text (one delta each), done, then the terminal event. The SDKs'
stream helpers need the whole sequence (openai-node's `responses.stream({response_id})`
throws without response.created), and they rebuild the same response from it.
"""

from __future__ import annotations

import msgspec

from bridge.wire.events import (
    ContentPartAdded,
    ContentPartDone,
    CustomToolCallInputDelta,
    CustomToolCallInputDone,
    CustomToolCallOutput,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    FunctionCallOutput,
    MessageOutput,
    OutputItem,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    OutputTextDone,
    OutputTextPart,
    ReasoningDelta,
    ReasoningDone,
    ReasoningOutput,
    ReasoningSummaryPartAdded,
    ReasoningSummaryPartDone,
    ReasoningSummaryTextDelta,
    ReasoningSummaryTextDone,
    ReasoningTextDelta,
    ReasoningTextDone,
    ReasoningTextPart,
    ResponseCompleted,
    ResponseCreated,
    ResponseEvent,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    ResponseObject,
    SummaryText,
)

_TERMINAL: dict[
    str, type[ResponseCompleted | ResponseIncomplete | ResponseFailed | ResponseInProgress]
] = {
    "completed": ResponseCompleted,
    "incomplete": ResponseIncomplete,
    "failed": ResponseFailed,
    "cancelled": ResponseFailed,
}


def replay_events(
    response: ResponseObject, reasoning_events: str = "openai"
) -> list[ResponseEvent]:
    """The events of `response`, numbered from 0; reasoning text events under OpenAI's names
    or, with "specification", the Open Responses specification's."""
    spec = reasoning_events == "specification"
    started = msgspec.structs.replace(
        response,
        status="in_progress",
        output=[],
        usage=None,
        error=None,
        incomplete_details=None,
        completed_at=None,
    )
    events: list[ResponseEvent] = [
        ResponseCreated(response=started),
        ResponseInProgress(response=started),
    ]
    for index, item in enumerate(response.output):
        events.append(OutputItemAdded(output_index=index, item=_as_added(item)))
        events.extend(_content_events(item, index, spec))
        events.append(OutputItemDone(output_index=index, item=item))
    terminal = _TERMINAL.get(response.status, ResponseInProgress)
    events.append(terminal(response=response))
    for number, event in enumerate(events):
        event.sequence_number = number
    return events


def _as_added(item: OutputItem) -> OutputItem:
    """The item as output_item.added announces it: in progress, nothing streamed yet."""
    if isinstance(item, ReasoningOutput):
        return ReasoningOutput(id=item.id)
    if isinstance(item, MessageOutput):
        return msgspec.structs.replace(item, content=[], status="in_progress")
    if isinstance(item, FunctionCallOutput):
        return msgspec.structs.replace(item, arguments="", status="in_progress")
    return msgspec.structs.replace(item, input="", status="in_progress")


def _content_events(item: OutputItem, index: int, spec: bool) -> list[ResponseEvent]:
    if isinstance(item, ReasoningOutput):
        return _reasoning_events(item, index, spec)
    if isinstance(item, MessageOutput):
        return _message_events(item, index)
    if isinstance(item, FunctionCallOutput):
        done = FunctionCallArgumentsDone(
            item_id=item.id, output_index=index, name=item.name, arguments=item.arguments
        )
        if not item.arguments:
            return [done]
        delta = FunctionCallArgumentsDelta(
            item_id=item.id, output_index=index, delta=item.arguments
        )
        return [delta, done]
    assert isinstance(item, CustomToolCallOutput)
    done_input = CustomToolCallInputDone(item_id=item.id, output_index=index, input=item.input)
    if not item.input:
        return [done_input]
    return [
        CustomToolCallInputDelta(item_id=item.id, output_index=index, delta=item.input),
        done_input,
    ]


def _message_events(item: MessageOutput, index: int) -> list[ResponseEvent]:
    events: list[ResponseEvent] = []
    for at, part in enumerate(item.content):
        added = OutputTextPart(text="")
        events.append(
            ContentPartAdded(item_id=item.id, output_index=index, content_index=at, part=added)
        )
        if part.text:
            events.append(
                OutputTextDelta(
                    item_id=item.id, output_index=index, content_index=at, delta=part.text
                )
            )
        events.append(
            OutputTextDone(item_id=item.id, output_index=index, content_index=at, text=part.text)
        )
        events.append(
            ContentPartDone(item_id=item.id, output_index=index, content_index=at, part=part)
        )
    return events


def _reasoning_events(item: ReasoningOutput, index: int, spec: bool) -> list[ResponseEvent]:
    delta_event = ReasoningDelta if spec else ReasoningTextDelta
    done_event = ReasoningDone if spec else ReasoningTextDone
    events: list[ResponseEvent] = []
    item_id = item.id
    for at, summary in enumerate(item.summary):
        events.append(
            ReasoningSummaryPartAdded(
                item_id=item_id, output_index=index, summary_index=at, part=SummaryText(text="")
            )
        )
        if summary.text:
            events.append(
                ReasoningSummaryTextDelta(
                    item_id=item_id, output_index=index, summary_index=at, delta=summary.text
                )
            )
        events.append(
            ReasoningSummaryTextDone(
                item_id=item_id, output_index=index, summary_index=at, text=summary.text
            )
        )
        events.append(
            ReasoningSummaryPartDone(
                item_id=item_id, output_index=index, summary_index=at, part=summary
            )
        )
    for at, part in enumerate(item.content):
        empty = ReasoningTextPart(text="")
        events.append(
            ContentPartAdded(item_id=item_id, output_index=index, content_index=at, part=empty)
        )
        if part.text:
            events.append(
                delta_event(item_id=item_id, output_index=index, content_index=at, delta=part.text)
            )
        events.append(
            done_event(item_id=item_id, output_index=index, content_index=at, text=part.text)
        )
        events.append(
            ContentPartDone(item_id=item_id, output_index=index, content_index=at, part=part)
        )
    return events
