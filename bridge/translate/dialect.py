"""How a provider's stream says what plain Chat Completions says otherwise (pure).

Three providers put reasoning somewhere of their own:
- Gemini's OpenAI-compatible endpoint signs a tool call with
  `extra_content: {"google": {"thought_signature": ...}}` and rejects the next request
  unless the first call of each assistant turn comes back with exactly that signature
  (ai.google.dev/gemini-api/docs/thought-signatures). Its thought summaries arrive inside
  `content` as <thought>...</thought>, and its `completion_tokens` leave the thinking out
  (`total_tokens` has it).
- MiniMax with `reasoning_split` streams the reasoning text inside `reasoning_details`
  entries (`{"type": "reasoning.text", "text": ...}`), incrementally on some models and as
  growing snapshots on others (MiniMax's own example treats it as cumulative).

A signature is kept as a reasoning detail of its own kind, naming its call, so it travels
in the bridge's carrier and in the store's reasoning index like any detail;
bridge.providers turns it back into the call's `extra_content` on replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The reasoning-detail kind that holds a Gemini thought signature for one call.
SIGNATURE_DETAIL = "google.thought_signature"
# Google's documented value for a call it never signed (history from another model):
# "skip_thought_signature_validator" works on the Gemini API and on Vertex AI.
UNSIGNED_CALL = "skip_thought_signature_validator"


@dataclass(frozen=True, slots=True)
class Dialect:
    """What a provider's stream needs read differently."""

    # Reasoning text inside reasoning_details entries (MiniMax), shown as reasoning.
    reasoning_in_details: bool = False
    # The tag a model's thinking is wrapped in inside `content` (with the think_tags quirk).
    think_tag: str = "think"
    # Thought signatures on tool calls (Gemini).
    signatures: bool = False
    # completion_tokens leave the reasoning out; total_tokens has it (Gemini).
    reasoning_outside_completion: bool = False


PLAIN = Dialect()


def thought_signature(extra_content: dict[str, Any] | None) -> str | None:
    """The signature inside a Gemini `extra_content`, if any."""
    if not extra_content:
        return None
    google = extra_content.get("google")
    if not isinstance(google, dict):
        return None
    signature = google.get("thought_signature")
    return signature if isinstance(signature, str) and signature else None


def signature_detail(call_id: str, signature: str) -> dict[str, Any]:
    return {"type": SIGNATURE_DETAIL, "call_id": call_id, "thought_signature": signature}


def is_signature(detail: dict[str, Any]) -> bool:
    return detail.get("type") == SIGNATURE_DETAIL


def signature_extra(signature: str) -> dict[str, Any]:
    """A tool call's `extra_content` carrying `signature`."""
    return {"google": {"thought_signature": signature}}


class DetailTexts:
    """The new part of each streamed reasoning_details text, whether the provider streams
    increments or growing snapshots (decided per entry by its second fragment)."""

    __slots__ = ("_cumulative", "_seen")

    def __init__(self) -> None:
        self._seen: dict[Any, str] = {}
        self._cumulative: dict[Any, bool] = {}

    def new_part(self, key: Any, text: str) -> str:
        seen = self._seen.get(key, "")
        cumulative = self._cumulative.get(key)
        if cumulative is None and seen:
            cumulative = self._cumulative[key] = text.startswith(seen)
        if cumulative:
            self._seen[key] = text
            return text[len(seen) :]
        self._seen[key] = seen + text
        return text
