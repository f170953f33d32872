"""`truncation: "auto"`: a conversation too long for the model loses its oldest turns.

When the provider refuses a request for its length, the request is sent once more without
its oldest exchanges: never the system and developer messages, never the latest user
message, never a tool call without its output (an assistant message travels with the tool
messages that answer it). How much goes follows the provider's own figures when its
message names them ("maximum context length is 65536 tokens ... you requested 70000"),
else half of what may go. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec

from bridge.translate.messages import TOOL_IMAGES_NOTE
from bridge.wire.chat import ChatMessage

_ENCODER = msgspec.json.Encoder()
_NUMBERS = re.compile(r"\d[\d,]*")
# What is aimed for below the provider's limit: token counts are estimated from bytes.
MARGIN = 0.85
# Without figures from the provider: the share of what may go that goes.
WITHOUT_FIGURES = 0.5


def kept_share(message: str) -> float | None:
    """The share of the conversation to keep, from a "maximum context length is N tokens,
    you requested M" message (None when it has no such figures)."""
    if "context" not in message.lower():
        return None
    numbers = [int(text.replace(",", "")) for text in _NUMBERS.findall(message)]
    numbers = [n for n in numbers if n >= 256]
    if len(numbers) < 2:
        return None
    limit, asked = numbers[0], max(numbers[1:])
    if asked <= limit:
        return None
    return limit / asked * MARGIN


def _units(messages: Sequence[ChatMessage]) -> list[list[int]]:
    """The conversation's messages (system and developer left out) in the groups that are
    dropped together: an assistant message with the tool messages (and the images message)
    that follow it; any other message on its own."""
    units: list[list[int]] = []
    for index, message in enumerate(messages):
        if message.role in ("system", "developer"):
            continue
        follows_calls = (
            units
            and messages[units[-1][0]].role == "assistant"
            and messages[units[-1][0]].tool_calls
            and (message.role == "tool" or _tool_images(message))
        )
        if follows_calls:
            units[-1].append(index)
        else:
            units.append([index])
    return units


def _tool_images(message: ChatMessage) -> bool:
    """The user message the bridge adds after tool messages for the images they returned."""
    content = message.content
    return (
        message.role == "user"
        and isinstance(content, list)
        and bool(content)
        and content[0].get("text") == TOOL_IMAGES_NOTE
    )


def truncate(messages: Sequence[ChatMessage], share: float | None) -> list[ChatMessage] | None:
    """The messages without their oldest droppable turns, keeping about `share` of the
    droppable bytes (WITHOUT_FIGURES when None); None when nothing can go."""
    keep_share = WITHOUT_FIGURES if share is None else share
    units = _units(messages)
    last_user = max(
        (i for i, unit in enumerate(units) if messages[unit[0]].role == "user"), default=None
    )
    # The newest unit stays, and the latest user message.
    droppable = [i for i in range(len(units) - 1) if i != last_user]
    if not droppable:
        return None
    sizes = {i: sum(len(_ENCODER.encode(messages[m])) for m in units[i]) for i in droppable}
    total = sum(sizes.values())
    budget = total * keep_share
    dropped: set[int] = set()
    kept = total
    for i in droppable:  # oldest first
        if kept <= budget:
            break
        dropped.add(i)
        kept -= sizes[i]
    if not dropped:
        dropped.add(droppable[0])
    gone = {m for i in dropped for m in units[i]}
    return [message for index, message in enumerate(messages) if index not in gone]
