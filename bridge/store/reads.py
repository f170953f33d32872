"""Queries on a read connection (each function runs in its thread): responses, input item
pages, chains, reasoning, the response a replay extends.

Every read touches what it returns, not the whole history: a page of input items is found
by position through the response's lineage (bridge.store, "input_base"), never by decoding
a whole list.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from bridge.records import KEY_CALL, KEY_CONTEXT, KEY_TURN, normalize_input_item
from bridge.scope import LEGACY_CLIENT
from bridge.store.database import one, rows
from bridge.store.errors import ChainNotFound, ItemNotFound
from bridge.translate.reasoning import Reasoning
from bridge.translate.text_echo import echo_text
from bridge.translate.tool_list import echo_tools
from bridge.wire.events import ResponseObject

_ITEM = msgspec.json.Decoder(dict[str, Any])
_DETAILS = msgspec.json.Decoder(list[dict[str, Any]])
_TOOLS = msgspec.json.Decoder(list[msgspec.Raw])
# Response fields once null when the request did not set them, numbers now (the defaults
# of bridge.wire.events.ResponseObject).
_RESPONSE = msgspec.json.Decoder(ResponseObject)
_NULL = msgspec.Raw(b"null")
_NUMBER_DEFAULTS: dict[str, float | int] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "top_logprobs": 0,
}
_ENCODER = msgspec.json.Encoder()
# SQLite's default limit on host parameters in one statement is 32766; stay well below.
BATCH = 500
# Prefixes looked at first when searching for the response a replay extends.
BASE_WINDOW = 32
# Longest previous_response_id chain or input lineage followed; a guard against loops.
MAX_DEPTH = 100_000


class _Output(msgspec.Struct):
    output: list[dict[str, Any]] = []


_OUTPUT = msgspec.json.Decoder(_Output)


@dataclass(frozen=True, slots=True)
class ResponseRow:
    """One stored response as listed for a person at a terminal."""

    id: str
    created_at: int
    model: str
    status: str
    stored: bool
    session_id: str | None
    thread_id: str | None
    input_tokens: int
    output_tokens: int
    previous_response_id: str | None
    # No output item is stored for it (always so for a store: false response).
    no_output: bool = False

    @property
    def warm_up(self) -> bool:
        """A completed turn with no output and no tokens: Codex's warm-up (`generate:
        false`), answered without asking the provider."""
        return (
            self.status == "completed"
            and self.no_output
            and self.input_tokens == 0
            and self.output_tokens == 0
        )


# Whether a listed response has no output item (the same SQL on both backends).
NO_OUTPUT = "NOT EXISTS (SELECT 1 FROM output_items o WHERE o.response_id = responses.id)"


@dataclass(frozen=True, slots=True)
class ItemsPage:
    items: list[dict[str, Any]]
    has_more: bool


@dataclass(frozen=True, slots=True)
class Chain:
    """A previous_response_id chain: its items oldest first, and its conversation scope."""

    items: list[dict[str, Any]]
    scope: str | None


@dataclass(frozen=True, slots=True)
class ReasoningQuery:
    """What identifies one replayed turn that came without its reasoning."""

    context_key: str | None
    fingerprint: str
    call_ids: Sequence[str]


def _visible(client: str | None) -> tuple[str, list[Any]]:
    """The condition that a response row is this client's (None: any client, the CLI)."""
    if client is None:
        return "", []
    # NULL: rows from before clients were recorded; any client may read them, as before.
    return " AND (client IS NULL OR client = ?)", [client]


def _with_tools(db: sqlite3.Connection, body: bytes, tools_hash: bytes | None) -> bytes:
    blob = None
    if tools_hash is not None:
        row = one(db, "SELECT body FROM blobs WHERE hash = ?", (tools_hash,))
        blob = bytes(row[0]) if row else None
    return with_tools(body, blob, tools_hash)


def with_tools(body: bytes, tools: bytes | None, tools_hash: bytes | None) -> bytes:
    """A stored response object as served: its tool list put back (kept once, by digest,
    as the request sent it; `tools` is that list, None when it is gone) and every field a
    response has today, for responses stored by older releases too."""
    fields = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    for name, default in _NUMBER_DEFAULTS.items():
        if bytes(fields.get(name, _NULL)) == bytes(_NULL):
            # Null in responses stored before the field was a number.
            fields[name] = msgspec.Raw(_ENCODER.encode(default))
    _drop_old_nulls(fields)
    try:
        response = _RESPONSE.decode(_ENCODER.encode(fields))
    except msgspec.ValidationError:
        return bytes(body)  # not a response this release wrote: served as it was kept
    if tools_hash is not None:
        response.tools = echo_tools(_TOOLS.decode(tools)) if tools else []
    return _ENCODER.encode(response)


_OUTPUT_ITEMS = msgspec.json.Decoder(list[dict[str, Any]])


def _drop_old_nulls(fields: dict[str, msgspec.Raw]) -> None:
    """Nulls that older releases stored where the specification allows only a value or no
    field: a reasoning item's encrypted_content, text.verbosity and the text format's
    unused fields."""
    output = fields.get("output")
    if output is not None and b'"encrypted_content":null' in bytes(output):
        items = _OUTPUT_ITEMS.decode(output)
        for item in items:
            if item.get("encrypted_content", "") is None:
                del item["encrypted_content"]
        fields["output"] = msgspec.Raw(_ENCODER.encode(items))
    text = fields.get("text")
    if text is not None and bytes(text) != bytes(_NULL):
        fields["text"] = msgspec.Raw(_ENCODER.encode(echo_text(_ITEM.decode(text))))


def find_items(
    db: sqlite3.Connection, item_ids: Sequence[str], client: str | None
) -> dict[str, bytes]:
    """The JSON of each item found by id among the input and output items of the client's
    stored responses."""
    where, params = _visible(client)
    found: dict[str, bytes] = {}
    for item_id in dict.fromkeys(item_ids):
        row = one(
            db,
            "SELECT input_items.body FROM input_items JOIN responses "
            "ON responses.id = input_items.response_id "
            "WHERE input_items.item_id = ? AND NOT responses.deleted" + where + " LIMIT 1",
            [item_id, *params],
        )
        if row is None:
            row = one(
                db,
                "SELECT json_extract(responses.response, "
                "'$.output[' || output_items.position || ']') "
                "FROM output_items JOIN responses ON responses.id = output_items.response_id "
                "WHERE output_items.item_id = ? AND responses.stored AND NOT responses.deleted"
                + where
                + " LIMIT 1",
                [item_id, *params],
            )
        if row is not None and row[0] is not None:
            body = row[0]
            found[item_id] = body.encode() if isinstance(body, str) else bytes(body)
    return found


def response_json(db: sqlite3.Connection, response_id: str, client: str | None) -> bytes | None:
    """The stored response object, as it was served."""
    where, params = _visible(client)
    row = one(
        db,
        "SELECT response, tools_hash FROM responses WHERE id = ? AND stored AND NOT deleted"
        + where,
        [response_id, *params],
    )
    if row is None:
        return None
    return _with_tools(db, row[0], row[1])


def response_events(
    db: sqlite3.Connection, response_id: str, client: str | None
) -> tuple[bytes, bytes | None] | None:
    """A stored response object and the frames of its events (None: a response whose
    events were not kept)."""
    where, params = _visible(client)
    row = one(
        db,
        "SELECT response, tools_hash, frames FROM responses LEFT JOIN response_events "
        "ON response_events.response_id = responses.id "
        "WHERE id = ? AND stored AND NOT deleted" + where,
        [response_id, *params],
    )
    if row is None:
        return None
    return _with_tools(db, row[0], row[1]), None if row[2] is None else bytes(row[2])


def running(db: sqlite3.Connection) -> list[str]:
    """Responses stored as queued or in progress (background responses that run)."""
    return [
        row[0]
        for row in rows(
            db,
            "SELECT id FROM responses WHERE status IN ('queued', 'in_progress') AND NOT deleted",
        )
    ]


def lineage_query(id_mark: str) -> str:
    """The responses holding a response's input, with each one's range (either store;
    `id_mark` is the dialect's placeholder of the response id)."""
    return (
        "WITH RECURSIVE lineage(id, base, first, stop, depth) AS ("
        f" SELECT id, input_base, input_offset, input_count, 0 FROM responses WHERE id = {id_mark}"
        " UNION ALL"
        " SELECT r.id, r.input_base, r.input_offset, r.input_count, l.depth + 1"
        " FROM responses r JOIN lineage l ON r.id = l.base"
        f" WHERE l.depth < {MAX_DEPTH}"
        ") SELECT id, first, stop FROM lineage"
    )


def chain_query(id_mark: str, where: str) -> str:
    """The chain of a response in one query (either store): its links and each link's
    input items, the rows chain_of reads. `where` limits the head to a client's rows."""
    return (
        "WITH RECURSIVE chain(id, previous, depth, ok) AS ("
        f" SELECT id, previous_response_id, 0, stored AND NOT deleted{where}"
        f" FROM responses WHERE id = {id_mark}"
        " UNION ALL"
        " SELECT r.id, r.previous_response_id, c.depth + 1, r.stored AND NOT r.deleted"
        " FROM responses r JOIN chain c ON r.id = c.previous"
        f" WHERE c.ok AND c.depth < {MAX_DEPTH}"
        # Each link's input: its own items and those of the responses it extends.
        "), holders(depth, id, base, hops) AS ("
        " SELECT c.depth, r.id, r.input_base, 0 FROM chain c JOIN responses r ON r.id = c.id"
        " WHERE c.ok"
        " UNION ALL"
        " SELECT h.depth, r.id, r.input_base, h.hops + 1"
        " FROM holders h JOIN responses r ON r.id = h.base"
        f" WHERE h.hops < {MAX_DEPTH}"
        ") SELECT 0, c.depth, CASE WHEN c.ok THEN 1 ELSE 0 END, c.id, c.previous, r.response,"
        " r.scope FROM chain c JOIN responses r ON r.id = c.id"
        " UNION ALL"
        " SELECT 1, h.depth, i.position, NULL, NULL, i.body, NULL"
        " FROM holders h JOIN input_items i ON i.response_id = h.id"
    )


def _lineage(db: sqlite3.Connection, response_id: str) -> list[tuple[str, int, int]]:
    """The responses holding this response's input: (id, first position, end), any order."""
    selected = rows(
        db,
        lineage_query("?"),
        (response_id,),
    )
    return [(row[0], int(row[1]), int(row[2])) for row in selected]


def _items_between(
    db: sqlite3.Connection, lineage: list[tuple[str, int, int]], low: int, high: int
) -> list[tuple[int, str, bytes]]:
    """Input items at positions low <= p < high: (position, item id, body), in order."""
    found: list[tuple[int, str, bytes]] = []
    for holder, first, stop in sorted(lineage, key=lambda entry: entry[1]):
        start, end = max(low, first), min(high, stop)
        if start >= end:
            continue
        selected = rows(
            db,
            "SELECT position, item_id, body FROM input_items "
            "WHERE response_id = ? AND position >= ? AND position < ? ORDER BY position",
            (holder, start, end),
        )
        found.extend((int(r[0]), r[1], r[2]) for r in selected)
    return found


def render_item(item_id: str, body: bytes | str) -> dict[str, Any]:
    return normalize_input_item(_ITEM.decode(body), item_id)


def input_page(
    db: sqlite3.Connection,
    response_id: str,
    client: str | None,
    *,
    limit: int,
    descending: bool,
    after: str | None,
) -> ItemsPage | None:
    """One page of a response's input items (None: no such response); ItemNotFound when
    `after` is not one of them."""
    where, params = _visible(client)
    row = one(
        db,
        "SELECT input_count FROM responses WHERE id = ? AND stored AND NOT deleted" + where,
        [response_id, *params],
    )
    if row is None:
        return None
    count = int(row[0])
    lineage = _lineage(db, response_id)
    position = None if after is None else _position_of(db, lineage, after, descending)
    if after is not None and position is None:
        raise ItemNotFound(after)
    low, high, has_more = page_bounds(count, position, limit, descending)
    page = _items_between(db, lineage, low, high)
    if descending:
        page.reverse()
    return ItemsPage([render_item(item_id, body) for _, item_id, body in page], has_more)


def page_bounds(
    count: int, after: int | None, limit: int, descending: bool
) -> tuple[int, int, bool]:
    """The positions low <= p < high of a page of `count` input items following the one
    at `after` (None: from the first, or the last when descending), and whether more
    follow."""
    if after is None:
        start = count - 1 if descending else 0
    else:
        start = after - 1 if descending else after + 1
    if descending:
        low, high = max(0, start - limit + 1), start + 1
        return low, max(low, high), low > 0
    low, high = start, min(count, start + limit)
    return low, max(low, high), high < count


def position_in_input(
    lineage: list[tuple[str, int, int]], found: Sequence[tuple[str, int]], descending: bool
) -> int | None:
    """Where an item is in the input, from the (holder, position) rows that hold its id:
    only the rows in each holder's own range count; its first place in the listing's order."""
    holders = {holder: (first, stop) for holder, first, stop in lineage}
    positions = [
        int(position)
        for holder, position in found
        if holders[holder][0] <= position < holders[holder][1]
    ]
    if not positions:
        return None
    return max(positions) if descending else min(positions)


def _position_of(
    db: sqlite3.Connection, lineage: list[tuple[str, int, int]], item_id: str, descending: bool
) -> int | None:
    """Where `item_id` is in the input: its first place in the listing's order."""
    found: list[tuple[str, int]] = []
    for start in range(0, len(lineage), BATCH):
        batch = [holder for holder, _, _ in lineage[start : start + BATCH]]
        marks = ",".join("?" * len(batch))
        selected = rows(
            db,
            "SELECT response_id, position FROM input_items "
            f"WHERE item_id = ? AND response_id IN ({marks})",
            [item_id, *batch],
        )
        found.extend((holder, int(position)) for holder, position in selected)
    return position_in_input(lineage, found, descending)


def chain(db: sqlite3.Connection, response_id: str, client: str | None) -> Chain:
    """Input and output items of a response and all its predecessors, oldest first.

    One query whatever the length of the chain.
    """
    where, params = _visible(client)
    found = rows(
        db,
        chain_query("?", where),
        [*params, response_id],
    )
    return chain_of(response_id, found)


def chain_of(response_id: str, found: Sequence[Sequence[Any]]) -> Chain:
    """The chain from the rows of the chain query (either store's): its links
    (kind 0, depth, retrievable, id, previous, response, scope) and its input items
    (kind 1, depth, position, -, -, body, -); ChainNotFound for a missing link."""
    links = sorted((row for row in found if row[0] == 0), key=lambda row: row[1])
    if not links:
        raise ChainNotFound(response_id, response_id)
    for link in links:
        if not link[2]:
            raise ChainNotFound(response_id, link[3])
    if links[-1][4] is not None:
        raise ChainNotFound(response_id, links[-1][4])
    links.reverse()
    inputs = [row for row in found if row[0] == 1]
    return decode_chain(links, inputs)


def decode_chain(links: list[Any], inputs: list[Any]) -> Chain:
    by_depth: dict[int, list[tuple[int, bytes]]] = {}
    for _, depth, position, _, _, body, _ in inputs:
        by_depth.setdefault(depth, []).append((position, body))
    items: list[dict[str, Any]] = []
    for _, depth, _, _, _, response, _ in links:
        own = sorted(by_depth.get(depth, ()), key=lambda entry: entry[0])
        items.extend(_ITEM.decode(body) for _, body in own)
        items.extend(_OUTPUT.decode(response).output)
    return Chain(items, links[-1][6])


def find_base(
    db: sqlite3.Connection, client: str, digests: Sequence[bytes]
) -> tuple[str, int] | None:
    """The response of this client whose whole input is the longest prefix matched by
    `digests` (digest of the first k + 1 items at index k): (id, its input count).

    Searched from the longest prefix down, a window at a time: a replaying client's new
    items are few, so the first window (the last BASE_WINDOW prefixes) usually has it."""
    end = len(digests)
    while end > 0:
        start = max(0, end - (BASE_WINDOW if end == len(digests) else BATCH))
        batch = list(digests[start:end])
        marks = ",".join("?" * len(batch))
        row = one(
            db,
            "SELECT id, input_count FROM responses "
            f"WHERE input_hash IN ({marks}) AND client = ? AND NOT deleted "
            "ORDER BY input_count DESC LIMIT 1",
            [*batch, client],
        )
        if row is not None:
            return row[0], int(row[1])
        end = start
    return None


def _keys(
    db: sqlite3.Connection, client: str, scope: str, kind: str, values: Sequence[str]
) -> dict[str, Reasoning]:
    found: dict[str, Reasoning] = {}
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), BATCH):
        batch = unique[start : start + BATCH]
        marks = ",".join("?" * len(batch))
        selected = rows(
            db,
            "SELECT k.value, r.text, r.details FROM reasoning_keys k "
            "JOIN reasoning r ON r.id = k.reasoning_id "
            f"WHERE k.client = ? AND k.scope = ? AND k.kind = ? AND k.value IN ({marks})",
            [client, scope, kind, *batch],
        )
        for value, text, details in selected:
            found[value] = Reasoning(text, _DETAILS.decode(details) if details else None)
    return found


def find_reasoning(
    db: sqlite3.Connection,
    client: str,
    conversation: str | None,
    queries: Sequence[ReasoningQuery],
) -> list[Reasoning | None]:
    """Stored reasoning for each query, found only within the client and conversation.

    The most specific key wins: the turn's context key, then (within the conversation) its
    fingerprint, then one of its call ids; reasoning from before scopes existed comes last,
    and only for the exact conversation it was recorded in.
    """
    contexts = [q.context_key for q in queries if q.context_key is not None]
    by_context = _keys(db, client, "", KEY_CONTEXT, contexts) if contexts else {}
    ladder: list[tuple[dict[str, Reasoning], dict[str, Reasoning]]] = []
    if conversation is not None:
        fingerprints = [q.fingerprint for q in queries]
        call_ids = [call_id for q in queries for call_id in q.call_ids]
        for owner in (client, LEGACY_CLIENT):
            by_turn = _keys(db, owner, conversation, KEY_TURN, fingerprints)
            by_call = _keys(db, owner, conversation, KEY_CALL, call_ids) if call_ids else {}
            ladder.append((by_turn, by_call))
    return pick_reasoning(queries, by_context, ladder)


Found = dict[str, Reasoning]


def pick_reasoning(
    queries: Sequence[ReasoningQuery], by_context: Found, ladder: list[tuple[Found, Found]]
) -> list[Reasoning | None]:
    """Each query's reasoning from what the keys found: its context key first, then, rung
    by rung (the client's own rows, then legacy ones), its fingerprint or a call id."""
    results: list[Reasoning | None] = []
    for query in queries:
        found = by_context.get(query.context_key) if query.context_key else None
        for by_turn, by_call in ladder:
            if found is not None:
                break
            found = by_turn.get(query.fingerprint) or next(
                (by_call[c] for c in query.call_ids if c in by_call), None
            )
        results.append(found)
    return results


def list_responses(
    db: sqlite3.Connection,
    *,
    limit: int,
    session_id: str | None = None,
    thread_id: str | None = None,
) -> list[ResponseRow]:
    """The newest responses first, optionally of one client session or thread."""
    where = ["NOT deleted"]
    params: list[Any] = []
    if session_id is not None:
        where.append("session_id = ?")
        params.append(session_id)
    if thread_id is not None:
        where.append("thread_id = ?")
        params.append(thread_id)
    selected = rows(
        db,
        "SELECT id, created_at, model, status, stored, session_id, thread_id, "
        "input_tokens, output_tokens, previous_response_id, "
        f"{NO_OUTPUT} FROM responses "
        f"WHERE {' AND '.join(where)} ORDER BY created_at DESC, rowid DESC LIMIT ?",
        [*params, limit],
    )
    return [
        ResponseRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6], r[7], r[8], r[9], bool(r[10]))
        for r in selected
    ]


def export(db: sqlite3.Connection, response_id: str) -> dict[str, Any] | None:
    """Everything stored about one response, decoded, for `sessions export` and `show`."""
    row = one(
        db,
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
    lineage = _lineage(db, response_id)
    items = _items_between(db, lineage, 0, int(count))
    request_json = msgspec.json.decode(request)
    if tools_hash is not None:
        blob = one(db, "SELECT body FROM blobs WHERE hash = ?", (tools_hash,))
        request_json["tools"] = msgspec.json.decode(blob[0]) if blob else []
    return {
        "stored": True,
        "request": request_json,
        "input_items": [render_item(item_id, body) for _, item_id, body in items],
        "response": msgspec.json.decode(_with_tools(db, response, tools_hash)),
        "session_id": row[9],
        "thread_id": row[10],
    }
