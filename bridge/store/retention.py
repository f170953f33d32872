"""Retention: responses past max_age_days, then the oldest past max_size_mb, in small steps.

Every step is its own short transaction (a time budget per step, indexes behind every
query), so turn writes wait at most one step; space goes back to the filesystem with
incremental_vacuum, a bounded number of pages at a time (bridge.store.Store.prune).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import aiosqlite

from bridge.store.writes import mark_deleted, remove_tombstone

# A step commits once it has worked this long (seconds); the write lock is held for about
# this much plus one statement.
STEP_BUDGET = 0.02
# Rows looked at per query within a step.
BATCH = 50
# Pages given back per incremental_vacuum step.
VACUUM_PAGES = 2000
# Upper bound on steps of one kind in one prune (a pathological file cannot loop forever).
MAX_STEPS = 100_000

Transaction = Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]


async def _ids(db: aiosqlite.Connection, query: str, params: tuple[object, ...]) -> list[str]:
    return [row[0] for row in await db.execute_fetchall(query, params)]


async def delete_where(
    transaction: Transaction, select_ids: str, params: tuple[object, ...]
) -> int:
    """Delete the responses `select_ids` finds (it must LIMIT itself to BATCH), step by
    step until it finds none."""
    deleted = 0
    for _ in range(MAX_STEPS):
        async with transaction() as db:
            deadline = time.monotonic() + STEP_BUDGET
            ids = await _ids(db, select_ids, params)
            done = 0
            for response_id in ids:
                if await mark_deleted(db, response_id, client=None, stored_only=False):
                    deleted += 1
                done += 1
                if time.monotonic() > deadline:
                    break
        if done == len(ids) and len(ids) < BATCH:
            return deleted
        await asyncio.sleep(0)  # let waiting turn writes take the lock
    return deleted


async def delete_to_size(transaction: Transaction, limit: int) -> int:
    """Delete the oldest responses, one at a time with their items, until the data fits in
    `limit` bytes. The newest response always stays: it may be mid-conversation."""
    deleted = 0
    for _ in range(MAX_STEPS):
        async with transaction() as db:
            deadline = time.monotonic() + STEP_BUDGET
            while time.monotonic() < deadline:
                if await data_bytes(db) <= limit:
                    return deleted
                ids = await _ids(
                    db,
                    "SELECT id FROM responses WHERE NOT deleted AND id != (SELECT id FROM "
                    "responses WHERE NOT deleted ORDER BY created_at DESC, rowid DESC LIMIT 1) "
                    "ORDER BY created_at, rowid LIMIT 1",
                    (),
                )
                if not ids:
                    return deleted
                await mark_deleted(db, ids[0], client=None, stored_only=False)
                deleted += 1
                following: str | None = ids[0]
                while following is not None and time.monotonic() < deadline:
                    following = await remove_tombstone(db, following)
        await asyncio.sleep(0)
    return deleted


async def data_bytes(db: aiosqlite.Connection) -> int:
    """Bytes the database holds in use: its pages less the free ones (uncommitted changes
    of the connection's own transaction included)."""
    values = []
    for pragma in ("page_size", "page_count", "freelist_count"):
        async with db.execute(f"PRAGMA {pragma}") as cursor:
            row = await cursor.fetchone()
        values.append(int(row[0]) if row else 0)
    page_size, pages, free = values
    return page_size * (pages - free)


async def collect_tombstones(transaction: Transaction) -> None:
    """Remove tombstones no later response needs, with their items, a chunk at a time."""
    pending: list[str] = []
    for _ in range(MAX_STEPS):
        async with transaction() as db:
            deadline = time.monotonic() + STEP_BUDGET
            if not pending:
                pending = await _ids(
                    db,
                    "SELECT id FROM responses t WHERE deleted AND NOT EXISTS "
                    "(SELECT 1 FROM responses c WHERE c.input_base = t.id) LIMIT ?",
                    (BATCH,),
                )
            while pending and time.monotonic() < deadline:
                following = await remove_tombstone(db, pending[-1])
                if following is None:
                    pending.pop()
                elif following != pending[-1]:
                    pending[-1] = following
        if not pending:
            async with transaction() as db:
                more = await _ids(
                    db,
                    "SELECT id FROM responses t WHERE deleted AND NOT EXISTS "
                    "(SELECT 1 FROM responses c WHERE c.input_base = t.id) LIMIT 1",
                    (),
                )
            if not more:
                return
        await asyncio.sleep(0)


async def delete_orphans(transaction: Transaction, cutoff: int) -> None:
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
            async with transaction() as db:
                cursor = await db.execute(query, params)
            if cursor.rowcount <= 0:
                break
            await asyncio.sleep(0)
