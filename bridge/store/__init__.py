"""The store: responses, their input items, reasoning indexed by scope, background runs and
conversations, in SQLite (bridge.store.sqlite) or PostgreSQL (bridge.store.postgres).

The rest of the bridge sees it through the protocol (bridge.store.protocol.Store), opened by
bridge.store.backends, and catches the exceptions of bridge.store.errors. The SQL both
databases run is written once as queries (bridge.store.statements) over the schema of
migrations/; the shared operations are in bridge.store.operations.
"""

from bridge.store.errors import (
    ChainNotFound,
    DatabaseMissing,
    ItemNotFound,
    SchemaTooNew,
    SchemaTooOld,
    StoreCorrupt,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from bridge.store.protocol import Opening, Store
from bridge.store.values import (
    Chain,
    ConversationPage,
    ConversationRow,
    Item,
    ItemsPage,
    ReasoningQuery,
    ResponseRow,
)

__all__ = [
    "Chain",
    "ChainNotFound",
    "ConversationPage",
    "ConversationRow",
    "DatabaseMissing",
    "Item",
    "ItemNotFound",
    "ItemsPage",
    "Opening",
    "ReasoningQuery",
    "ResponseRow",
    "SchemaTooNew",
    "SchemaTooOld",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
]
