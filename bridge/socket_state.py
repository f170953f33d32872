"""What a WebSocket keeps of its conversations, so that a turn sends only what is new.

After each response the socket completes, the conversation up to the end of that response
is kept as a Prefix (bridge.conversation): its upstream messages translated, shaped for
the provider and encoded, and where the translation stopped. A turn naming that response
as previous_response_id is then translated from the new items alone, and its upstream body
is written from the kept pieces: the bridge's work per turn follows what is new, not the
length of the conversation. What is kept is bounded per socket, in responses and in bytes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import msgspec

from bridge.body import extend_pieces
from bridge.conversation import Prefix
from bridge.providers import PROFILES, shape_messages
from bridge.records import recorded_scope
from bridge.translate.context import ContextDigest
from bridge.translate.errors import RequestError
from bridge.turn import Turn
from bridge.upstream_body import encode_messages

log = logging.getLogger(__name__)

# Responses kept per socket: Codex only ever continues the last one; other clients may
# branch from an earlier one.
MAX_RESPONSES = 16
# Status of a response whose conversation can be continued.
CONTINUABLE = frozenset({"completed", "incomplete"})


def conversation_after(turn: Turn, profile: str) -> Prefix | None:
    """The conversation up to the end of the turn's response (None if it cannot go on:
    the turn failed, or was not set up to keep its messages).

    The response's output is translated as a client replaying it would have it translated,
    so the next turn's upstream body is the one a full replay would give. CPU-bound, in
    proportion to the turn's own messages.
    """
    response = turn.response
    plan = turn.planned.plan
    builder = plan.builder
    if response.status not in CONTINUABLE or builder is None or turn.messages is None:
        return None
    builder.mark()
    try:
        builder.add_items(msgspec.to_builtins(response.output), "output")
    except RequestError:
        log.exception("the output of %s could not be translated back", response.id)
        return None
    changed = builder.changed_from
    fresh = builder.messages[changed:]
    shape_messages(fresh, PROFILES[profile])
    start = plan.context_start
    prefix = turn.planned.prefix
    earlier: tuple[bytes, ...] = ()
    if prefix is not None:
        earlier = prefix.pieces[:-1] if builder.replaces_last else prefix.pieces
    pieces = extend_pieces(earlier, [*turn.messages[: changed - start], *encode_messages(fresh)])
    context = context_head = None
    if turn.planned.by_context:
        own = builder.messages[start:]
        base = turn.planned.context_base
        if prefix is not None and not own:
            context, context_head = prefix.context, prefix.context_head
        else:
            context_head = (base.copy() if base is not None else ContextDigest()).extend(own[:-1])
            context = context_head.copy()
            if own:
                context.add(own[-1])
    return Prefix(
        response_id=response.id,
        pieces=pieces,
        continuation=builder.continuation(len(pieces)),
        scope=recorded_scope(turn.request, response, turn.planned.scope),
        shaped_for=(turn.request.model, profile),
        context=context,
        context_head=context_head,
        root=prefix.root if prefix is not None else response.id,
        size=sum(len(piece) for piece in pieces),
    )


class SocketConversations:
    """The conversations one socket keeps, least recently used first.

    Bounded in responses (MAX_RESPONSES) and in bytes: a conversation counts as its
    largest kept response (the responses of one conversation share their pieces), and
    whole conversations go, least recently used first, until the socket is within
    `max_bytes`. A conversation larger than that on its own is not kept at all.
    """

    def __init__(self, max_bytes: int, max_responses: int = MAX_RESPONSES) -> None:
        self._max_bytes = max_bytes
        self._max_responses = max_responses
        self._kept: OrderedDict[str, Prefix] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def get(self, response_id: str) -> Prefix | None:
        prefix = self._kept.get(response_id)
        if prefix is not None:
            self._kept.move_to_end(response_id)
        return prefix

    @property
    def size(self) -> int:
        """Bytes kept, each conversation counted once (by its largest response)."""
        largest: dict[str, int] = {}
        for prefix in self._kept.values():
            largest[prefix.root] = max(largest.get(prefix.root, 0), prefix.size)
        return sum(largest.values())

    def evict(self, response_id: str | None) -> None:
        """Forget the conversation up to `response_id`: a continuation of it failed, and the
        Open Responses specification then wants a later one to find it gone
        (previous_response_not_found, unless the store has it)."""
        if response_id is not None:
            self._kept.pop(response_id, None)

    def add(self, prefix: Prefix) -> None:
        self._kept[prefix.response_id] = prefix
        while len(self._kept) > self._max_responses:
            self._kept.popitem(last=False)
        while self._kept and self.size > self._max_bytes:
            # The conversation whose latest use is the oldest.
            last_use = {prefix.root: n for n, prefix in enumerate(self._kept.values())}
            oldest = min(last_use, key=last_use.__getitem__)
            for response_id in [r for r, p in self._kept.items() if p.root == oldest]:
                del self._kept[response_id]
            log.info(
                "a conversation on a WebSocket was let go (over [websocket] cache_bytes = %d); "
                "a turn that continues it is asked for the whole input again",
                self._max_bytes,
            )
