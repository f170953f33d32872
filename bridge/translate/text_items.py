"""The reasoning and message items of an answer as it streams (part of the stream translator,
bridge.translate.stream, which owns event numbering and output items).

Reasoning and text are single open items: each opens on its first delta and closes when the
stream switches to another kind of output. Text waits to leave as one delta until another
event comes, so the text of consecutive upstream chunks makes one event; the item keeps it a
read's worth at a time, not token by token. Reasoning can carry what the provider wants back
of it (its reasoning_details, Gemini's thought signatures): those travel in the item's
`encrypted_content` (bridge.translate.reasoning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bridge.translate.dialect import DetailTexts, signature_detail
from bridge.translate.reasoning import Details, encode_reasoning, merge_details
from bridge.wire.events import (
    ContentPartAdded,
    ContentPartDone,
    MessageOutput,
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
    ResponseEvent,
    SummaryText,
)

Emit = Callable[[ResponseEvent], None]
AddItem = Callable[[ReasoningOutput | MessageOutput], int]


@dataclass(slots=True)
class _Text:
    """An open reasoning or message item and its accumulated text."""

    item: ReasoningOutput | MessageOutput
    output_index: int
    parts: list[str] = field(default_factory=list)
    # reasoning_details fragments, for a reasoning item.
    details: list[Details] = field(default_factory=list)


class TextItems:
    """The open reasoning and message items of one upstream attempt."""

    def __init__(
        self,
        emit: Emit,
        add_item: AddItem,
        new_id: Callable[[str], str],
        *,
        summary: bool,
        specification_events: bool,
        include_encrypted: bool,
        reasoning_in_details: bool,
    ) -> None:
        self._emit = emit
        self._add_item = add_item
        self._new_id = new_id
        # Mirror the reasoning text as a reasoning summary too (clients such as Codex show
        # summaries to the user; the upstream has no separate summary to offer).
        self._summary = summary
        # OpenAI's (and Codex's) names for the reasoning text events, or the Open Responses
        # specification's (response.reasoning.delta and .done).
        self._delta_event = ReasoningDelta if specification_events else ReasoningTextDelta
        self._done_event = ReasoningDone if specification_events else ReasoningTextDone
        self._include_encrypted = include_encrypted
        # MiniMax: the reasoning text is read from reasoning_details (then
        # reasoning_content, which some of its models send too, would repeat it).
        self._reasoning_in_details = reasoning_in_details
        self._detail_texts = DetailTexts()
        self.text_in_details = False
        self._reasoning: _Text | None = None
        self._message: _Text | None = None
        # Text waiting to leave as one delta.
        self.pending: _Text | None = None
        self._pending_parts: list[str] = []

    # -- what the stream brings ------------------------------------------------------

    def reasoning(self, text: str) -> None:
        self._pend(self._open_reasoning(), text)

    def text(self, text: str) -> None:
        current = self._message
        if current is None:
            self.close_reasoning()
            item = MessageOutput(id=self._new_id("msg"))
            index = self._add_item(item)
            self._emit(
                ContentPartAdded(
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    part=OutputTextPart(text=""),
                )
            )
            current = self._message = _Text(item, index)
        self._pend(current, text)

    def details(self, entries: list[dict[str, Any]]) -> None:
        """A reasoning_details fragment, kept to be sent back; its text shown as reasoning
        where the provider puts the text only there (MiniMax)."""
        current = self._open_reasoning()
        if not self._reasoning_in_details:
            current.details.append(entries)
            return
        kept = []
        for position, entry in enumerate(entries):
            text = entry.get("text")
            if isinstance(text, str) and text:
                piece = self._detail_texts.new_part(entry.get("index", position), text)
                # Kept as increments: merge_details joins them into the whole text.
                entry = {**entry, "text": piece}
                self.text_in_details = True
                if piece:
                    self._pend(current, piece)
            kept.append(entry)
        current.details.append(kept)

    def sign(self, call_id: str, signature: str) -> None:
        """Gemini: a call's thought signature, kept in the open reasoning item (opened for
        it when there is none)."""
        self._open_reasoning().details.append([signature_detail(call_id, signature)])

    def text_delta(self, text: str) -> OutputTextDelta | None:
        """The delta of `text` for the open message, made at once when no text waits
        (what `text` then `flush` make of it); None when there is no open message or text
        waits."""
        current = self._message
        if current is None or self.pending is not None:
            return None
        current.parts.append(text)
        return OutputTextDelta(
            item_id=current.item.id, output_index=current.output_index, content_index=0, delta=text
        )

    # -- ending ------------------------------------------------------------------------

    def flush(self) -> None:
        """The waiting text as its delta event(s)."""
        current = self.pending
        assert current is not None
        self.pending = None
        text = "".join(self._pending_parts)
        current.parts.append(text)
        item = current.item
        index = current.output_index
        if isinstance(item, MessageOutput):
            self._emit(
                OutputTextDelta(item_id=item.id, output_index=index, content_index=0, delta=text)
            )
            return
        if self._summary:
            self._emit(
                ReasoningSummaryTextDelta(
                    item_id=item.id, output_index=index, summary_index=0, delta=text
                )
            )
        self._emit(
            self._delta_event(item_id=item.id, output_index=index, content_index=0, delta=text)
        )

    def drop_pending(self) -> None:
        """Forget the waiting text (the turn failed: open items stay partial)."""
        self.pending = None

    def close(self) -> None:
        self.close_reasoning()
        self.close_message()

    def close_reasoning(self) -> None:
        current = self._reasoning
        if current is None:
            return
        if self.pending is current:
            self.flush()
        self._reasoning = None
        item = current.item
        assert isinstance(item, ReasoningOutput)
        text = "".join(current.parts)
        index = current.output_index
        part = ReasoningTextPart(text=text)
        if self._summary:
            summary = SummaryText(text=text)
            self._emit(
                ReasoningSummaryTextDone(
                    item_id=item.id, output_index=index, summary_index=0, text=text
                )
            )
            self._emit(
                ReasoningSummaryPartDone(
                    item_id=item.id, output_index=index, summary_index=0, part=summary
                )
            )
            item.summary = [summary]
        self._emit(
            self._done_event(item_id=item.id, output_index=index, content_index=0, text=text)
        )
        self._emit(ContentPartDone(item_id=item.id, output_index=index, content_index=0, part=part))
        item.content = [part]
        details = merge_details(current.details) if current.details else None
        # The provider's details must come back unchanged, so they always travel.
        if self._include_encrypted or details:
            item.encrypted_content = encode_reasoning(text, details)
        item.status = "completed"
        self._emit(OutputItemDone(output_index=index, item=item))

    def close_message(self) -> None:
        current = self._message
        if current is None:
            return
        if self.pending is current:
            self.flush()
        self._message = None
        item = current.item
        assert isinstance(item, MessageOutput)
        text = "".join(current.parts)
        index = current.output_index
        part = OutputTextPart(text=text)
        self._emit(OutputTextDone(item_id=item.id, output_index=index, content_index=0, text=text))
        self._emit(ContentPartDone(item_id=item.id, output_index=index, content_index=0, part=part))
        item.content = [part]
        item.status = "completed"
        self._emit(OutputItemDone(output_index=index, item=item))

    def as_streamed(self, item: ReasoningOutput | MessageOutput) -> ReasoningOutput | MessageOutput:
        """A copy of an item as the client knows it now (its text streamed so far)."""
        for current in (self._reasoning, self._message):
            if current is not None and current.item is item:
                text = "".join(current.parts)
                if isinstance(item, ReasoningOutput):
                    summary = [SummaryText(text=text)] if self._summary else []
                    return msgspec.structs.replace(
                        item, content=[ReasoningTextPart(text=text)], summary=summary
                    )
                return msgspec.structs.replace(item, content=[OutputTextPart(text=text)])
        return msgspec.structs.replace(item)

    # -- internals ---------------------------------------------------------------------

    def _pend(self, current: _Text, text: str) -> None:
        """Text for `current`'s next delta; joined with what follows until another event."""
        if self.pending is not current:
            if self.pending is not None:
                self.flush()
            self.pending = current
            self._pending_parts = []
        self._pending_parts.append(text)

    def _open_reasoning(self) -> _Text:
        current = self._reasoning
        if current is None:
            self.close_message()
            item = ReasoningOutput(id=self._new_id("rs"))
            index = self._add_item(item)
            if self._summary:
                self._emit(
                    ReasoningSummaryPartAdded(
                        item_id=item.id,
                        output_index=index,
                        summary_index=0,
                        part=SummaryText(text=""),
                    )
                )
            self._emit(
                ContentPartAdded(
                    item_id=item.id,
                    output_index=index,
                    content_index=0,
                    part=ReasoningTextPart(text=""),
                )
            )
            current = self._reasoning = _Text(item, index)
        return current
