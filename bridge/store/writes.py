"""Statements on the writer connection (in its thread), each function inside the caller's
transaction.

A turn writes only what is new in it: the items past its base (the earlier response whose
whole input the client replayed), the tool list once by digest, one row, and its reasoning.
Deleting a response that later responses extend leaves a tombstone that keeps the items
they share, until none is left that needs them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.records import TurnRecord, item_id_of
from bridge.store.database import one

# Input items deleted per statement when a response goes (bounded lock hold).
DELETE_CHUNK = 500


@dataclass(slots=True)
class TurnRows:
    """What one turn writes, as statement parameters: the same for SQLite and PostgreSQL
    (bridge.store.postgres_queries), only the statements differ."""

    # The responses row: id, created_at, model, status, previous_response_id, stored,
    # client, scope, session_id, thread_id, input_tokens, output_tokens, input_base,
    # input_offset, input_count, input_hash, request, response, tools_hash.
    response: tuple[Any, ...]
    # (response_id, position, item_id, body) of the input items not in the base.
    items: list[tuple[str, int, str, bytes]]
    # (item_id, response_id, position) of the output items.
    outputs: list[tuple[str, str, int]]


def base_to_check(record: TurnRecord, base: tuple[str, int] | None) -> str | None:
    """The response whose input count must be read before the turn is written: the base
    the caller found, when there is content to share with it."""
    if record.content is None or base is None or base[0] == record.id:
        return None
    return base[0]


def turn_rows(record: TurnRecord, base: tuple[str, int] | None, base_count: int | None) -> TurnRows:
    """The rows of a turn. `base_count` is the input count the base has now: the base may
    have gone (or changed) since it was found, and then every item is written."""
    content = record.content
    input_base: str | None = None
    offset = count = 0
    input_hash: bytes | None = None
    items: list[tuple[str, int, str, bytes]] = []
    outputs: list[tuple[str, str, int]] = []
    if content is not None:
        count = len(content.items)
        input_hash = content.item_digests[-1] if count else None
        if base is not None and base_count is not None and base_count == base[1] <= count:
            input_base, offset = base
        items = [
            (record.id, position, item_id_of(content.items[position]), content.item_json(position))
            for position in range(offset, count)
        ]
        outputs = [
            (item_id, record.id, position) for position, item_id in enumerate(record.output_ids)
        ]
    response = (
        record.id,
        record.created_at,
        record.model,
        record.status,
        record.previous_response_id,
        content is not None,
        record.client,
        record.scope,
        record.session_id,
        record.thread_id,
        record.input_tokens,
        record.output_tokens,
        input_base,
        offset,
        count,
        input_hash,
        content.request if content else None,
        content.response if content else None,
        content.tools_hash if content else None,
    )
    return TurnRows(response, items, outputs)


def key_rows(record: TurnRecord, reasoning_id: int) -> list[tuple[str, str, str, str, int]]:
    """(client, scope, kind, value, reasoning_id) of each key of the turn's reasoning."""
    assert record.reasoning is not None
    return [
        (record.client, scope, kind, value, reasoning_id)
        for scope, kind, value in record.reasoning.keys
    ]


def insert_turn(db: sqlite3.Connection, record: TurnRecord, base: tuple[str, int] | None) -> None:
    """The response row, its new input items, its tools and its reasoning with keys."""
    base_count = None
    checked = base_to_check(record, base)
    if checked is not None:
        row = one(db, "SELECT input_count FROM responses WHERE id = ? AND NOT deleted", (checked,))
        base_count = None if row is None else int(row[0])
    rows = turn_rows(record, base, base_count)
    content = record.content
    if content is not None and content.tools is not None:
        db.execute(
            "INSERT OR IGNORE INTO blobs (hash, body) VALUES (?, ?)",
            (content.tools_hash, content.tools),
        )
    db.executemany(
        "INSERT OR REPLACE INTO input_items (response_id, position, item_id, body) "
        "VALUES (?, ?, ?, ?)",
        rows.items,
    )
    db.execute(
        "INSERT OR REPLACE INTO responses (id, created_at, model, status, previous_response_id, "
        "stored, deleted, client, scope, session_id, thread_id, input_tokens, output_tokens, "
        "input_base, input_offset, input_count, input_hash, request, response, tools_hash) "
        "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows.response,
    )
    if content is not None:
        db.execute("DELETE FROM output_items WHERE response_id = ?", (record.id,))
        db.executemany(
            "INSERT OR REPLACE INTO output_items (item_id, response_id, position) VALUES (?, ?, ?)",
            rows.outputs,
        )
    reasoning = record.reasoning
    if reasoning is not None:
        cursor = db.execute(
            "INSERT INTO reasoning (response_id, created_at, text, details) VALUES (?, ?, ?, ?)",
            (record.id, record.created_at, reasoning.text, reasoning.details),
        )
        assert cursor.lastrowid is not None
        db.executemany(
            "INSERT OR REPLACE INTO reasoning_keys (client, scope, kind, value, reasoning_id) "
            "VALUES (?, ?, ?, ?, ?)",
            key_rows(record, cursor.lastrowid),
        )


