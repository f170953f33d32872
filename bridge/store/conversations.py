"""Conversations (the Conversations API) in SQL: each function runs on one connection, the
writes inside the caller's transaction (see migrations/0006_conversations.sql).

Every function takes the client: a conversation is found only by the client that made it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.store.database import one, rows
from bridge.store.errors import ItemNotFound


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    created_at: int
    metadata: bytes


@dataclass(frozen=True, slots=True)
class ConversationPage:
    items: list[bytes]
    has_more: bool


# An item as stored: its id and its JSON as the API lists it.
Item = tuple[str, bytes]


def _row(db: sqlite3.Connection, conversation_id: str, client: str) -> ConversationRow | None:
    found = one(
        db,
        "SELECT id, created_at, metadata FROM conversations WHERE id = ? AND client = ?",
        (conversation_id, client),
    )
    return None if found is None else ConversationRow(found[0], found[1], bytes(found[2]))


def create(
    db: sqlite3.Connection,
    conversation_id: str,
    client: str,
    now: int,
    metadata: bytes,
    items: Sequence[Item],
) -> ConversationRow:
    db.execute(
        "INSERT INTO conversations (id, client, created_at, updated_at, metadata) "
        "VALUES (?, ?, ?, ?, ?)",
        (conversation_id, client, now, now, metadata),
    )
    append(db, conversation_id, client, now, items)
    return ConversationRow(conversation_id, now, metadata)


def get(db: sqlite3.Connection, conversation_id: str, client: str) -> ConversationRow | None:
    return _row(db, conversation_id, client)


def update(
    db: sqlite3.Connection, conversation_id: str, client: str, now: int, metadata: bytes
) -> ConversationRow | None:
    db.execute(
        "UPDATE conversations SET metadata = ?, updated_at = ? WHERE id = ? AND client = ?",
        (metadata, now, conversation_id, client),
    )
    return _row(db, conversation_id, client)


def delete(db: sqlite3.Connection, conversation_id: str, client: str) -> bool:
    if _row(db, conversation_id, client) is None:
        return False
    db.execute("DELETE FROM conversation_items WHERE conversation_id = ?", (conversation_id,))
    db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
    return True


def append(
    db: sqlite3.Connection, conversation_id: str, client: str, now: int, items: Sequence[Item]
) -> list[bytes] | None:
    """Add items at the end; an item whose id the conversation already holds is kept as it
    was (a client that adds a turn's output the bridge already added). The items as they
    are now, None when there is no such conversation."""
    found = one(
        db,
        "SELECT next_position FROM conversations WHERE id = ? AND client = ?",
        (conversation_id, client),
    )
    if found is None:
        return None
    position = int(found[0])
    result: list[bytes] = []
    for item_id, body in items:
        existing = one(
            db,
            "SELECT body FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
            (conversation_id, item_id),
        )
        if existing is not None:
            result.append(bytes(existing[0]))
            continue
        db.execute(
            "INSERT INTO conversation_items (conversation_id, position, item_id, created_at, "
            "body) VALUES (?, ?, ?, ?, ?)",
            (conversation_id, position, item_id, now, body),
        )
        position += 1
        result.append(body)
    db.execute(
        "UPDATE conversations SET next_position = ?, updated_at = ? WHERE id = ?",
        (position, now, conversation_id),
    )
    return result


def all_items(db: sqlite3.Connection, conversation_id: str, client: str) -> list[bytes] | None:
    """Every item in order (a turn's history); None when there is no such conversation."""
    if _row(db, conversation_id, client) is None:
        return None
    return [
        bytes(row[0])
        for row in rows(
            db,
            "SELECT body FROM conversation_items WHERE conversation_id = ? ORDER BY position",
            (conversation_id,),
        )
    ]


def page(
    db: sqlite3.Connection,
    conversation_id: str,
    client: str,
    *,
    limit: int,
    descending: bool,
    after: str | None,
) -> ConversationPage | None:
    """One page of items; ItemNotFound for an `after` the conversation does not hold."""
    if _row(db, conversation_id, client) is None:
        return None
    condition = ""
    params: list[object] = [conversation_id]
    if after is not None:
        mark = one(
            db,
            "SELECT position FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
            (conversation_id, after),
        )
        if mark is None:
            raise ItemNotFound(after)
        condition = " AND position < ?" if descending else " AND position > ?"
        params.append(mark[0])
    order = "DESC" if descending else "ASC"
    found = rows(
        db,
        f"SELECT body FROM conversation_items WHERE conversation_id = ?{condition} "
        f"ORDER BY position {order} LIMIT ?",
        (*params, limit + 1),
    )
    return ConversationPage([bytes(row[0]) for row in found[:limit]], len(found) > limit)


def get_item(
    db: sqlite3.Connection, conversation_id: str, client: str, item_id: str
) -> bytes | None:
    found = one(
        db,
        "SELECT body FROM conversation_items JOIN conversations ON conversations.id = "
        "conversation_items.conversation_id WHERE conversation_id = ? AND item_id = ? "
        "AND client = ?",
        (conversation_id, item_id, client),
    )
    return None if found is None else bytes(found[0])


def delete_item(
    db: sqlite3.Connection, conversation_id: str, client: str, item_id: str, now: int
) -> bool:
    if _row(db, conversation_id, client) is None:
        return False
    cursor = db.execute(
        "DELETE FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
        (conversation_id, item_id),
    )
    if cursor.rowcount <= 0:
        return False
    db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
    return True


def delete_idle(db: sqlite3.Connection, cutoff: int, limit: int) -> int:
    """Up to `limit` conversations untouched since `cutoff`, with their items; how many."""
    found = [
        row[0]
        for row in rows(
            db,
            "SELECT id FROM conversations WHERE updated_at < ? ORDER BY updated_at LIMIT ?",
            (cutoff, limit),
        )
    ]
    for conversation_id in found:
        db.execute("DELETE FROM conversation_items WHERE conversation_id = ?", (conversation_id,))
        db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
    return len(found)
