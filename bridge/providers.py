"""Provider profiles: how each provider names reasoning, switches thinking, and what it rejects.

Facts from the providers' documentation (collected in the project's reference notes):
DeepSeek `thinking` + `reasoning_effort` (low/high/max); Kimi `thinking: {type: disabled}`;
GLM `thinking` and `clear_thinking: false` to keep reasoning across turns; Qwen
`enable_thinking`; vLLM and llama.cpp `chat_template_kwargs.enable_thinking`; Ollama
`reasoning_effort`; OpenRouter `reasoning: {effort | enabled}` and `reasoning_details`
passed back unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.wire.chat import ChatMessage

log = logging.getLogger(__name__)

Effort = str | None
ThinkingSwitch = Callable[[Effort], dict[str, Any]]


def _passthrough_effort(effort: Effort) -> dict[str, Any]:
    return {"reasoning_effort": effort} if effort else {}


def _deepseek(effort: Effort) -> dict[str, Any]:
    if effort is None:
        return {}
    if effort == "none":
        return {"thinking": {"type": "disabled"}}
    body: dict[str, Any] = {"thinking": {"type": "enabled"}}
    # DeepSeek takes low / high / max; "medium" leaves the provider's default.
    level = {"minimal": "low", "low": "low", "high": "high", "xhigh": "max", "max": "max"}
    if effort in level:
        body["reasoning_effort"] = level[effort]
    return body


def _kimi(effort: Effort) -> dict[str, Any]:
    return {"thinking": {"type": "disabled"}} if effort == "none" else {}


def _glm(effort: Effort) -> dict[str, Any]:
    if effort == "none":
        return {"thinking": {"type": "disabled"}}
    # clear_thinking: false keeps earlier turns' reasoning in the prompt.
    body: dict[str, Any] = {"clear_thinking": False}
    if effort is not None:
        body["thinking"] = {"type": "enabled"}
    return body


def _qwen(effort: Effort) -> dict[str, Any]:
    return {} if effort is None else {"enable_thinking": effort != "none"}


def _template_kwargs(effort: Effort) -> dict[str, Any]:
    if effort is None:
        return {}
    return {"chat_template_kwargs": {"enable_thinking": effort != "none"}}


def _openrouter(effort: Effort) -> dict[str, Any]:
    if effort is None:
        return {}
    if effort == "none":
        return {"reasoning": {"enabled": False}}
    return {"reasoning": {"effort": {"max": "high", "xhigh": "high"}.get(effort, effort)}}


@dataclass(frozen=True, slots=True)
class Profile:
    """What a provider needs that the generic Chat Completions translation does not do."""

    name: str
    thinking: ThinkingSwitch = _passthrough_effort
    # The field replayed assistant messages carry their reasoning text in (None: not sent).
    replay_field: str | None = "reasoning_content"
    # Send the provider's own reasoning_details back unchanged (OpenRouter).
    replay_details: bool = False
    parallel_tool_calls: bool = True
    json_schema: bool = True
    # Some providers reject an explicit tool_choice while thinking: it becomes "auto".
    tool_choice_with_thinking: bool = True
    # Request fields only some providers take (OpenAI's Chat Completions does); the others
    # get none of them: their prompt caching is automatic, `user` tells end users apart,
    # and they have no verbosity setting.
    extended_fields: bool = False


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("openai", extended_fields=True),
        Profile(
            "deepseek",
            thinking=_deepseek,
            json_schema=False,
            tool_choice_with_thinking=False,
        ),
        Profile("kimi", thinking=_kimi, tool_choice_with_thinking=False),
        Profile("glm", thinking=_glm),
        Profile("qwen", thinking=_qwen),
        Profile("openrouter", thinking=_openrouter, replay_field=None, replay_details=True),
        Profile("vllm", thinking=_template_kwargs, replay_field="reasoning"),
        Profile("ollama", replay_field="reasoning", parallel_tool_calls=False),
        Profile("llamacpp", thinking=_template_kwargs, parallel_tool_calls=False),
    )
}
PROFILE_NAMES = tuple(PROFILES)
# Sent only to profiles with extended_fields.
EXTENDED_FIELDS = ("prompt_cache_key", "safety_identifier", "verbosity")


def shape_messages(messages: list[ChatMessage], profile: Profile) -> None:
    """Put each replayed turn's reasoning where this provider reads it (in place).

    Shaping a message twice changes nothing more (a WebSocket's conversation keeps shaped
    messages, and a tool call may join a copy of one)."""
    for message in messages:
        if message.role != "assistant":
            continue
        text = message.reasoning_content
        if text is None:
            text = message.reasoning
        message.reasoning_content = None
        if profile.replay_field == "reasoning_content":
            message.reasoning_content = text
        elif profile.replay_field == "reasoning":
            message.reasoning = text
        if not profile.replay_details:
            message.reasoning_details = None


def shape_body(
    body: dict[str, Any],
    profile: Profile,
    effort: Effort,
    *,
    extra_body: dict[str, Any] | None = None,
    drop_params: list[str] | tuple[str, ...] = (),
    max_tokens_param: str | None = None,
) -> dict[str, Any]:
    """The generic upstream body adjusted for a provider; returns the same dict."""
    shape_messages(body["messages"], profile)
    body.update(profile.thinking(effort))
    if "max_tokens" in body and max_tokens_param and max_tokens_param != "max_tokens":
        body[max_tokens_param] = body.pop("max_tokens")
    if not profile.parallel_tool_calls:
        body.pop("parallel_tool_calls", None)
    response_format = body.get("response_format")
    if not profile.json_schema and response_format and response_format["type"] == "json_schema":
        # The schema cannot be enforced; JSON output at least can.
        body["response_format"] = {"type": "json_object"}
    # Every profile's models think unless effort "none" switches thinking off.
    thinking = effort != "none"
    choice = body.get("tool_choice")
    if thinking and not profile.tool_choice_with_thinking and choice not in (None, "auto", "none"):
        log.debug("%s: tool_choice %r sent as auto while thinking", profile.name, choice)
        body["tool_choice"] = "auto"
    if not profile.extended_fields:
        for name in EXTENDED_FIELDS:
            body.pop(name, None)
    if extra_body:
        _merge(body, extra_body)
    for name in drop_params:
        body.pop(name, None)
    return body


def _merge(target: dict[str, Any], extra: dict[str, Any]) -> None:
    """Merge `extra` into `target`, tables into tables, everything else replaced."""
    for key, value in extra.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        else:
            target[key] = value
