"""The store's statements in PostgreSQL's dialect: what bridge.store.writes, reads and
conversations do on SQLite, on one asyncpg connection each (writes inside the caller's
transaction). The same tables, the same rules: a response's input is its base's input plus
its own items; deleting keeps a tombstone while later responses share its items; reasoning
is found only within its client and scope.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from bridge.records import KEY_CALL, KEY_CONTEXT, KEY_TURN, TurnRecord
from bridge.scope import LEGACY_CLIENT
from bridge.store.conversations import ConversationPage, ConversationRow, Item
from bridge.store.errors import ItemNotFound
from bridge.store.reads import (
    BASE_WINDOW,
    NO_OUTPUT,
    Chain,
    ItemsPage,
    ReasoningQuery,
    ResponseRow,
    chain_of,
    chain_query,
    lineage_query,
    page_bounds,
    pick_reasoning,
    position_in_input,
    render_item,
    with_tools,
)
from bridge.store.writes import DELETE_CHUNK, base_to_check, failed_body, key_rows, turn_rows
from bridge.translate.reasoning import Reasoning

# A connection of its own or one lent by the pool.
Connection = asyncpg.Connection | PoolConnectionProxy
# Rows looked at per retention query.
BATCH = 50


def _visible(client: str | None, first: int) -> tuple[str, list[Any]]:
    """The condition that a response row is this client's (None: any client)."""
    if client is None:
        return "", []
    return f" AND (client IS NULL OR client = ${first})", [client]


# -- writes ----------------------------------------------------------------------------


async def insert_turn(db: Connection, record: TurnRecord, base: tuple[str, int] | None) -> None:
    """What bridge.store.writes.insert_turn writes, with the same rows (turn_rows)."""
    base_count = None
    checked = base_to_check(record, base)
    if checked is not None:
        base_count = await db.fetchval(
            "SELECT input_count FROM responses WHERE id = $1 AND NOT deleted", checked
        )
    rows = turn_rows(record, base, base_count)
    content = record.content
    if content is not None and content.tools is not None:
        await db.execute(
            "INSERT INTO blobs (hash, body) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            content.tools_hash,
            content.tools,
        )
    await db.executemany(
        "INSERT INTO input_items (response_id, position, item_id, body) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (response_id, position) "
        "DO UPDATE SET item_id = excluded.item_id, body = excluded.body",
        rows.items,
    )
    await db.execute(
        "INSERT INTO responses (id, created_at, model, status, previous_response_id, stored, "
        "deleted, client, scope, session_id, thread_id, input_tokens, output_tokens, "
        "input_base, input_offset, input_count, input_hash, request, response, tools_hash) "
        "VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
        "$17, $18, $19) ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at, "
        "model = excluded.model, status = excluded.status, "
        "previous_response_id = excluded.previous_response_id, stored = excluded.stored, "
        "deleted = false, client = excluded.client, scope = excluded.scope, "
        "session_id = excluded.session_id, thread_id = excluded.thread_id, "
        "input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens, "
        "input_base = excluded.input_base, input_offset = excluded.input_offset, "
        "input_count = excluded.input_count, input_hash = excluded.input_hash, "
        "request = excluded.request, response = excluded.response, "
        "tools_hash = excluded.tools_hash",
        *rows.response,
    )
    if content is not None:
        await db.execute("DELETE FROM output_items WHERE response_id = $1", record.id)
        await db.executemany(
            "INSERT INTO output_items (item_id, response_id, position) VALUES ($1, $2, $3) "
            "ON CONFLICT (item_id, response_id) DO UPDATE SET position = excluded.position",
            rows.outputs,
        )
    reasoning = record.reasoning
    if reasoning is not None:
        reasoning_id = await db.fetchval(
            "INSERT INTO reasoning (response_id, created_at, text, details) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            record.id,
            record.created_at,
            reasoning.text,
            reasoning.details,
        )
        await db.executemany(
            "INSERT INTO reasoning_keys (client, scope, kind, value, reasoning_id) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client, scope, kind, value) "
            "DO UPDATE SET reasoning_id = excluded.reasoning_id",
            key_rows(record, reasoning_id),
        )


