"""Reads of stored responses: one as served, its events, items by id, the response a replay
extends, listings and exports for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from bridge.store.lineage import BATCH, items_between, lineage
from bridge.store.statements import Dialect, Query, binary, fetch, fetch_one, fetch_value, marks
from bridge.store.stored_json import output_item, render_item, with_tools
from bridge.store.values import ResponseRow
from bridge.store.visibility import visible

# Prefixes looked at first when searching for the response a replay extends.
BASE_WINDOW = 32
# Whether a listed response has no output item.
_NO_OUTPUT = "NOT EXISTS (SELECT 1 FROM output_items o WHERE o.response_id = responses.id)"


def tools_blob(tools_hash: bytes | None) -> Query[bytes | None]:
    """A tool list kept once by its digest (None: no digest, or the list is gone)."""
    if tools_hash is None:
        return None
    found = yield from fetch_value("SELECT body FROM blobs WHERE hash = ?", (tools_hash,))
    return None if found is None else binary(found)


def response_json(response_id: str, client: str | None) -> Query[bytes | None]:
    """The stored response object, as it was served."""
    where, params = visible(client)
    row = yield from fetch_one(
        "SELECT response, tools_hash FROM responses WHERE id = ? AND stored AND NOT deleted"
        + where,
        [response_id, *params],
    )
    if row is None:
        return None
    return (yield from _served(row[0], row[1]))


def response_events(
    response_id: str, client: str | None
) -> Query[tuple[bytes, bytes | None] | None]:
    """A stored response object and the frames of its events (None: a response whose
    events were not kept)."""
    where, params = visible(client)
    row = yield from fetch_one(
        "SELECT response, tools_hash, frames FROM responses LEFT JOIN response_events "
        "ON response_events.response_id = responses.id "
        "WHERE id = ? AND stored AND NOT deleted" + where,
        [response_id, *params],
    )
    if row is None:
        return None
    body = yield from _served(row[0], row[1])
    return body, None if row[2] is None else binary(row[2])


def _served(response: Any, tools_hash: Any) -> Query[bytes]:
    digest = None if tools_hash is None else binary(tools_hash)
    tools = yield from tools_blob(digest)
    return with_tools(binary(response), tools, digest)


def running() -> Query[list[str]]:
    """Responses stored as queued or in progress (background responses that run)."""
    found = yield from fetch(
        "SELECT id FROM responses WHERE status IN ('queued', 'in_progress') AND NOT deleted"
    )
    return [row[0] for row in found]


def find_items(item_ids: Sequence[str], client: str | None) -> Query[dict[str, bytes]]:
    """The JSON of each item found by id among the input and output items of the client's
    stored responses."""
    where, params = visible(client, "responses.client")
    found: dict[str, bytes] = {}
    for item_id in dict.fromkeys(item_ids):
        body = yield from fetch_value(
            "SELECT input_items.body FROM input_items JOIN responses "
            "ON responses.id = input_items.response_id "
            "WHERE input_items.item_id = ? AND NOT responses.deleted" + where + " LIMIT 1",
            [item_id, *params],
        )
        if body is None:
            row = yield from fetch_one(
                "SELECT responses.response, output_items.position FROM output_items "
                "JOIN responses ON responses.id = output_items.response_id "
                "WHERE output_items.item_id = ? AND responses.stored AND NOT responses.deleted"
                + where
                + " LIMIT 1",
                [item_id, *params],
            )
            if row is not None and row[0] is not None:
                body = output_item(binary(row[0]), int(row[1]))
        if body is not None:
            found[item_id] = binary(body)
    return found


def find_base(client: str, digests: Sequence[bytes]) -> Query[tuple[str, int] | None]:
    """The response of this client whose whole input is the longest prefix matched by
    `digests` (digest of the first k + 1 items at index k): (id, its input count).

    Searched from the longest prefix down, a window at a time: a replaying client's new
    items are few, so the first window (the last BASE_WINDOW prefixes) usually has it."""
    end = len(digests)
    while end > 0:
        start = max(0, end - (BASE_WINDOW if end == len(digests) else BATCH))
        batch = list(digests[start:end])
        row = yield from fetch_one(
            "SELECT id, input_count FROM responses "
            f"WHERE input_hash IN ({marks(len(batch))}) AND client = ? AND NOT deleted "
            "ORDER BY input_count DESC LIMIT 1",
            [*batch, client],
        )
        if row is not None:
            return row[0], int(row[1])
        end = start
    return None


def list_responses(
    dialect: Dialect, *, limit: int, session_id: str | None, thread_id: str | None
) -> Query[list[ResponseRow]]:
    """The newest responses first, optionally of one client session or thread."""
    where = ["NOT deleted"]
    params: list[Any] = []
    for column, value in (("session_id", session_id), ("thread_id", thread_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    found = yield from fetch(
        "SELECT id, created_at, model, status, stored, session_id, thread_id, input_tokens, "
        f"output_tokens, previous_response_id, {_NO_OUTPUT} FROM responses "
        f"WHERE {' AND '.join(where)} "
        f"ORDER BY created_at DESC, {dialect.tiebreak} DESC LIMIT ?",
        [*params, limit],
    )
    return [
        ResponseRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8], r[9], bool(r[10]))
        for r in found
    ]


def export(response_id: str) -> Query[dict[str, Any] | None]:
    """Everything stored about one response, decoded, for `sessions export` and `show`."""
    row = yield from fetch_one(
        "SELECT request, response, tools_hash, input_count, stored, created_at, model, status, "
        "previous_response_id, session_id, thread_id, input_tokens, output_tokens "
        "FROM responses WHERE id = ? AND NOT deleted",
        (response_id,),
    )
    if row is None:
        return None
    request, response, tools_hash, count, stored = row[:5]
    if not stored:
        return {
            "stored": False,
            "response": {
                "id": response_id,
                "created_at": row[5],
                "model": row[6],
                "status": row[7],
                "previous_response_id": row[8],
                "usage": {"input_tokens": row[11], "output_tokens": row[12]},
            },
            "session_id": row[9],
            "thread_id": row[10],
        }
    held = yield from lineage(response_id)
    items = yield from items_between(held, 0, int(count))
    tools_hash = None if tools_hash is None else binary(tools_hash)
    tools = yield from tools_blob(tools_hash)
    request_json = msgspec.json.decode(request)
    if tools_hash is not None:
        request_json["tools"] = msgspec.json.decode(tools) if tools else []
    return {
        "stored": True,
        "request": request_json,
        "input_items": [render_item(item_id, body) for _, item_id, body in items],
        "response": msgspec.json.decode(with_tools(binary(response), tools, tools_hash)),
        "session_id": row[9],
        "thread_id": row[10],
    }
