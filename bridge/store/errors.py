"""The store's exceptions: what callers catch, whichever database is behind the store.

Neither backend lets its driver's exceptions (sqlite3's, asyncpg's) out of the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.migrate import SchemaState


class StoreError(Exception):
    """The database cannot be opened or brought up to date."""


class DatabaseMissing(StoreError):
    """A command that only reads was pointed at a database that does not exist."""


class StoreUnavailable(StoreError):
    """The database cannot be used now (unreachable, locked, full, a statement failed); the
    request fails with 503, the bridge goes on, a turn's write goes to the spool."""


class StoreRejected(StoreError):
    """The database refused a write for what it holds (a constraint): trying it again will
    not help."""


class StoreCorrupt(StoreUnavailable):
    """The database is damaged; nothing more is written to it."""


class DatabaseMoved(StoreUnavailable):
    """The file at the database's path is gone or another one: nothing more is written to
    the file this process opened (it would be lost at the next start); turns wait in the
    spool for a restart to open the file at that path again."""


class SchemaTooNew(StoreUnavailable):
    """The database was migrated by a newer release in a way this code cannot use."""

    def __init__(self, label: str, state: SchemaState) -> None:
        super().__init__(f"{label}: {state.too_new()}")
        self.state = state


class SchemaTooOld(StoreUnavailable):
    """The database needs `responses-bridge migrate` before this code can use it."""

    def __init__(self, label: str, state: SchemaState) -> None:
        super().__init__(f"{label}: {state.too_old()}")
        self.state = state


class ChainNotFound(Exception):
    """A previous_response_id that is not stored (or not retrievable by this client)."""

    def __init__(self, response_id: str, missing: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id
        self.missing = missing


class ItemNotFound(Exception):
    """`after` named an item that is not in the listed input or conversation."""
