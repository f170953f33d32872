"""Retention, the same on both databases: responses and conversations past max_age_days,
then the oldest responses past max_size_mb (never the newest: it may be mid-conversation),
then reasoning past the age limit and tool lists nothing uses.

Every step is one short transaction with a time budget (indexes behind every query), so a
turn's write waits at most one step, and each kind of step is repeated a bounded number of
times. What max_size_mb measures differs, for what each database can tell cheaply:
SQLite's pages in use (what the file holds, from three pragmas), so the oldest go one at a
time until it fits; PostgreSQL's stored bytes (its files keep freed space for reuse, so
their size is not a measure, and summing the content reads every table), so it is measured
once per pass and the oldest that add up to the excess are chosen together.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.store import conversations
from bridge.store.deletion import free_tombstones, mark_deleted, remove_tombstone
from bridge.store.statements import Dialect, Query, execute, fetch, fetch_value

# A step commits once it has worked this long (seconds): the writer is busy for about this
# much plus one statement.
STEP_BUDGET = 0.01
# Rows looked at per query within a step.
BATCH = 50
# Upper bound on steps of one kind in one prune (a pathological database cannot loop
# forever).
MAX_STEPS = 100_000
# Runs the query a function builds as one transaction: the store's write.
Write = Callable[[Callable[[], Query[Any]]], Awaitable[Any]]
# A step: how many responses it deleted, and whether there is nothing left for it to do.
Step = Callable[[], Query[tuple[int, bool]]]

_ORPHANED_REASONING = (
    "DELETE FROM reasoning WHERE id IN (SELECT id FROM reasoning WHERE created_at < ? LIMIT 500)"
)
_UNUSED_TOOLS = (
    "DELETE FROM blobs WHERE hash IN (SELECT hash FROM blobs b WHERE NOT EXISTS "
    "(SELECT 1 FROM responses r WHERE r.tools_hash = b.hash) LIMIT 200)"
)
# SQLite: the oldest response but the newest (rowid: the order of writes, for ties).
_OLDEST_BUT_NEWEST = (
    "SELECT id FROM responses WHERE NOT deleted AND id != (SELECT id FROM responses "
    "WHERE NOT deleted ORDER BY created_at DESC, rowid DESC LIMIT 1) "
    "ORDER BY created_at, rowid LIMIT 1"
)
# PostgreSQL: the bytes of everything stored.
_CONTENT_BYTES = (
    "SELECT coalesce((SELECT sum(coalesce(octet_length(request), 0) "
    "+ coalesce(octet_length(response), 0)) FROM responses), 0)"
    " + coalesce((SELECT sum(octet_length(body)) FROM input_items), 0)"
    " + coalesce((SELECT sum(octet_length(body)) FROM blobs), 0)"
    " + coalesce((SELECT sum(octet_length(text)) FROM reasoning), 0)"
    " + coalesce((SELECT sum(octet_length(frames)) FROM response_events), 0)"
    " + coalesce((SELECT sum(octet_length(body)) FROM conversation_items), 0)"
)
# PostgreSQL: the oldest responses (never the newest) whose own content adds up to ? bytes.
_OLDEST_UP_TO = (
    "WITH newest AS (SELECT id FROM responses WHERE NOT deleted "
    " ORDER BY created_at DESC, id DESC LIMIT 1),"
    " sized AS (SELECT r.id, r.created_at, coalesce(octet_length(r.request), 0)"
    " + coalesce(octet_length(r.response), 0)"
    " + coalesce((SELECT sum(octet_length(i.body)) FROM input_items i"
    " WHERE i.response_id = r.id), 0) AS size"
    " FROM responses r WHERE NOT r.deleted AND r.id NOT IN (SELECT id FROM newest)),"
    " running AS (SELECT id, size, sum(size) OVER (ORDER BY created_at, id) AS upto FROM sized)"
    " SELECT id FROM running WHERE upto - size < ? ORDER BY upto"
)


async def prune(write: Write, dialect: Dialect, *, max_age_days: float, max_size_mb: float) -> int:
    """Delete what is older than max_age_days, then the oldest until under max_size_mb, in
    short steps; how many responses were deleted."""
    cutoff = int(time.time() - max_age_days * 86400)
    deleted = await _repeat(write, functools.partial(_old_step, cutoff))
    await collect_tombstones(write)
    await _repeat(write, functools.partial(_idle_conversations_step, cutoff))
    limit = int(max_size_mb * 1024 * 1024)
    if dialect.name == "sqlite":
        deleted += await _repeat(write, functools.partial(_pages_step, limit))
    else:
        deleted += await _repeat(write, functools.partial(_content_step, limit, [], []))
    await collect_tombstones(write)
    await _repeat(write, functools.partial(_orphan_step, _ORPHANED_REASONING, (cutoff,)))
    await _repeat(write, functools.partial(_orphan_step, _UNUSED_TOOLS, ()))
    return deleted


async def collect_tombstones(write: Write) -> None:
    """Remove tombstones no later response needs, with their items, a chunk at a time."""
    await _repeat(write, functools.partial(_tombstone_step, []))


async def _repeat(write: Write, step: Step) -> int:
    """`step()` as transactions until it has nothing left to do; what they deleted."""
    deleted = 0
    for _ in range(MAX_STEPS):
        count, finished = await write(step)
        deleted += count
        if finished:
            break
        await asyncio.sleep(0)  # let waiting turn writes in
    return deleted


def _old_step(cutoff: int) -> Query[tuple[int, bool]]:
    """Mark responses created before `cutoff` deleted, within the budget."""
    deadline = time.monotonic() + STEP_BUDGET
    found = yield from fetch(
        "SELECT id FROM responses WHERE created_at < ? AND NOT deleted ORDER BY created_at LIMIT ?",
        (cutoff, BATCH),
    )
    deleted = 0
    for row in found:
        if (yield from mark_deleted(row[0], client=None, stored_only=False)):
            deleted += 1
        if time.monotonic() > deadline:
            return deleted, False
    return deleted, len(found) < BATCH


def _tombstone_step(pending: list[str]) -> Query[tuple[int, bool]]:
    """Remove tombstones no later response needs, with their items, within the budget
    (`pending`: those found and not yet gone, kept from one step to the next)."""
    deadline = time.monotonic() + STEP_BUDGET
    if not pending:
        pending.extend((yield from free_tombstones(BATCH)))
    while pending and time.monotonic() < deadline:
        following = yield from remove_tombstone(pending[-1])
        if following is None:
            pending.pop()
        elif following != pending[-1]:
            pending[-1] = following
    return 0, not pending and not (yield from free_tombstones(1))


def _idle_conversations_step(cutoff: int) -> Query[tuple[int, bool]]:
    """Conversations nobody has used since `cutoff`, with their items, a few at a time."""
    gone = yield from conversations.delete_idle(cutoff)
    return 0, gone < conversations.IDLE_BATCH


def _orphan_step(statement: str, params: tuple[Any, ...]) -> Query[tuple[int, bool]]:
    return 0, (yield from execute(statement, params)) <= 0


def _pages_step(limit: int) -> Query[tuple[int, bool]]:
    """SQLite: delete the oldest responses with their items until the pages in use fit in
    `limit` bytes."""
    deadline = time.monotonic() + STEP_BUDGET
    deleted = 0
    while time.monotonic() < deadline:
        if (yield from data_bytes()) <= limit:
            return deleted, True
        oldest = yield from fetch_value(_OLDEST_BUT_NEWEST)
        if oldest is None:
            return deleted, True
        yield from mark_deleted(oldest, client=None, stored_only=False)
        deleted += 1
        following: str | None = oldest
        while following is not None and time.monotonic() < deadline:
            following = yield from remove_tombstone(following)
    return deleted, False


def data_bytes() -> Query[int]:
    """SQLite: the bytes the database holds in use, its pages less the free ones
    (uncommitted changes of the connection's own transaction included)."""
    page_size = yield from fetch_value("PRAGMA page_size")
    pages = yield from fetch_value("PRAGMA page_count")
    free = yield from fetch_value("PRAGMA freelist_count")
    return int(page_size) * (int(pages) - int(free))


def _content_step(limit: int, chosen: list[str], going: list[str]) -> Query[tuple[int, bool]]:
    """PostgreSQL: delete the oldest responses, with their items, whose content adds up to
    what the stored bytes exceed `limit` by; measured again once they are all gone.
    (`chosen`: picked and not yet deleted; `going`: deleted, their items not yet gone;
    both kept from one step to the next.)"""
    deadline = time.monotonic() + STEP_BUDGET
    if not chosen and not going:
        total = int((yield from fetch_value(_CONTENT_BYTES)))
        if total <= limit:
            return 0, True
        picked = yield from fetch(_OLDEST_UP_TO, (total - limit,))
        if not picked:
            return 0, True
        chosen.extend(reversed([row[0] for row in picked]))
    deleted = 0
    while (chosen or going) and time.monotonic() < deadline:
        if going:
            following = yield from remove_tombstone(going[-1])
            if following is None:
                going.pop()
            else:
                going[-1] = following
            continue
        response_id = chosen.pop()
        if (yield from mark_deleted(response_id, client=None, stored_only=False)):
            deleted += 1
            going.append(response_id)
    return deleted, False