def mark_deleted(
    db: sqlite3.Connection, response_id: str, *, client: str | None, stored_only: bool
) -> bool:
    """Take a response out of every listing and lookup at once: its content and reasoning
    go, its row stays as a tombstone until its items are gone (see remove_tombstone).
    True if it existed (and was this client's, and stored, as asked)."""
    conditions = ["id = ?", "NOT deleted"]
    params: list[Any] = [response_id]
    if client is not None:
        conditions.append("(client IS NULL OR client = ?)")
        params.append(client)
    if stored_only:
        conditions.append("stored")
    cursor = db.execute(
        "UPDATE responses SET deleted = 1, stored = 0, request = NULL, response = NULL, "
        f"tools_hash = NULL WHERE {' AND '.join(conditions)}",
        params,
    )
    if cursor.rowcount <= 0:
        return False
    db.execute("DELETE FROM reasoning WHERE response_id = ?", (response_id,))
    db.execute("DELETE FROM output_items WHERE response_id = ?", (response_id,))
    db.execute("DELETE FROM response_events WHERE response_id = ?", (response_id,))
    return True


def save_events(db: sqlite3.Connection, response_id: str, frames: bytes) -> None:
    """A background response's events, once it has ended (only while it is stored)."""
    db.execute(
        "INSERT OR REPLACE INTO response_events (response_id, frames) "
        "SELECT id, ? FROM responses WHERE id = ? AND stored AND NOT deleted",
        (frames, response_id),
    )


def failed_body(body: bytes | None, message: str) -> bytes | None:
    """A stored response object marked failed with `message` (as it was when it is not
    one this release can read)."""
    if body is None:
        return None
    try:
        response = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(response, dict):
        return body
    response["status"] = "failed"
    response["error"] = {"code": "server_error", "message": message}
    return orjson.dumps(response)


def fail_interrupted(
    db: sqlite3.Connection, message: str, keep: frozenset[str] = frozenset()
) -> list[str]:
    """Background responses left queued or in progress by a process that stopped (all but
    those in `keep`): marked failed with `message`. Their ids."""
    found = [
        row
        for row in db.execute(
            "SELECT id, response FROM responses "
            "WHERE status IN ('queued', 'in_progress') AND NOT deleted"
        ).fetchall()
        if row[0] not in keep
    ]
    for response_id, body in found:
        db.execute(
            "UPDATE responses SET status = 'failed', response = ? WHERE id = ?",
            (failed_body(body, message), response_id),
        )
    return [response_id for response_id, _ in found]


def remove_tombstone(db: sqlite3.Connection, response_id: str) -> str | None:
    """One bounded step of removing a tombstone: up to DELETE_CHUNK of its items, then the
    row. Returns what to do next: the same id while items remain, its base when that base
    is a tombstone that may now go too, else None. A tombstone that later responses extend
    keeps its items (they are part of their input)."""
    row = one(db, "SELECT input_base FROM responses WHERE id = ? AND deleted", (response_id,))
    if row is None:
        return None
    child = one(db, "SELECT 1 FROM responses WHERE input_base = ? LIMIT 1", (response_id,))
    if child is not None:
        return None
    cursor = db.execute(
        "DELETE FROM input_items WHERE rowid IN (SELECT rowid FROM input_items "
        "WHERE response_id = ? LIMIT ?)",
        (response_id, DELETE_CHUNK),
    )
    if cursor.rowcount == DELETE_CHUNK:
        return response_id
    db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
    base = row[0]
    if base is None:
        return None
    tombstone = one(db, "SELECT 1 FROM responses WHERE id = ? AND deleted", (base,))
    return base if tombstone is not None else None