async def mark_deleted(
    db: Connection, response_id: str, *, client: str | None, stored_only: bool
) -> bool:
    conditions = ["id = $1", "NOT deleted"]
    params: list[Any] = [response_id]
    if client is not None:
        conditions.append("(client IS NULL OR client = $2)")
        params.append(client)
    if stored_only:
        conditions.append("stored")
    status = await db.execute(
        "UPDATE responses SET deleted = true, stored = false, request = NULL, response = NULL, "
        f"tools_hash = NULL WHERE {' AND '.join(conditions)}",
        *params,
    )
    if status.endswith(" 0"):
        return False
    for table in ("reasoning", "output_items", "response_events"):
        await db.execute(f"DELETE FROM {table} WHERE response_id = $1", response_id)
    return True


async def remove_tombstone(db: Connection, response_id: str) -> str | None:
    """One bounded step of removing a tombstone (see bridge.store.writes.remove_tombstone)."""
    base = await db.fetchrow(
        "SELECT input_base FROM responses WHERE id = $1 AND deleted", response_id
    )
    if base is None:
        return None
    child = await db.fetchval("SELECT 1 FROM responses WHERE input_base = $1 LIMIT 1", response_id)
    if child is not None:
        return None
    status = await db.execute(
        "DELETE FROM input_items WHERE ctid IN (SELECT ctid FROM input_items "
        "WHERE response_id = $1 LIMIT $2)",
        response_id,
        DELETE_CHUNK,
    )
    if int(status.split()[-1]) == DELETE_CHUNK:
        return response_id
    await db.execute("DELETE FROM responses WHERE id = $1", response_id)
    following = base["input_base"]
    if following is None:
        return None
    tombstone = await db.fetchval("SELECT 1 FROM responses WHERE id = $1 AND deleted", following)
    return following if tombstone is not None else None


async def save_events(db: Connection, response_id: str, frames: bytes) -> None:
    await db.execute(
        "INSERT INTO response_events (response_id, frames) "
        "SELECT id, $1 FROM responses WHERE id = $2 AND stored AND NOT deleted "
        "ON CONFLICT (response_id) DO UPDATE SET frames = excluded.frames",
        frames,
        response_id,
    )


async def fail_responses(db: Connection, response_ids: Sequence[str], message: str) -> None:
    """Mark these responses failed with `message` (background runs whose process is gone)."""
    for response_id in response_ids:
        body = await db.fetchval("SELECT response FROM responses WHERE id = $1", response_id)
        await db.execute(
            "UPDATE responses SET status = 'failed', response = $1 "
            "WHERE id = $2 AND status IN ('queued', 'in_progress')",
            failed_body(None if body is None else bytes(body), message),
            response_id,
        )


# -- reads -----------------------------------------------------------------------------


async def tools_blob(db: Connection, tools_hash: bytes | None) -> bytes | None:
    if tools_hash is None:
        return None
    found = await db.fetchval("SELECT body FROM blobs WHERE hash = $1", tools_hash)
    return bytes(found) if found is not None else None


async def response_json(db: Connection, response_id: str, client: str | None) -> bytes | None:
    where, params = _visible(client, 2)
    row = await db.fetchrow(
        "SELECT response, tools_hash FROM responses WHERE id = $1 AND stored AND NOT deleted"
        + where,
        response_id,
        *params,
    )
    if row is None:
        return None
    return with_tools(
        bytes(row["response"]), await tools_blob(db, row["tools_hash"]), row["tools_hash"]
    )


async def response_events(
    db: Connection, response_id: str, client: str | None
) -> tuple[bytes, bytes | None] | None:
    body = await response_json(db, response_id, client)
    if body is None:
        return None
    frames = await db.fetchval(
        "SELECT frames FROM response_events WHERE response_id = $1", response_id
    )
    return body, None if frames is None else bytes(frames)


async def running(db: Connection) -> list[tuple[str, str | None]]:
    """Responses stored queued or in progress: (id, its session id)."""
    rows = await db.fetch(
        "SELECT id, session_id FROM responses "
        "WHERE status IN ('queued', 'in_progress') AND NOT deleted"
    )
    return [(row["id"], row["session_id"]) for row in rows]


