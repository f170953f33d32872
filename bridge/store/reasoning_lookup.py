"""Stored reasoning for replayed turns, found only within the client and its conversation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from bridge.records import KEY_CALL, KEY_CONTEXT, KEY_TURN
from bridge.scope import LEGACY_CLIENT
from bridge.store.lineage import BATCH
from bridge.store.statements import Query, fetch, marks
from bridge.store.values import ReasoningQuery
from bridge.translate.reasoning import Reasoning

_DETAILS = msgspec.json.Decoder(list[dict[str, Any]])
# Reasoning by key value, for one kind of key.
Found = dict[str, Reasoning]


def find_reasoning(
    client: str, conversation: str | None, queries: Sequence[ReasoningQuery]
) -> Query[list[Reasoning | None]]:
    """Stored reasoning for each query.

    The most specific key wins: the turn's context key, then (within the conversation) its
    fingerprint, then one of its call ids; reasoning from before scopes existed comes last,
    and only for the exact conversation it was recorded in.
    """
    contexts = [q.context_key for q in queries if q.context_key is not None]
    by_context = (yield from _keys(client, "", KEY_CONTEXT, contexts)) if contexts else {}
    ladder: list[tuple[Found, Found]] = []
    if conversation is not None:
        fingerprints = [q.fingerprint for q in queries]
        call_ids = [call_id for q in queries for call_id in q.call_ids]
        for owner in (client, LEGACY_CLIENT):
            by_turn = yield from _keys(owner, conversation, KEY_TURN, fingerprints)
            by_call = (
                (yield from _keys(owner, conversation, KEY_CALL, call_ids)) if call_ids else {}
            )
            ladder.append((by_turn, by_call))
    return pick_reasoning(queries, by_context, ladder)


def _keys(client: str, scope: str, kind: str, values: Sequence[str]) -> Query[Found]:
    found: Found = {}
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), BATCH):
        batch = unique[start : start + BATCH]
        selected = yield from fetch(
            "SELECT k.value, r.text, r.details FROM reasoning_keys k "
            "JOIN reasoning r ON r.id = k.reasoning_id WHERE k.client = ? AND k.scope = ? "
            f"AND k.kind = ? AND k.value IN ({marks(len(batch))})",
            [client, scope, kind, *batch],
        )
        for value, text, details in selected:
            found[value] = Reasoning(text, _DETAILS.decode(details) if details else None)
    return found


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
