"""Conversations (the Conversations API) in SQL, the writes inside the caller's transaction
(see migrations/0006_conversations.sql).

Every query takes the client: a conversation is found only by the client that made it.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.store.errors import ItemNotFound
from bridge.store.statements import Query, binary, execute, fetch, fetch_one, fetch_value
from bridge.store.values import ConversationPage, ConversationRow, Item

# Conversations deleted per retention step (each with all its items).
IDLE_BATCH = 20


def get(conversation_id: str, client: str) -> Query[ConversationRow | None]:
    found = yield from fetch_one(
        "SELECT id, created_at, metadata FROM conversations WHERE id = ? AND client = ?",
        (conversation_id, client),
    )
    return None if found is None else ConversationRow(found[0], found[1], binary(found[2]))


def create(
    conversation_id: str, client: str, now: int, metadata: bytes, items: Sequence[Item]
) -> Query[ConversationRow]:
    yield from execute(
        "INSERT INTO conversations (id, client, created_at, updated_at, metadata) "
        "VALUES (?, ?, ?, ?, ?)",
        (conversation_id, client, now, now, metadata),
    )
    yield from append(conversation_id, client, now, items)
    return ConversationRow(conversation_id, now, metadata)


def update(
    conversation_id: str, client: str, now: int, metadata: bytes
) -> Query[ConversationRow | None]:
    yield from execute(
        "UPDATE conversations SET metadata = ?, updated_at = ? WHERE id = ? AND client = ?",
        (metadata, now, conversation_id, client),
    )
    return (yield from get(conversation_id, client))


def delete(conversation_id: str, client: str) -> Query[bool]:
    if (yield from get(conversation_id, client)) is None:
        return False
    yield from _delete_with_items(conversation_id)
    return True


def _delete_with_items(conversation_id: str) -> Query[None]:
    yield from execute(
        "DELETE FROM conversation_items WHERE conversation_id = ?", (conversation_id,)
    )
    yield from execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))


def append(
    conversation_id: str, client: str, now: int, items: Sequence[Item]
) -> Query[list[bytes] | None]:
    """Add items at the end; an item whose id the conversation already holds is kept as it
    was (a client that adds a turn's output the bridge already added). The items as they
    are now, None when there is no such conversation."""
    # Touched first: on PostgreSQL that locks the row until the commit, so two bridges
    # appending to one conversation take positions in turn (SQLite's writer holds the file).
    touched = yield from execute(
        "UPDATE conversations SET updated_at = ? WHERE id = ? AND client = ?",
        (now, conversation_id, client),
    )
    if not touched:
        return None
    position = int(
        (
            yield from fetch_value(
                "SELECT next_position FROM conversations WHERE id = ?", (conversation_id,)
            )
        )
    )
    result: list[bytes] = []
    for item_id, body in items:
        existing = yield from fetch_value(
            "SELECT body FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
            (conversation_id, item_id),
        )
        if existing is not None:
            result.append(binary(existing))
            continue
        yield from execute(
            "INSERT INTO conversation_items (conversation_id, position, item_id, created_at, "
            "body) VALUES (?, ?, ?, ?, ?)",
            (conversation_id, position, item_id, now, body),
        )
        position += 1
        result.append(body)
    yield from execute(
        "UPDATE conversations SET next_position = ? WHERE id = ?", (position, conversation_id)
    )
    return result


def all_items(conversation_id: str, client: str) -> Query[list[bytes] | None]:
    """Every item in order (a turn's history); None when there is no such conversation."""
    if (yield from get(conversation_id, client)) is None:
        return None
    found = yield from fetch(
        "SELECT body FROM conversation_items WHERE conversation_id = ? ORDER BY position",
        (conversation_id,),
    )
    return [binary(row[0]) for row in found]


def page(
    conversation_id: str, client: str, *, limit: int, descending: bool, after: str | None
) -> Query[ConversationPage | None]:
    """One page of items; ItemNotFound for an `after` the conversation does not hold."""
    if (yield from get(conversation_id, client)) is None:
        return None
    condition = ""
    params: list[object] = [conversation_id]
    if after is not None:
        mark = yield from fetch_value(
            "SELECT position FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
            (conversation_id, after),
        )
        if mark is None:
            raise ItemNotFound(after)
        condition = " AND position < ?" if descending else " AND position > ?"
        params.append(mark)
    order = "DESC" if descending else "ASC"
    found = yield from fetch(
        f"SELECT body FROM conversation_items WHERE conversation_id = ?{condition} "
        f"ORDER BY position {order} LIMIT ?",
        (*params, limit + 1),
    )
    return ConversationPage([binary(row[0]) for row in found[:limit]], len(found) > limit)


def get_item(conversation_id: str, client: str, item_id: str) -> Query[bytes | None]:
    found = yield from fetch_value(
        "SELECT i.body FROM conversation_items i JOIN conversations c "
        "ON c.id = i.conversation_id WHERE i.conversation_id = ? AND i.item_id = ? "
        "AND c.client = ?",
        (conversation_id, item_id, client),
    )
    return None if found is None else binary(found)


def delete_item(conversation_id: str, client: str, item_id: str, now: int) -> Query[bool]:
    if (yield from get(conversation_id, client)) is None:
        return False
    removed = yield from execute(
        "DELETE FROM conversation_items WHERE conversation_id = ? AND item_id = ?",
        (conversation_id, item_id),
    )
    if removed <= 0:
        return False
    yield from execute(
        "UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id)
    )
    return True


def delete_idle(cutoff: int, limit: int = IDLE_BATCH) -> Query[int]:
    """Up to `limit` conversations untouched since `cutoff`, with their items; how many."""
    found = yield from fetch(
        "SELECT id FROM conversations WHERE updated_at < ? ORDER BY updated_at LIMIT ?",
        (cutoff, limit),
    )
    for row in found:
        yield from _delete_with_items(row[0])
    return len(found)
