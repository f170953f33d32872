"""The response object as a turn starts it: the request's settings echoed, no output yet."""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

import msgspec

from bridge.translate.ids import new_id
from bridge.translate.text_echo import echo_text
from bridge.translate.tool_list import echo_tools
from bridge.upstream_body import ECHO_IN_THREAD
from bridge.wire.events import ResponseObject
from bridge.wire.responses import ResponsesRequest

T = TypeVar("T")
ENCRYPTED_REASONING = "reasoning.encrypted_content"


async def echo_tools_off_loop(tools: list[msgspec.Raw], large: bool) -> list[msgspec.Raw]:
    """echo_tools; in a thread for a long list (or a large request), so other streams go on
    meanwhile."""
    if not large and len(tools) < ECHO_IN_THREAD:
        return echo_tools(tools)
    return await asyncio.to_thread(echo_tools, tools)


def response_template(req: ResponsesRequest, tools: list[msgspec.Raw]) -> ResponseObject:
    """The response object as it starts: the request's settings echoed (its `tools` as
    echo_tools gives them), no output yet."""
    return ResponseObject(
        id=new_id("resp"),
        created_at=int(time.time()),
        model=req.model,
        instructions=req.instructions,
        metadata=req.metadata or {},
        parallel_tool_calls=req.parallel_tool_calls
        if req.parallel_tool_calls is not None
        else True,
        temperature=_or(req.temperature, 1.0),
        top_p=_or(req.top_p, 1.0),
        presence_penalty=_or(req.presence_penalty, 0.0),
        frequency_penalty=_or(req.frequency_penalty, 0.0),
        top_logprobs=_or(req.top_logprobs, 0),
        max_output_tokens=req.max_output_tokens,
        max_tool_calls=req.max_tool_calls,
        tool_choice=req.tool_choice if req.tool_choice is not None else "auto",
        tools=tools,
        previous_response_id=req.previous_response_id,
        reasoning=msgspec.to_builtins(req.reasoning) if req.reasoning else None,
        text=echo_text(msgspec.to_builtins(req.text) if req.text is not None else None),
        store=req.store if req.store is not None else True,
        background=bool(req.background),
        truncation=req.truncation or "disabled",
        user=req.user,
        safety_identifier=req.safety_identifier,
        prompt_cache_key=req.prompt_cache_key,
    )


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


def wants_summary(req: ResponsesRequest, setting: str) -> bool:
    """Whether reasoning is mirrored as a summary: per model, or as the request asks."""
    if setting != "auto":
        return setting == "always"
    summary = req.reasoning.summary if req.reasoning else None
    return summary is not None and summary != "none"
