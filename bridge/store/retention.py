"""Retention: responses and conversations past max_age_days, then the oldest responses
past max_size_mb, in small steps.

Every step is its own short transaction in the writer's thread (a time budget per step,
indexes behind every query), so a turn write waits at most one step; space goes back to the
filesystem with incremental_vacuum, a bounded number of pages at a time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.store import conversations
from bridge.store.database import rows, transaction
from bridge.store.writes import mark_deleted, remove_tombstone

# A step commits once it has worked this long (seconds): the writer is busy for about this
# much plus one statement.
STEP_BUDGET = 0.01
# Rows looked at per query within a step.
BATCH = 50
# Conversations deleted per step (each with all its items).
CONVERSATION_BATCH = 20
# Pages given back per incremental_vacuum step.
VACUUM_PAGES = 200
# Upper bound on steps of one kind in one prune (a pathological file cannot loop forever).
MAX_STEPS = 100_000

# Runs one step in the writer's thread: Store._write.
Write = Callable[..., Awaitable[Any]]

_OLDEST_BUT_NEWEST = (
    "SELECT id FROM responses WHERE NOT deleted AND id != (SELECT id FROM responses "
    "WHERE NOT deleted ORDER BY created_at DESC, rowid DESC LIMIT 1) "
    "ORDER BY created_at, rowid LIMIT 1"
)
_FREE_TOMBSTONES = (
    "SELECT id FROM responses t WHERE deleted AND NOT EXISTS "
    "(SELECT 1 FROM responses c WHERE c.input_base = t.id) LIMIT ?"
)


def data_bytes(db: sqlite3.Connection) -> int:
    """Bytes the database holds in use: its pages less the free ones (uncommitted changes
    of the connection's own transaction included)."""
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    (free,) = db.execute("PRAGMA freelist_count").fetchone()
    return int(page_size) * (int(pages) - int(free))


def _delete_step(
    db: sqlite3.Connection, select_ids: str, params: tuple[Any, ...]
) -> tuple[int, bool]:
    """Mark what `select_ids` finds deleted, within the budget: (deleted, finished)."""
    deadline = time.monotonic() + STEP_BUDGET
    deleted = 0
    with transaction(db):
        ids = [row[0] for row in rows(db, select_ids, params)]
        for response_id in ids:
            if mark_deleted(db, response_id, client=None, stored_only=False):
                deleted += 1
            if time.monotonic() > deadline:
                return deleted, False
    return deleted, len(ids) < BATCH


def _size_step(db: sqlite3.Connection, limit: int) -> tuple[int, bool]:
    """Delete the oldest responses with their items until the data fits in `limit`."""
    deadline = time.monotonic() + STEP_BUDGET
    deleted = 0
    with transaction(db):
        while time.monotonic() < deadline:
            if data_bytes(db) <= limit:
                return deleted, True
            oldest = rows(db, _OLDEST_BUT_NEWEST)
            if not oldest:
                return deleted, True
            mark_deleted(db, oldest[0][0], client=None, stored_only=False)
            deleted += 1
            following: str | None = oldest[0][0]
            while following is not None and time.monotonic() < deadline:
                following = remove_tombstone(db, following)
    return deleted, False


def _tombstone_step(db: sqlite3.Connection, pending: list[str]) -> bool:
    """Remove tombstones no later response needs, with their items; True when none is left."""
    deadline = time.monotonic() + STEP_BUDGET
    with transaction(db):
        if not pending:
            pending.extend(row[0] for row in rows(db, _FREE_TOMBSTONES, (BATCH,)))
        while pending and time.monotonic() < deadline:
            following = remove_tombstone(db, pending[-1])
            if following is None:
                pending.pop()
            elif following != pending[-1]:
                pending[-1] = following
        return not pending and not rows(db, _FREE_TOMBSTONES, (1,))


def _orphan_step(db: sqlite3.Connection, query: str, params: tuple[Any, ...]) -> bool:
    with transaction(db):
        return db.execute(query, params).rowcount <= 0


def _vacuum_step(db: sqlite3.Connection) -> bool:
    # As a script: a plain execute steps the pragma once, which frees a single page.
    db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
    return int(db.execute("PRAGMA freelist_count").fetchone()[0]) == 0


async def delete_where(write: Write, select_ids: str, params: tuple[Any, ...]) -> int:
    """Delete the responses `select_ids` finds (it must LIMIT itself to BATCH), step by
    step until it finds none."""
    deleted = 0
    for _ in range(MAX_STEPS):
        count, finished = await write(_delete_step, select_ids, params)
        deleted += count
        if finished:
            break
        await asyncio.sleep(0)  # let waiting turn writes in
    return deleted


async def delete_to_size(write: Write, limit: int) -> int:
    """Delete the oldest responses, one at a time with their items, until the data fits in
    `limit` bytes. The newest response always stays: it may be mid-conversation."""
    deleted = 0
    for _ in range(MAX_STEPS):
        count, finished = await write(_size_step, limit)
        deleted += count
        if finished:
            break
        await asyncio.sleep(0)
    return deleted


async def collect_tombstones(write: Write) -> None:
    """Remove tombstones no later response needs, with their items, a chunk at a time."""
    pending: list[str] = []
    for _ in range(MAX_STEPS):
        if await write(_tombstone_step, pending):
            return
        await asyncio.sleep(0)


async def delete_orphans(write: Write, cutoff: int) -> None:
    """Reasoning past the age limit (and its keys), and tool lists no response uses."""
    for query, params in (
        (
            "DELETE FROM reasoning WHERE id IN "
            "(SELECT id FROM reasoning WHERE created_at < ? LIMIT 500)",
            (cutoff,),
        ),
        (
            "DELETE FROM blobs WHERE hash IN (SELECT hash FROM blobs b WHERE NOT EXISTS "
            "(SELECT 1 FROM responses r WHERE r.tools_hash = b.hash) LIMIT 200)",
            (),
        ),
    ):
        for _ in range(MAX_STEPS):
            if await write(_orphan_step, query, params):
                break
            await asyncio.sleep(0)


def _idle_conversations_step(db: sqlite3.Connection, cutoff: int) -> bool:
    with transaction(db):
        return conversations.delete_idle(db, cutoff, CONVERSATION_BATCH) < CONVERSATION_BATCH


async def delete_idle_conversations(write: Write, cutoff: int) -> None:
    """Conversations nobody has used since `cutoff`, with their items, a few at a time."""
    for _ in range(MAX_STEPS):
        if await write(_idle_conversations_step, cutoff):
            return
        await asyncio.sleep(0)


async def vacuum(write: Write) -> None:
    """Give free pages back to the filesystem, VACUUM_PAGES at a time."""
    for _ in range(MAX_STEPS):
        if await write(_vacuum_step):
            return
        await asyncio.sleep(0)
