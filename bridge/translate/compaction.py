"""Compaction (POST /v1/responses/compact) as the bridge does it over Chat Completions (pure).

A conversation's window is split in what can go and what must stay. What stays: the
newest user message, and each assistant turn with a tool call still open (its reasoning
items, its calls, the outputs already given), so that the client's next tool output still
answers a call. Everything else is summarised by the model (bridge.compaction asks it) and
comes back as one `compaction` item whose `encrypted_content` is the bridge's own carrier:
the summary, and the reasoning of the kept tool-call turns (a thinking provider rejects a
replayed tool-call turn without it, and a client may drop reasoning items). When a later
request includes the item, the bridge expands it again: the summary becomes a user message
where the item stands. Like the reasoning carrier (bridge.translate.reasoning) it is not
secret, only recognisable.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bridge.translate.reasoning import Reasoning

_PREFIX = "rbc1."
CALL_TYPES = frozenset({"function_call", "custom_tool_call"})
OUTPUT_TYPES = frozenset({"function_call_output", "custom_tool_call_output"})
# Items of an assistant turn: what comes between two user (or tool output) items.
TURN_TYPES = frozenset({"reasoning", *CALL_TYPES})

SUMMARY_PROMPT = (
    "Write a summary of the conversation above. It will replace the conversation: the work "
    "goes on from your summary alone, with the latest user message kept as it is after it. "
    "Keep everything needed to carry on: the user's goals, constraints and preferences, the "
    "decisions made and why, facts, names, numbers, files and commands involved, what the "
    "tool calls returned, and what remains to be done. Write it as plain notes, without a "
    "preamble and without addressing anyone."
)
# How the summary reads where a compaction item is expanded.
SUMMARY_HEADING = "Summary of the earlier part of this conversation (it was compacted):"


class Compacted(msgspec.Struct, frozen=True):
    """What a compaction item carries."""

    summary: str
    # Reasoning of the kept tool-call turns, by call id.
    reasoning: dict[str, Reasoning] = {}


_COMPACTED = msgspec.json.Decoder(Compacted)


def encode_compaction(compacted: Compacted) -> str:
    """The carrier string of a compaction item."""
    data = zlib.compress(msgspec.json.encode(compacted), 6)
    return _PREFIX + base64.urlsafe_b64encode(data).decode("ascii")


def decode_compaction(value: str) -> Compacted | None:
    """What a compaction item carries, or None if it is not one the bridge made."""
    if not value.startswith(_PREFIX):
        return None
    try:
        return _COMPACTED.decode(zlib.decompress(base64.urlsafe_b64decode(value[len(_PREFIX) :])))
    except (binascii.Error, ValueError, zlib.error, msgspec.DecodeError):
        return None


def summary_text(summary: str) -> str:
    """The user message a compaction item becomes."""
    return f"{SUMMARY_HEADING}\n\n{summary}"


def _kind(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind is None and "role" in item:
        return "message"
    return kind if isinstance(kind, str) else None


def _is_user_message(item: Any) -> bool:
    return _kind(item) == "message" and item.get("role") == "user"


@dataclass(slots=True)
class Window:
    """A conversation split for compaction (indexes into the window's items)."""

    items: Sequence[Any]
    # The newest user message, kept as it is (None: the window has none).
    newest_user: int | None = None
    # Items of assistant turns with an open tool call, and the outputs they already have.
    kept_turns: list[int] = field(default_factory=list)

    @property
    def summarised(self) -> list[Any]:
        """What the model summarises: everything but the kept turns (the newest user
        message included, as context; the summary leaves it out)."""
        kept = set(self.kept_turns)
        return [item for index, item in enumerate(self.items) if index not in kept]

    @property
    def has_history(self) -> bool:
        """Whether anything goes: an item besides the newest user message and kept turns."""
        kept = {*self.kept_turns, self.newest_user}
        return any(index not in kept for index in range(len(self.items)))

    def kept_call_ids(self) -> list[str]:
        return [
            str(self.items[index].get("call_id"))
            for index in self.kept_turns
            if _kind(self.items[index]) in CALL_TYPES
        ]


def split_window(items: Sequence[Any]) -> Window:
    """The window's newest user message and its assistant turns that a client's next tool
    output may still answer (a turn with a call no output in the window answers)."""
    window = Window(items)
    for index in range(len(items) - 1, -1, -1):
        if _is_user_message(items[index]):
            window.newest_user = index
            break
    answered = {item.get("call_id") for item in items if _kind(item) in OUTPUT_TYPES}
    index = 0
    while index < len(items):
        if _kind(items[index]) not in TURN_TYPES:
            index += 1
            continue
        start = index
        while index < len(items) and _kind(items[index]) in TURN_TYPES:
            index += 1
        turn = range(start, index)
        calls = {items[i].get("call_id") for i in turn if _kind(items[i]) in CALL_TYPES}
        if calls - answered:
            outputs = [
                i
                for i in range(index, len(items))
                if _kind(items[i]) in OUTPUT_TYPES and items[i].get("call_id") in calls
            ]
            window.kept_turns.extend([*turn, *outputs])
    window.kept_turns.sort()
    return window


def summary_request_input(window: Window) -> list[Any]:
    """The input the model summarises: the window less its kept turns, then the request."""
    prompt = {"type": "message", "role": "user", "content": SUMMARY_PROMPT}
    return [*window.summarised, prompt]