async def find_items(
    db: Connection, item_ids: Sequence[str], client: str | None
) -> dict[str, bytes]:
    where, params = _visible(client, 2)
    found: dict[str, bytes] = {}
    for item_id in dict.fromkeys(item_ids):
        body = await db.fetchval(
            "SELECT input_items.body FROM input_items JOIN responses "
            "ON responses.id = input_items.response_id "
            "WHERE input_items.item_id = $1 AND NOT responses.deleted" + where + " LIMIT 1",
            item_id,
            *params,
        )
        if body is None:
            row = await db.fetchrow(
                "SELECT responses.response, output_items.position FROM output_items "
                "JOIN responses ON responses.id = output_items.response_id "
                "WHERE output_items.item_id = $1 AND responses.stored AND NOT responses.deleted"
                + where
                + " LIMIT 1",
                item_id,
                *params,
            )
            if row is not None and row["response"] is not None:
                output = orjson.loads(row["response"]).get("output") or []
                if row["position"] < len(output):
                    body = orjson.dumps(output[row["position"]])
        if body is not None:
            found[item_id] = bytes(body)
    return found


async def _lineage(db: Connection, response_id: str) -> list[tuple[str, int, int]]:
    rows = await db.fetch(
        lineage_query("$1"),
        response_id,
    )
    return [(row["id"], int(row["first"]), int(row["stop"])) for row in rows]


async def _items_between(
    db: Connection, lineage: list[tuple[str, int, int]], low: int, high: int
) -> list[tuple[int, str, bytes]]:
    found: list[tuple[int, str, bytes]] = []
    for holder, first, stop in sorted(lineage, key=lambda entry: entry[1]):
        start, end = max(low, first), min(high, stop)
        if start >= end:
            continue
        rows = await db.fetch(
            "SELECT position, item_id, body FROM input_items "
            "WHERE response_id = $1 AND position >= $2 AND position < $3 ORDER BY position",
            holder,
            start,
            end,
        )
        found.extend((int(r["position"]), r["item_id"], bytes(r["body"])) for r in rows)
    return found


async def input_page(
    db: Connection,
    response_id: str,
    client: str | None,
    *,
    limit: int,
    descending: bool,
    after: str | None,
) -> ItemsPage | None:
    where, params = _visible(client, 2)
    count = await db.fetchval(
        "SELECT input_count FROM responses WHERE id = $1 AND stored AND NOT deleted" + where,
        response_id,
        *params,
    )
    if count is None:
        return None
    lineage = await _lineage(db, response_id)
    position = None
    if after is not None:
        rows = await db.fetch(
            "SELECT response_id, position FROM input_items "
            "WHERE item_id = $1 AND response_id = ANY($2::text[])",
            after,
            [holder for holder, _, _ in lineage],
        )
        found = [(r["response_id"], int(r["position"])) for r in rows]
        position = position_in_input(lineage, found, descending)
        if position is None:
            raise ItemNotFound(after)
    low, high, has_more = page_bounds(count, position, limit, descending)
    page = await _items_between(db, lineage, low, high)
    if descending:
        page.reverse()
    return ItemsPage([render_item(item_id, body) for _, item_id, body in page], has_more)


async def chain(db: Connection, response_id: str, client: str | None) -> Chain:
    where, params = _visible(client, 2)
    found = await db.fetch(
        chain_query("$1", where),
        response_id,
        *params,
    )
    return chain_of(response_id, [tuple(row) for row in found])


async def find_base(
    db: Connection, client: str, digests: Sequence[bytes]
) -> tuple[str, int] | None:
    end = len(digests)
    while end > 0:
        start = max(0, end - (BASE_WINDOW if end == len(digests) else 500))
        row = await db.fetchrow(
            "SELECT id, input_count FROM responses WHERE input_hash = ANY($1::bytea[]) "
            "AND client = $2 AND NOT deleted ORDER BY input_count DESC LIMIT 1",
            list(digests[start:end]),
            client,
        )
        if row is not None:
            return row["id"], int(row["input_count"])
        end = start
    return None


