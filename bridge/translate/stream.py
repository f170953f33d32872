"""Chat Completions chunks -> Responses stream events: a pure state machine.

Every item is announced (output_item.added) before its deltas and closed with its done
events; `output_index` grows by one per item and `sequence_number` by one per event.
Reasoning and text are single open items that close when the stream switches to another
kind of output; tool calls stay open until the stream ends, because a provider may
interleave the argument chunks of parallel calls.

A turn may take several upstream attempts (retries before any output): `restart` gives
each attempt fresh state while the response and its event numbering go on. The end comes
in two steps, so that a store write can sit between them: `close` ends every item and
settles the response object, `terminal` makes the completed or incomplete event.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from bridge.config import QuirksConfig
from bridge.errors import ApiError, upstream_error
from bridge.translate.dialect import (
    PLAIN,
    Dialect,
    thought_signature,
)
from bridge.translate.ids import new_id as random_id
from bridge.translate.output_format import OutputCheck
from bridge.translate.quirks import ContentFilters
from bridge.translate.text_items import TextItems
from bridge.translate.tool_calls import ToolCalls
from bridge.translate.tools import ToolMap
from bridge.translate.usage import convert_usage
from bridge.wire.chat import ChatChunk, ChatUsage, ToolCallDelta
from bridge.wire.events import (
    CustomToolCallOutput,
    FunctionCallOutput,
    IncompleteDetails,
    MessageOutput,
    OutputItem,
    OutputItemAdded,
    ReasoningOutput,
    ResponseCompleted,
    ResponseCreated,
    ResponseError,
    ResponseEvent,
    ResponseFailed,
    ResponseIncomplete,
    ResponseInProgress,
    ResponseObject,
)

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


class StreamTranslator:
    """Feeds on parsed upstream chunks, returns the Responses events each one produces."""

    def __init__(
        self,
        response: ResponseObject,
        tool_map: ToolMap,
        *,
        include_encrypted_reasoning: bool = False,
        reasoning_summary: bool = False,
        quirks: QuirksConfig | None = None,
        reasoning_events: str = "openai",
        dialect: Dialect = PLAIN,
        output_check: OutputCheck | None = None,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[str], str] = random_id,
    ) -> None:
        self.response = response
        self.quirks = quirks or QuirksConfig()
        self._dialect = dialect
        self._output_check = output_check
        # Set by `close` when the answer is not what text.format asked for (a provider that
        # could not be held to it): the turn then ends failed, its output kept.
        self.invalid_output: ApiError | None = None
        self._tool_map = tool_map
        self._include_encrypted = include_encrypted_reasoning
        self._summary = reasoning_summary
        self._specification_events = reasoning_events == "specification"
        self._clock = clock
        self._new_id = new_id
        self._seq = 0
        self._events: list[ResponseEvent] = []
        # True once the final event (completed, incomplete or failed) exists.
        self.ended = False
        # What the turn failed with, once it has.
        self.failure: ApiError | None = None
        self.restart()

    def restart(self) -> None:
        """Fresh state for a new upstream attempt: nothing of an abandoned attempt (text a
        filter held back, a call whose name never came) may leak into the next. Only
        before any output item exists (retries happen only then)."""
        assert not self.response.output, "an attempt with output cannot be restarted"
        quirks = self.quirks
        self._content = (
            ContentFilters(quirks.think_tags, quirks.dsml_tool_calls, self._dialect.think_tag)
            if quirks.think_tags or quirks.dsml_tool_calls
            else None
        )
        self._text = TextItems(
            self._emit,
            self._add_item,
            self._new_id,
            summary=self._summary,
            specification_events=self._specification_events,
            include_encrypted=self._include_encrypted,
            reasoning_in_details=self._dialect.reasoning_in_details,
        )
        self._tool_calls = ToolCalls(
            self._tool_map, self.quirks, self._emit, self._add_item, self._new_id
        )
        self._finish_reason: str | None = None
        self._usage: ChatUsage | None = None

    # -- public API ---------------------------------------------------------------

    def start(self) -> list[ResponseEvent]:
        """response.created and response.in_progress, sent before the upstream answers."""
        self._emit(ResponseCreated(response=self._snapshot()))
        # A background response is created queued; it runs from here on.
        self.response.status = "in_progress"
        self._emit(ResponseInProgress(response=self._snapshot()))
        return self._take()

    def heartbeat(self) -> ResponseEvent:
        """An event for long silences; Codex's idle timer counts only events.

        It is response.in_progress carrying the output exactly as a client has built it
        from the events so far (each open item with the text and arguments streamed to it):
        openai-node's stream helper replaces its snapshot with this event's response, so
        anything less would lose what it had. An unknown event type instead is rejected by
        openai-node before 6.49 ("Unhandled response stream event"), and an SSE comment is
        not counted by Codex (all verified with the clients themselves).
        """
        event = ResponseInProgress(response=self.as_streamed(), sequence_number=self._seq)
        self._seq += 1
        return event

    def as_streamed(self) -> ResponseObject:
        """The response as a client has built it from the events so far (usage left out
        until the end); the response itself once it has ended."""
        if self.ended or self.response.status not in ("queued", "in_progress"):
            return self.response  # settled: its usage and final output are in place
        if self._text.pending is not None:
            self._text.flush()
        output = [self._as_streamed(item) for item in self.response.output]
        return msgspec.structs.replace(self.response, output=output, usage=None)

    def mark_cancelled(self) -> None:
        """Settle the response as cancelled by its client (a background response); the
        terminal event is response.failed, the one event for a response that stopped
        without an answer, its response saying cancelled."""
        self.mark_failed(
            ApiError(400, "The response was cancelled by its client.", code="cancelled")
        )
        self.response.status = "cancelled"

    def _as_streamed(self, item: OutputItem) -> OutputItem:
        """A copy of an output item as the client knows it now."""
        if isinstance(item, FunctionCallOutput | CustomToolCallOutput):
            return self._tool_calls.as_streamed(item)
        if isinstance(item, ReasoningOutput | MessageOutput):
            return self._text.as_streamed(item)
        return msgspec.structs.replace(item)

    def feed(self, chunk: ChatChunk) -> list[ResponseEvent]:
        """Events for one upstream chunk. Raises ApiError for an error inside the stream."""
        self.add(chunk)
        return self.take()

    def add(self, chunk: ChatChunk) -> None:
        """Take in one chunk without collecting its events yet (see take): the text of
        consecutive chunks then leaves as one delta. Raises ApiError like feed."""
        if chunk.error is not None:
            err = chunk.error
            raise upstream_error(None, err.message or "error in stream", err.code)
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in chunk.choices:
            if choice.index not in (0, None):
                continue
            if choice.usage is not None:
                # Moonshot/Kimi put the last chunk's usage inside the choice.
                self._usage = choice.usage
            delta = choice.delta
            if delta is not None:
                reasoning = delta.reasoning_content
                if not reasoning and self.quirks.reasoning_alias:
                    reasoning = delta.reasoning
                if reasoning and not self._text.text_in_details:
                    self._text.reasoning(reasoning)
                if delta.reasoning_details:
                    self._text.details(delta.reasoning_details)
                text = delta.content or delta.refusal
                if text:
                    self._content_delta(text)
                calls = delta.tool_calls
                if calls:
                    if self._dialect.signatures:
                        calls = self._signed(calls)
                    self._text.close()
                    for call_delta in calls:
                        self._tool_calls.delta(call_delta)
            if choice.finish_reason:
                self._finish_reason = choice.finish_reason

    def add_text(self, text: str) -> None:
        """Take in the content of chunks that hold content and nothing else (most of a
        stream, taken in runs by the relay): what `add` does with such a chunk."""
        self._content_delta(text)

    def text_now(self, text: str) -> list[ResponseEvent] | None:
        """`add_text(text)` then `take()`, in one step for the usual case (nothing else
        taken in since the last take, the message open, the content filters letting
        `text` through as it is); None otherwise, and nothing done."""
        if self._events:
            return None
        content = self._content
        if content is not None and not content.passes(text):
            return None
        event = self._text.text_delta(text)
        if event is None:
            return None
        event.sequence_number = self._seq
        self._seq += 1
        return [event]

    def take(self) -> list[ResponseEvent]:
        """The events produced since the last take, in order, numbered."""
        return self._take()

    @property
    def produced_output(self) -> bool:
        """Whether an output item exists (then the attempt cannot be retried)."""
        return bool(self.response.output)

    def answered_without_generating(self) -> None:
        """The turn ends with no output and no upstream request (a warm-up): `close`
        then completes it."""
        self._finish_reason = "stop"

    def close(self) -> list[ResponseEvent]:
        """Close every item and settle the response (status, usage); the terminal event
        comes from `terminal`. Raises ApiError for a stream without a finish_reason: its
        answer is incomplete and must end failed."""
        if self._finish_reason is None:
            raise ApiError.server(
                "upstream stream ended without a finish_reason: the answer is incomplete"
            )
        self._flush_content()
        self._text.close()
        self._tool_calls.close_all()
        self.response.usage = convert_usage(self._usage, self._dialect)
        self.response.completed_at = int(self._clock())
        reason = INCOMPLETE_REASONS.get(self._finish_reason)
        if reason is not None:
            self.response.status = "incomplete"
            self.response.incomplete_details = IncompleteDetails(reason=reason)
        else:
            self.response.status = "completed"
            self._check_output()
        return self._take()

    def _check_output(self) -> None:
        check = self._output_check
        if check is None:
            return
        text = "".join(
            part.text
            for item in self.response.output
            if isinstance(item, MessageOutput)
            for part in item.content
        )
        calls = any(
            not isinstance(item, MessageOutput | ReasoningOutput) for item in self.response.output
        )
        if calls and not text:
            return  # a tool call: the answer comes in a later turn
        problem = check.problem(text)
        if problem is not None:
            self.invalid_output = ApiError.server(
                f"{problem} (the provider cannot be held to text.format; the answer is in "
                "the response's output)",
                code="invalid_output",
            )

    def terminal(self) -> list[ResponseEvent]:
        """response.completed or response.incomplete, after `close`."""
        self.ended = True
        if self.response.status == "incomplete":
            self._emit(ResponseIncomplete(response=self.response))
        else:
            self._emit(ResponseCompleted(response=self.response))
        return self._take()

    def finish(self) -> list[ResponseEvent]:
        """close and terminal together (no write between them); failed without a finish."""
        try:
            events = self.close()
        except ApiError as exc:
            return self.fail(exc)
        return events + self.terminal()

    def mark_failed(self, error: ApiError) -> None:
        """Settle the response as failed (the store records it so); `failed` makes the
        terminal event. Open items are not completed: their output is partial."""
        self._events.clear()
        self._text.drop_pending()
        self.failure = error
        self.response.status = "failed"
        self.response.error = ResponseError(
            code=error.code or "server_error", message=error.message
        )
        if self._usage is not None:
            self.response.usage = convert_usage(self._usage, self._dialect)
        self.response.completed_at = None

    def failed(self) -> list[ResponseEvent]:
        """response.failed, after mark_failed."""
        self.ended = True
        self._emit(ResponseFailed(response=self.response))
        return self._take()

    def fail(self, error: ApiError) -> list[ResponseEvent]:
        """mark_failed and failed together."""
        self.mark_failed(error)
        return self.failed()

    # -- internals ----------------------------------------------------------------

    def _emit(self, event: ResponseEvent) -> None:
        if self._text.pending is not None:
            self._text.flush()
        event.sequence_number = self._seq
        self._seq += 1
        self._events.append(event)

    def _take(self) -> list[ResponseEvent]:
        if self._text.pending is not None:
            self._text.flush()
        events = self._events
        self._events = []
        return events

    def _snapshot(self) -> ResponseObject:
        # In-progress events carry the response without its output: events may be encoded
        # after later chunks changed the live object, and the SDK keeps the output it has
        # already accumulated from the item events.
        return msgspec.structs.replace(self.response, output=[], usage=None)

    def _add_item(
        self, item: ReasoningOutput | MessageOutput | FunctionCallOutput | CustomToolCallOutput
    ) -> int:
        index = len(self.response.output)
        self.response.output.append(item)
        # A copy: the live item changes before this event may be encoded. Item fields are
        # only ever reassigned, never mutated in place, so a shallow copy is a snapshot.
        self._emit(OutputItemAdded(output_index=index, item=msgspec.structs.replace(item)))
        return index

    def _signed(self, calls: list[ToolCallDelta]) -> list[ToolCallDelta]:
        """Gemini: each call's thought signature kept in the reasoning item before the call
        (opened for it when none is open), naming the call; a signed call without an id is
        given one here so that the signature can name it."""
        kept = []
        for call in calls:
            signature = thought_signature(call.extra_content)
            if signature is not None:
                call_id = self._tool_calls.call_id(call)
                if call_id is None:
                    call_id = self._new_id("call")
                    call = msgspec.structs.replace(call, id=call_id)
                self._text.sign(call_id, signature)
            kept.append(call)
        return kept

    def _content_delta(self, text: str) -> None:
        if self._content is None:
            self._text.text(text)
            return
        for kind, piece in self._content.feed(text):
            if kind == "reasoning":
                self._text.reasoning(piece)
            else:
                self._text.text(piece)

    def _flush_content(self) -> None:
        """What the content filters held back, and tool calls they found in markup."""
        if self._content is None:
            return
        segments, calls = self._content.finish()
        for kind, piece in segments:
            if kind == "reasoning":
                self._text.reasoning(piece)
            else:
                self._text.text(piece)
        if calls:
            self._text.close()
        for found in calls:
            self._tool_calls.add_whole(found.name, found.arguments)
