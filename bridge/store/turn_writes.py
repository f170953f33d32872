"""A turn's rows, and the statements that write them (inside the caller's transaction).

A turn writes only what is new in it: the items past its base (the earlier response whose
whole input the client replayed), the tool list once by digest, one row, and its reasoning.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import orjson

from bridge.records import TurnRecord, item_id_of
from bridge.store.statements import (
    Query,
    binary,
    execute,
    execute_many,
    fetch_value,
    insert_key,
)

_RESPONSE_COLUMNS = (
    "id, created_at, model, status, previous_response_id, stored, client, scope, session_id, "
    "thread_id, input_tokens, output_tokens, input_base, input_offset, input_count, "
    "input_hash, request, response, tools_hash"
)
# The responses row written whole: a turn written again (a background response when it
# ends, a spooled turn written twice) replaces what was there, and is no longer deleted.
_UPSERT_RESPONSE = (
    f"INSERT INTO responses ({_RESPONSE_COLUMNS}, deleted) "
    f"VALUES ({', '.join('?' * len(_RESPONSE_COLUMNS.split(', ')))}, false) "
    "ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(
        f"{column} = excluded.{column}"
        for column in (*_RESPONSE_COLUMNS.split(", ")[1:], "deleted")
    )
)


@dataclass(slots=True)
class TurnRows:
    """What one turn writes, as statement parameters."""

    # The responses row, in the order of _RESPONSE_COLUMNS.
    response: tuple[Any, ...]
    # (response_id, position, item_id, body) of the input items not in the base.
    items: list[tuple[str, int, str, bytes]]
    # (item_id, response_id, position) of the output items.
    outputs: list[tuple[str, str, int]]


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


def insert_turn(record: TurnRecord, base: tuple[str, int] | None) -> Query[None]:
    """The response row, its new input items, its tools and its reasoning with keys.

    `base` is the caller's find_base answer; the write checks it still holds (a base
    being deleted is no base)."""
    base_count = None
    content = record.content
    if content is not None and base is not None and base[0] != record.id:
        found = yield from fetch_value(
            "SELECT input_count FROM responses WHERE id = ? AND NOT deleted", (base[0],)
        )
        base_count = None if found is None else int(found)
    rows = turn_rows(record, base, base_count)
    if content is not None and content.tools is not None:
        yield from execute(
            "INSERT INTO blobs (hash, body) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (content.tools_hash, content.tools),
        )
    yield from execute_many(
        "INSERT INTO input_items (response_id, position, item_id, body) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (response_id, position) "
        "DO UPDATE SET item_id = excluded.item_id, body = excluded.body",
        rows.items,
    )
    yield from execute(_UPSERT_RESPONSE, rows.response)
    if content is not None:
        yield from execute("DELETE FROM output_items WHERE response_id = ?", (record.id,))
        yield from execute_many(
            "INSERT INTO output_items (item_id, response_id, position) VALUES (?, ?, ?) "
            "ON CONFLICT (item_id, response_id) DO UPDATE SET position = excluded.position",
            rows.outputs,
        )
    reasoning = record.reasoning
    if reasoning is not None:
        reasoning_id = yield from insert_key(
            "INSERT INTO reasoning (response_id, created_at, text, details) VALUES (?, ?, ?, ?)",
            (record.id, record.created_at, reasoning.text, reasoning.details),
        )
        yield from execute_many(
            "INSERT INTO reasoning_keys (client, scope, kind, value, reasoning_id) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (client, scope, kind, value) "
            "DO UPDATE SET reasoning_id = excluded.reasoning_id",
            [
                (record.client, scope, kind, value, reasoning_id)
                for scope, kind, value in reasoning.keys
            ],
        )


def save_events(response_id: str, frames: bytes) -> Query[None]:
    """A background response's events, once it has ended (only while it is stored)."""
    yield from execute(
        "INSERT INTO response_events (response_id, frames) "
        "SELECT id, ? FROM responses WHERE id = ? AND stored AND NOT deleted "
        "ON CONFLICT (response_id) DO UPDATE SET frames = excluded.frames",
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


def fail_responses(response_ids: Collection[str], message: str) -> Query[list[str]]:
    """These responses, where still stored as queued or in progress, marked failed with
    `message` (background runs whose process is gone); the ids of those it marked."""
    failed = []
    for response_id in response_ids:
        body = yield from fetch_value(
            "SELECT response FROM responses WHERE id = ? "
            "AND status IN ('queued', 'in_progress') AND NOT deleted",
            (response_id,),
        )
        changed = yield from execute(
            "UPDATE responses SET status = 'failed', response = ? "
            "WHERE id = ? AND status IN ('queued', 'in_progress') AND NOT deleted",
            (failed_body(None if body is None else binary(body), message), response_id),
        )
        if changed:
            failed.append(response_id)
    return failed
