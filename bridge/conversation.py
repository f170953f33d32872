"""A turn's context from the store: the previous_response_id chain, recovered reasoning,
and the write that records the turn when it ends."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable

from multidict import CIMultiDictProxy

from bridge.config import ProviderConfig
from bridge.errors import ApiError
from bridge.providers import PROFILES, shape_body
from bridge.records import build_turn_record, normalize_input_items
from bridge.store import ChainNotFound, Store
from bridge.translate.request import ChatRequestPlan, ReasoningGap, RequestError, translate_request
from bridge.wire.events import ResponseObject
from bridge.wire.responses import ResponsesRequest

log = logging.getLogger(__name__)

SESSION_HEADERS = ("session-id", "session_id")
THREAD_HEADERS = ("thread-id", "thread_id")


async def plan_turn(
    store: Store, req: ResponsesRequest, upstream_model: str, provider: ProviderConfig
) -> ChatRequestPlan:
    """The upstream request for `req`: its stored chain first, reasoning filled in, and
    shaped for the provider's profile."""
    profile = PROFILES[provider.profile]
    history = []
    if req.previous_response_id is not None:
        try:
            history = await store.chain_items(req.previous_response_id)
        except ChainNotFound as exc:
            detail = (
                ""
                if exc.missing == exc.response_id
                else (f" (its chain is broken: '{exc.missing}' is no longer stored)")
            )
            raise ApiError(
                404,
                f"Previous response with id '{exc.response_id}' not found{detail}.",
                param="previous_response_id",
                code="previous_response_not_found",
            ) from None
    try:
        plan = translate_request(
            req,
            upstream_model,
            developer_role=provider.developer_role,
            history=history,
            want_details=profile.replay_details,
        )
    except RequestError as exc:
        raise ApiError(400, exc.message, param=exc.param, code="invalid_value") from None
    if plan.reasoning_gaps:
        await recover_reasoning(store, plan.reasoning_gaps)
    shape_body(
        plan.body,
        profile,
        req.reasoning.effort if req.reasoning else None,
        extra_body=provider.extra_body,
        drop_params=provider.drop_params,
        max_tokens_param=provider.max_tokens_param,
    )
    return plan


async def recover_reasoning(store: Store, gaps: list[ReasoningGap]) -> None:
    """Steps 2 and 3 of the ladder: reasoning by tool call id, then by turn fingerprint.

    (Step 1, reasoning items in the input, and step 4, the stored chain, are already in the
    translated history.) A miss is logged; no placeholder is ever sent: DeepSeek rejects it.
    """
    call_ids = [call_id for gap in gaps for call_id in gap.call_ids]
    by_call, by_turn = await store.find_reasoning(call_ids, [gap.fingerprint for gap in gaps])
    for gap in gaps:
        found = next((by_call[c] for c in gap.call_ids if c in by_call), None)
        if found is None:
            found = by_turn.get(gap.fingerprint)
        if found is not None:
            gap.fill(found)
        elif gap.call_ids:
            log.warning(
                "no reasoning found for replayed tool-call turn (call ids %s); a thinking "
                "model may reject the request",
                ", ".join(gap.call_ids),
            )
        else:
            log.debug("no reasoning found for replayed turn %s", gap.fingerprint)


def _header(headers: CIMultiDictProxy[str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None


def turn_recorder(
    store: Store,
    req: ResponsesRequest,
    response: ResponseObject,
    headers: CIMultiDictProxy[str],
) -> Callable[[], Awaitable[None]]:
    """The write that records the finished turn; a storage failure is logged, not raised."""
    session_id = _header(headers, SESSION_HEADERS)
    thread_id = _header(headers, THREAD_HEADERS)

    async def record() -> None:
        try:
            turn = build_turn_record(
                req,
                normalize_input_items(req.input),
                response,
                session_id=session_id,
                thread_id=thread_id,
            )
            await store.save_turn_shielded(turn)
        except sqlite3.Error:
            # The answer still reaches the client; only its later retrieval is lost.
            log.exception("could not store response %s", response.id)

    return record
