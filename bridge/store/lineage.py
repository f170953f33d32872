"""A response's input and its previous_response_id chain, read through its lineage.

A response stores only the input items past its base (the earlier response whose whole
input it extends: `input_base`, from `input_offset`), so its input is found by following
the bases; every read touches the items it returns, never the whole history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.store.errors import ChainNotFound, ItemNotFound
from bridge.store.statements import Query, Row, binary, fetch, fetch_value, marks
from bridge.store.stored_json import ITEM, output_items, render_item
from bridge.store.values import Chain, ItemsPage
from bridge.store.visibility import visible

# Placeholders per statement, well below SQLite's default limit of 32766.
BATCH = 500
# Longest previous_response_id chain or input lineage followed; a guard against loops.
MAX_DEPTH = 100_000
# The responses holding a response's input, with each one's range of positions.
_LINEAGE = (
    "WITH RECURSIVE lineage(id, base, first, stop, depth) AS ("
    " SELECT id, input_base, input_offset, input_count, 0 FROM responses WHERE id = ?"
    " UNION ALL"
    " SELECT r.id, r.input_base, r.input_offset, r.input_count, l.depth + 1"
    " FROM responses r JOIN lineage l ON r.id = l.base"
    f" WHERE l.depth < {MAX_DEPTH}"
    ") SELECT id, first, stop FROM lineage"
)
# (holder, first position, end) of each response holding part of an input.
Lineage = list[tuple[str, int, int]]


def _chain_query(where: str) -> str:
    """The chain of a response in one query: its links and each link's input items, the
    rows chain_of reads. `where` limits the head to a client's rows."""
    return (
        "WITH RECURSIVE chain(id, previous, depth, ok) AS ("
        f" SELECT id, previous_response_id, 0, stored AND NOT deleted{where}"
        " FROM responses WHERE id = ?"
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


def lineage(response_id: str) -> Query[Lineage]:
    """The responses holding this response's input: (id, first position, end), any order."""
    found = yield from fetch(_LINEAGE, (response_id,))
    return [(row[0], int(row[1]), int(row[2])) for row in found]


def items_between(held: Lineage, low: int, high: int) -> Query[list[tuple[int, str, bytes]]]:
    """Input items at positions low <= p < high: (position, item id, body), in order."""
    found: list[tuple[int, str, bytes]] = []
    for holder, first, stop in sorted(held, key=lambda entry: entry[1]):
        start, end = max(low, first), min(high, stop)
        if start >= end:
            continue
        selected = yield from fetch(
            "SELECT position, item_id, body FROM input_items "
            "WHERE response_id = ? AND position >= ? AND position < ? ORDER BY position",
            (holder, start, end),
        )
        found.extend((int(row[0]), row[1], binary(row[2])) for row in selected)
    return found


def input_page(
    response_id: str, client: str | None, *, limit: int, descending: bool, after: str | None
) -> Query[ItemsPage | None]:
    """One page of a response's input items (None: no such response); ItemNotFound when
    `after` is not one of them."""
    where, params = visible(client)
    count = yield from fetch_value(
        "SELECT input_count FROM responses WHERE id = ? AND stored AND NOT deleted" + where,
        [response_id, *params],
    )
    if count is None:
        return None
    held = yield from lineage(response_id)
    position = None
    if after is not None:
        position = yield from _position_of(held, after, descending)
        if position is None:
            raise ItemNotFound(after)
    low, high, has_more = page_bounds(int(count), position, limit, descending)
    page = yield from items_between(held, low, high)
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


def _position_of(held: Lineage, item_id: str, descending: bool) -> Query[int | None]:
    """Where `item_id` is in the input: only the rows in each holder's own range count; its
    first place in the listing's order."""
    ranges = {holder: (first, stop) for holder, first, stop in held}
    positions: list[int] = []
    for start in range(0, len(held), BATCH):
        batch = [holder for holder, _, _ in held[start : start + BATCH]]
        selected = yield from fetch(
            "SELECT response_id, position FROM input_items "
            f"WHERE item_id = ? AND response_id IN ({marks(len(batch))})",
            [item_id, *batch],
        )
        for holder, position in selected:
            first, stop = ranges[holder]
            if first <= int(position) < stop:
                positions.append(int(position))
    if not positions:
        return None
    return max(positions) if descending else min(positions)


def chain(response_id: str, client: str | None) -> Query[Chain]:
    """Input and output items of a response and all its predecessors, oldest first;
    ChainNotFound if a link is missing. One query whatever the length of the chain."""
    where, params = visible(client)
    found = yield from fetch(_chain_query(where), [*params, response_id])
    return chain_of(response_id, found)


def chain_of(response_id: str, found: Sequence[Row]) -> Chain:
    """The chain from the rows of the chain query: its links (kind 0, depth, retrievable,
    id, previous, response, scope) and its input items (kind 1, depth, position, -, -,
    body, -); ChainNotFound for a missing link."""
    links = sorted((row for row in found if row[0] == 0), key=lambda row: row[1])
    if not links:
        raise ChainNotFound(response_id, response_id)
    for link in links:
        if not link[2]:
            raise ChainNotFound(response_id, link[3])
    if links[-1][4] is not None:
        raise ChainNotFound(response_id, links[-1][4])
    links.reverse()
    by_depth: dict[int, list[tuple[int, Any]]] = {}
    for row in found:
        if row[0] == 1:
            by_depth.setdefault(row[1], []).append((row[2], row[5]))
    items: list[dict[str, Any]] = []
    for link in links:
        own = sorted(by_depth.get(link[1], ()), key=lambda entry: entry[0])
        items.extend(ITEM.decode(body) for _, body in own)
        items.extend(output_items(link[5]))
    return Chain(items, links[-1][6])
