"""The store as the rest of the bridge sees it, whichever database is behind it.

bridge.store.sqlite (a file, for one bridge) and bridge.store.postgres (for several bridges
sharing their conversations) implement it; bridge.store.backends opens the one a config
asks for. Failures are the exceptions of bridge.store.errors, never a driver's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bridge.records import TurnRecord
    from bridge.store.health import StoreHealth
    from bridge.store.replays import ReplayCache
    from bridge.store.values import (
        Chain,
        ConversationPage,
        ConversationRow,
        Item,
        ItemsPage,
        ReasoningQuery,
        ResponseRow,
    )
    from bridge.translate.reasoning import Reasoning

# save_turn's default: find the earlier response whose input this one extends.
FIND_BASE: Any = object()


class Opening(enum.Enum):
    """What opening the store may do to the database's schema, and what it accepts."""

    # `serve` with `[store] migrate = "auto"`: an older schema is migrated; a newer one it
    # cannot use is reported (/readyz, 503s) while the bridge serves what needs no store.
    SERVE_MIGRATING = "serve-migrating"
    # `serve` with `migrate = "never"`: an older schema is refused (run `migrate`).
    SERVE = "serve"
    # A command that changes rows (`sessions delete|prune`): never migrates; an older or
    # unusable newer schema is refused.
    WRITE = "write"
    # A command that only reads (`sessions list|show|export`): the same, read-only.
    READ = "read"

    @property
    def migrates(self) -> bool:
        return self is Opening.SERVE_MIGRATING

    @property
    def serves(self) -> bool:
        return self in (Opening.SERVE_MIGRATING, Opening.SERVE)

    @property
    def read_only(self) -> bool:
        return self is Opening.READ


class Store(Protocol):
    """Responses, their input items, reasoning indexed by scope, background runs and
    conversations, kept in a database."""

    # The database as messages name it (the file, or the URL without its password).
    label: str
    # Whether it takes writes and its schema is usable (kept current in the background),
    # and the spool of what it could not take.
    health: StoreHealth
    # Recent conversations' stored inputs, to match replays without digesting them.
    replays: ReplayCache
    # Called with a response id another bridge asked to cancel (set by the app).
    on_cancel: Callable[[str], None] | None

    @property
    def schema_version(self) -> int: ...

    async def close(self) -> None: ...

    async def write_problem(self) -> str | None:
        """Why the database cannot take writes now (None: it can), within about a second."""

    # -- writes ---------------------------------------------------------------------------

    async def save_turn(self, record: TurnRecord, *, base: Any = FIND_BASE) -> None:
        """Write one turn (only its input items past `base`, which the write checks)."""

    async def save_turn_shielded(self, record: TurnRecord, *, base: Any = FIND_BASE) -> list[str]:
        """The turn written, or kept in the spool when the database cannot take it (what is
        pending then); finished even if the caller is cancelled meanwhile."""

    async def save_events(self, response_id: str, frames: bytes) -> list[str]:
        """Keep a background response's events (their SSE frames), or spool them."""

    async def delete_response(self, response_id: str, *, client: str | None = None) -> bool:
        """Delete a stored response (any of the client's; None: any, for the CLI)."""

    async def prune(self, *, max_age_days: float, max_size_mb: float) -> int:
        """Apply the retention limits now; how many responses were deleted."""

    # -- background runs ----------------------------------------------------------------

    async def claim_run(self, response_id: str) -> None: ...

    async def release_run(self, response_id: str) -> None: ...

    async def listen_for_cancels(self) -> None: ...

    async def ask_to_cancel(self, response_id: str) -> None: ...

    async def fail_interrupted(self, message: str, keep: Collection[str] = ()) -> list[str]:
        """Mark failed the background responses whose process is gone (but those in `keep`)."""

    # -- reads --------------------------------------------------------------------------

    async def get_response(self, response_id: str, client: str | None = None) -> bytes | None:
        """The stored response object JSON, as it was served (None: not this client's)."""

    async def response_events(
        self, response_id: str, client: str | None = None
    ) -> tuple[bytes, bytes | None] | None: ...

    async def find_items(self, item_ids: Sequence[str], client: str | None) -> dict[str, bytes]:
        """The JSON of each item found by id among the client's stored responses."""

    async def input_items(
        self,
        response_id: str,
        client: str | None = None,
        *,
        limit: int = 20,
        descending: bool = True,
        after: str | None = None,
    ) -> ItemsPage | None: ...

    async def chain(self, response_id: str, client: str | None = None) -> Chain:
        """The items of a previous_response_id chain; ChainNotFound if a link is missing."""

    async def find_base(self, client: str, digests: Sequence[bytes]) -> tuple[str, int] | None:
        """The stored response whose whole input the digested items start with."""

    async def find_reasoning(
        self, client: str, conversation: str | None, queries: Sequence[ReasoningQuery]
    ) -> list[Reasoning | None]: ...

    async def list_responses(
        self, *, limit: int = 50, session_id: str | None = None, thread_id: str | None = None
    ) -> list[ResponseRow]: ...

    async def export(self, response_id: str) -> dict[str, Any] | None: ...

    # -- conversations (the Conversations API) --------------------------------------------

    async def create_conversation(
        self, conversation_id: str, client: str, metadata: bytes, items: Sequence[Item]
    ) -> ConversationRow: ...

    async def get_conversation(
        self, conversation_id: str, client: str
    ) -> ConversationRow | None: ...

    async def update_conversation(
        self, conversation_id: str, client: str, metadata: bytes
    ) -> ConversationRow | None: ...

    async def delete_conversation(self, conversation_id: str, client: str) -> bool: ...

    async def append_conversation(
        self, conversation_id: str, client: str, items: Sequence[Item]
    ) -> list[bytes] | None: ...

    async def conversation_items(self, conversation_id: str, client: str) -> list[bytes] | None: ...

    async def conversation_page(
        self,
        conversation_id: str,
        client: str,
        *,
        limit: int,
        descending: bool,
        after: str | None,
    ) -> ConversationPage | None: ...

    async def conversation_item(
        self, conversation_id: str, client: str, item_id: str
    ) -> bytes | None: ...

    async def delete_conversation_item(
        self, conversation_id: str, client: str, item_id: str
    ) -> bool: ...
