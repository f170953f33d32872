"""Chat Completions usage -> Responses usage, every field present (pure)."""

from __future__ import annotations

from bridge.translate.dialect import PLAIN, Dialect
from bridge.wire.chat import ChatUsage
from bridge.wire.events import InputTokensDetails, OutputTokensDetails, Usage


def convert_usage(usage: ChatUsage | None, dialect: Dialect = PLAIN) -> Usage:
    """Chat usage -> Responses usage, every field present."""
    if usage is None:
        return Usage()
    prompt = usage.prompt_tokens or 0
    completion = usage.completion_tokens or 0
    outside = 0
    if dialect.reasoning_outside_completion and usage.total_tokens:
        # The thinking is counted only in the total; Responses counts it in output_tokens.
        outside = max(0, usage.total_tokens - prompt - completion)
        completion += outside
    prompt_details = usage.prompt_tokens_details
    cached = prompt_details.cached_tokens if prompt_details else None
    if cached is None:
        # DeepSeek: prompt_cache_hit_tokens; Moonshot: a top-level cached_tokens.
        cached = usage.prompt_cache_hit_tokens or usage.cached_tokens or 0
    completion_details = usage.completion_tokens_details
    reasoning = (completion_details.reasoning_tokens or 0) if completion_details else 0
    return Usage(
        input_tokens=prompt,
        input_tokens_details=InputTokensDetails(cached_tokens=cached),
        output_tokens=completion,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning or outside),
        total_tokens=usage.total_tokens or prompt + completion,
    )
