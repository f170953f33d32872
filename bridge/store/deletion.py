"""Deleting a response: out of every listing and lookup at once, its rows collected after.

Deleting a response that later responses extend leaves a tombstone that keeps the items
they share, until none is left that needs them.
"""

from __future__ import annotations

from typing import Any

from bridge.store.statements import Query, execute, fetch, fetch_one, fetch_value

# Input items deleted per statement when a response goes (bounded lock hold).
DELETE_CHUNK = 500


def mark_deleted(response_id: str, *, client: str | None, stored_only: bool) -> Query[bool]:
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
    changed = yield from execute(
        "UPDATE responses SET deleted = true, stored = false, request = NULL, response = NULL, "
        f"tools_hash = NULL WHERE {' AND '.join(conditions)}",
        params,
    )
    if changed <= 0:
        return False
    for table in ("reasoning", "output_items", "response_events"):
        yield from execute(f"DELETE FROM {table} WHERE response_id = ?", (response_id,))
    return True


def remove_tombstone(response_id: str) -> Query[str | None]:
    """One bounded step of removing a tombstone: up to DELETE_CHUNK of its items, then the
    row. Returns what to do next: the same id while items remain, its base when that base
    is a tombstone that may now go too, else None. A tombstone that later responses extend
    keeps its items (they are part of their input)."""
    row = yield from fetch_one(
        "SELECT input_base FROM responses WHERE id = ? AND deleted", (response_id,)
    )
    if row is None:
        return None
    child = yield from fetch_value(
        "SELECT 1 FROM responses WHERE input_base = ? LIMIT 1", (response_id,)
    )
    if child is not None:
        return None
    removed = yield from execute(
        "DELETE FROM input_items WHERE response_id = ? AND position IN (SELECT position "
        "FROM input_items WHERE response_id = ? LIMIT ?)",
        (response_id, response_id, DELETE_CHUNK),
    )
    if removed == DELETE_CHUNK:
        return response_id
    yield from execute("DELETE FROM responses WHERE id = ?", (response_id,))
    base = row[0]
    if base is None:
        return None
    tombstone = yield from fetch_value("SELECT 1 FROM responses WHERE id = ? AND deleted", (base,))
    return base if tombstone is not None else None


def free_tombstones(limit: int) -> Query[list[str]]:
    """Tombstones no later response extends (their items may go)."""
    found = yield from fetch(
        "SELECT id FROM responses t WHERE deleted AND NOT EXISTS "
        "(SELECT 1 FROM responses c WHERE c.input_base = t.id) LIMIT ?",
        (limit,),
    )
    return [row[0] for row in found]