async def _keys(
    db: Connection, client: str, scope: str, kind: str, values: Sequence[str]
) -> dict[str, Reasoning]:
    rows = await db.fetch(
        "SELECT k.value, r.text, r.details FROM reasoning_keys k "
        "JOIN reasoning r ON r.id = k.reasoning_id "
        "WHERE k.client = $1 AND k.scope = $2 AND k.kind = $3 AND k.value = ANY($4::text[])",
        client,
        scope,
        kind,
        list(dict.fromkeys(values)),
    )
    return {
        row["value"]: Reasoning(
            row["text"], orjson.loads(row["details"]) if row["details"] else None
        )
        for row in rows
    }


async def find_reasoning(
    db: Connection, client: str, conversation: str | None, queries: Sequence[ReasoningQuery]
) -> list[Reasoning | None]:
    contexts = [q.context_key for q in queries if q.context_key is not None]
    by_context = await _keys(db, client, "", KEY_CONTEXT, contexts) if contexts else {}
    ladder: list[tuple[dict[str, Reasoning], dict[str, Reasoning]]] = []
    if conversation is not None:
        fingerprints = [q.fingerprint for q in queries]
        call_ids = [call_id for q in queries for call_id in q.call_ids]
        for owner in (client, LEGACY_CLIENT):
            by_turn = await _keys(db, owner, conversation, KEY_TURN, fingerprints)
            by_call = await _keys(db, owner, conversation, KEY_CALL, call_ids) if call_ids else {}
            ladder.append((by_turn, by_call))
    return pick_reasoning(queries, by_context, ladder)


async def list_responses(
    db: Connection, *, limit: int, session_id: str | None = None, thread_id: str | None = None
) -> list[ResponseRow]:
    where = ["NOT deleted"]
    params: list[Any] = []
    for column, value in (("session_id", session_id), ("thread_id", thread_id)):
        if value is not None:
            params.append(value)
            where.append(f"{column} = ${len(params)}")
    params.append(limit)
    rows = await db.fetch(
        "SELECT id, created_at, model, status, stored, session_id, thread_id, input_tokens, "
        f"output_tokens, previous_response_id, {NO_OUTPUT} FROM responses "
        f"WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ${len(params)}",
        *params,
    )
    return [ResponseRow(*tuple(row)) for row in rows]


