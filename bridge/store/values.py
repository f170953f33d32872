"""What the store's reads answer and some of its operations take, whichever the database."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ResponseRow:
    """One stored response as listed for a person at a terminal."""

    id: str
    created_at: int
    model: str
    status: str
    stored: bool
    session_id: str | None
    thread_id: str | None
    input_tokens: int
    output_tokens: int
    previous_response_id: str | None
    # No output item is stored for it (always so for a store: false response).
    no_output: bool = False

    @property
    def warm_up(self) -> bool:
        """A completed turn with no output and no tokens: Codex's warm-up (`generate:
        false`), answered without asking the provider."""
        return (
            self.status == "completed"
            and self.no_output
            and self.input_tokens == 0
            and self.output_tokens == 0
        )


@dataclass(frozen=True, slots=True)
class ItemsPage:
    items: list[dict[str, Any]]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Chain:
    """A previous_response_id chain: its items oldest first, and its conversation scope."""

    items: list[dict[str, Any]]
    scope: str | None


@dataclass(frozen=True, slots=True)
class ReasoningQuery:
    """What identifies one replayed turn that came without its reasoning."""

    context_key: str | None
    fingerprint: str
    call_ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    created_at: int
    metadata: bytes


@dataclass(frozen=True, slots=True)
class ConversationPage:
    items: list[bytes]
    has_more: bool


# A conversation item as stored: its id and its JSON as the API lists it.
Item = tuple[str, bytes]
