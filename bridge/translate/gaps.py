"""Replayed assistant turns that came without what the provider needs back of their
reasoning: the gaps the store may fill (bridge.conversation.recover_reasoning) (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.translate.dialect import is_signature
from bridge.translate.reasoning import Reasoning, turn_fingerprint
from bridge.wire.chat import ChatMessage


@dataclass(frozen=True, slots=True)
class ReplayNeeds:
    """What a provider needs back on a replayed assistant turn; a turn without it is a gap
    the store may fill (bridge.conversation.recover_reasoning)."""

    # The reasoning text, on every assistant turn.
    text: bool = True
    # The provider's own reasoning_details, unchanged (OpenRouter, MiniMax).
    details: bool = False
    # Gemini's thought signature, on a turn that calls tools.
    signatures: bool = False

    @property
    def carried(self) -> bool:
        """Whether what the bridge's carrier holds besides the text is needed."""
        return self.details or self.signatures


@dataclass(slots=True)
class ReasoningGap:
    """A replayed assistant turn that came without its reasoning (or without the details
    a provider wants back)."""

    message: ChatMessage
    call_ids: list[str]
    fingerprint: str
    # Where the message is in the upstream messages, and its context key once computed
    # (bridge.translate.context), which finds its reasoning only in the same conversation.
    index: int = 0
    context_key: str | None = None

    def fill(self, reasoning: Reasoning) -> None:
        # "" is kept: the store knows the turn came without reasoning.
        if self.message.reasoning_content is None:
            self.message.reasoning_content = reasoning.text
        if self.message.reasoning_details is None:
            self.message.reasoning_details = reasoning.details


def reasoning_gaps(messages: list[ChatMessage], needs: ReplayNeeds) -> list[ReasoningGap]:
    """Assistant turns without what the provider needs back of their reasoning, with what
    identifies them in the store."""
    gaps = []
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        calls = message.tool_calls or ()
        if not (
            (needs.text and message.reasoning_content is None)
            or (needs.details and message.reasoning_details is None)
            or (needs.signatures and calls and not _signed(message))
        ):
            continue
        call_ids = [call.id for call in calls]
        text = message.content if isinstance(message.content, str) else ""
        gaps.append(ReasoningGap(message, call_ids, turn_fingerprint(text, call_ids), index))
    return gaps


def _signed(message: ChatMessage) -> bool:
    return any(is_signature(detail) for detail in message.reasoning_details or ())