async def export(db: Connection, response_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow(
        "SELECT request, response, tools_hash, input_count, stored, created_at, model, status, "
        "previous_response_id, session_id, thread_id, input_tokens, output_tokens "
        "FROM responses WHERE id = $1 AND NOT deleted",
        response_id,
    )
    if row is None:
        return None
    if not row["stored"]:
        return {
            "stored": False,
            "response": {
                "id": response_id,
                "created_at": row["created_at"],
                "model": row["model"],
                "status": row["status"],
                "previous_response_id": row["previous_response_id"],
                "usage": {
                    "input_tokens": row["input_tokens"],
                    "output_tokens": row["output_tokens"],
                },
            },
            "session_id": row["session_id"],
            "thread_id": row["thread_id"],
        }
    lineage = await _lineage(db, response_id)
    items = await _items_between(db, lineage, 0, int(row["input_count"]))
    request = orjson.loads(row["request"])
    tools = await tools_blob(db, row["tools_hash"])
    if row["tools_hash"] is not None:
        request["tools"] = orjson.loads(tools) if tools else []
    return {
        "stored": True,
        "request": request,
        "input_items": [render_item(item_id, body) for _, item_id, body in items],
        "response": orjson.loads(with_tools(bytes(row["response"]), tools, row["tools_hash"])),
        "session_id": row["session_id"],
        "thread_id": row["thread_id"],
    }


# -- conversations -----------------------------------------------------------------------


def _conversation(row: Any) -> ConversationRow:
    return ConversationRow(row["id"], row["created_at"], bytes(row["metadata"]))


async def get_conversation(
    db: Connection, conversation_id: str, client: str
) -> ConversationRow | None:
    row = await db.fetchrow(
        "SELECT id, created_at, metadata FROM conversations WHERE id = $1 AND client = $2",
        conversation_id,
        client,
    )
    return None if row is None else _conversation(row)


async def create_conversation(
    db: Connection, conversation_id: str, client: str, metadata: bytes, items: Sequence[Item]
) -> ConversationRow:
    now = int(time.time())
    await db.execute(
        "INSERT INTO conversations (id, client, created_at, updated_at, metadata) "
        "VALUES ($1, $2, $3, $3, $4)",
        conversation_id,
        client,
        now,
        metadata,
    )
    await append(db, conversation_id, client, items)
    return ConversationRow(conversation_id, now, metadata)


async def update_conversation(
    db: Connection, conversation_id: str, client: str, metadata: bytes
) -> ConversationRow | None:
    await db.execute(
        "UPDATE conversations SET metadata = $1, updated_at = $2 WHERE id = $3 AND client = $4",
        metadata,
        int(time.time()),
        conversation_id,
        client,
    )
    return await get_conversation(db, conversation_id, client)


async def delete_conversation(db: Connection, conversation_id: str, client: str) -> bool:
    if await get_conversation(db, conversation_id, client) is None:
        return False
    await db.execute("DELETE FROM conversation_items WHERE conversation_id = $1", conversation_id)
    await db.execute("DELETE FROM conversations WHERE id = $1", conversation_id)
    return True


async def append(
    db: Connection, conversation_id: str, client: str, items: Sequence[Item]
) -> list[bytes] | None:
    # FOR UPDATE: two bridges appending to one conversation take positions in turn.
    position = await db.fetchval(
        "SELECT next_position FROM conversations WHERE id = $1 AND client = $2 FOR UPDATE",
        conversation_id,
        client,
    )
    if position is None:
        return None
    now = int(time.time())
    result: list[bytes] = []
    for item_id, body in items:
        existing = await db.fetchval(
            "SELECT body FROM conversation_items WHERE conversation_id = $1 AND item_id = $2",
            conversation_id,
            item_id,
        )
        if existing is not None:
            result.append(bytes(existing))
            continue
        await db.execute(
            "INSERT INTO conversation_items (conversation_id, position, item_id, created_at, body) "
            "VALUES ($1, $2, $3, $4, $5)",
            conversation_id,
            position,
            item_id,
            now,
            body,
        )
        position += 1
        result.append(body)
    await db.execute(
        "UPDATE conversations SET next_position = $1, updated_at = $2 WHERE id = $3",
        position,
        now,
        conversation_id,
    )
    return result


async def conversation_items(
    db: Connection, conversation_id: str, client: str
) -> list[bytes] | None:
    if await get_conversation(db, conversation_id, client) is None:
        return None
    rows = await db.fetch(
        "SELECT body FROM conversation_items WHERE conversation_id = $1 ORDER BY position",
        conversation_id,
    )
    return [bytes(row["body"]) for row in rows]


async def conversation_page(
    db: Connection,
    conversation_id: str,
    client: str,
    *,
    limit: int,
    descending: bool,
    after: str | None,
) -> ConversationPage | None:
    if await get_conversation(db, conversation_id, client) is None:
        return None
    params: list[Any] = [conversation_id]
    condition = ""
    if after is not None:
        mark = await db.fetchval(
            "SELECT position FROM conversation_items WHERE conversation_id = $1 AND item_id = $2",
            conversation_id,
            after,
        )
        if mark is None:
            raise ItemNotFound(after)
        params.append(mark)
        condition = " AND position < $2" if descending else " AND position > $2"
    params.append(limit + 1)
    order = "DESC" if descending else "ASC"
    rows = await db.fetch(
        f"SELECT body FROM conversation_items WHERE conversation_id = $1{condition} "
        f"ORDER BY position {order} LIMIT ${len(params)}",
        *params,
    )
    return ConversationPage([bytes(row["body"]) for row in rows[:limit]], len(rows) > limit)


async def conversation_item(
    db: Connection, conversation_id: str, client: str, item_id: str
) -> bytes | None:
    body = await db.fetchval(
        "SELECT i.body FROM conversation_items i JOIN conversations c "
        "ON c.id = i.conversation_id WHERE i.conversation_id = $1 AND i.item_id = $2 "
        "AND c.client = $3",
        conversation_id,
        item_id,
        client,
    )
    return None if body is None else bytes(body)


async def delete_conversation_item(
    db: Connection, conversation_id: str, client: str, item_id: str
) -> bool:
    if await get_conversation(db, conversation_id, client) is None:
        return False
    status = await db.execute(
        "DELETE FROM conversation_items WHERE conversation_id = $1 AND item_id = $2",
        conversation_id,
        item_id,
    )
    if status.endswith(" 0"):
        return False
    await db.execute(
        "UPDATE conversations SET updated_at = $1 WHERE id = $2", int(time.time()), conversation_id
    )
    return True


# -- retention ----------------------------------------------------------------------------


async def old_responses(db: Connection, cutoff: int) -> list[str]:
    rows = await db.fetch(
        "SELECT id FROM responses WHERE created_at < $1 AND NOT deleted "
        "ORDER BY created_at LIMIT $2",
        cutoff,
        BATCH,
    )
    return [row["id"] for row in rows]


# The bytes of everything stored: what [store] max_size_mb bounds on PostgreSQL (the
# server's own files keep freed space for reuse, so their size is not a measure).
_CONTENT_BYTES = (
    "SELECT coalesce((SELECT sum(coalesce(octet_length(request), 0) "
    "+ coalesce(octet_length(response), 0)) FROM responses), 0)"
    " + coalesce((SELECT sum(octet_length(body)) FROM input_items), 0)"
    " + coalesce((SELECT sum(octet_length(body)) FROM blobs), 0)"
    " + coalesce((SELECT sum(octet_length(text)) FROM reasoning), 0)"
    " + coalesce((SELECT sum(octet_length(frames)) FROM response_events), 0)"
    " + coalesce((SELECT sum(octet_length(body)) FROM conversation_items), 0)"
)
# The oldest responses (never the newest) whose own content adds up to $1 bytes.
_OLDEST_UP_TO = (
    "WITH newest AS (SELECT id FROM responses WHERE NOT deleted "
    " ORDER BY created_at DESC, id DESC LIMIT 1),"
    " sized AS (SELECT r.id, r.created_at, coalesce(octet_length(r.request), 0)"
    " + coalesce(octet_length(r.response), 0)"
    " + coalesce((SELECT sum(octet_length(i.body)) FROM input_items i"
    " WHERE i.response_id = r.id), 0) AS size"
    " FROM responses r WHERE NOT r.deleted AND r.id NOT IN (SELECT id FROM newest)),"
    " running AS (SELECT id, size, sum(size) OVER (ORDER BY created_at, id) AS upto FROM sized)"
    " SELECT id FROM running WHERE upto - size < $1 ORDER BY upto"
)


async def over_size(db: Connection, limit: int) -> list[str]:
    """The oldest responses to delete so that the stored content fits in `limit` bytes."""
    total = int(await db.fetchval(_CONTENT_BYTES))
    if total <= limit:
        return []
    return [row["id"] for row in await db.fetch(_OLDEST_UP_TO, total - limit)]


async def free_tombstones(db: Connection) -> list[str]:
    rows = await db.fetch(
        "SELECT id FROM responses t WHERE deleted AND NOT EXISTS "
        "(SELECT 1 FROM responses c WHERE c.input_base = t.id) LIMIT $1",
        BATCH,
    )
    return [row["id"] for row in rows]


async def delete_idle_conversations(db: Connection, cutoff: int) -> int:
    rows = await db.fetch(
        "SELECT id FROM conversations WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        cutoff,
        BATCH,
    )
    for row in rows:
        await db.execute("DELETE FROM conversation_items WHERE conversation_id = $1", row["id"])
        await db.execute("DELETE FROM conversations WHERE id = $1", row["id"])
    return len(rows)


async def delete_orphans(db: Connection, cutoff: int) -> None:
    await db.execute("DELETE FROM reasoning WHERE created_at < $1", cutoff)
    await db.execute(
        "DELETE FROM blobs b "
        "WHERE NOT EXISTS (SELECT 1 FROM responses r WHERE r.tools_hash = b.hash)"
    )
