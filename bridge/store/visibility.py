"""Which stored responses a client may read: its own, and those from before clients were
recorded."""

from __future__ import annotations

from typing import Any


def visible(client: str | None, column: str = "client") -> tuple[str, list[Any]]:
    """The condition (to append after a WHERE) that a response row is this client's, and its
    parameters; None: any client's (the CLI)."""
    if client is None:
        return "", []
    # NULL: rows from before clients were recorded; any client may read them, as before.
    return f" AND ({column} IS NULL OR {column} = ?)", [client]
