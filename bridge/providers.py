"""Provider profiles: how each provider names reasoning, switches thinking, what it wants
back of a replayed turn, and what it rejects.

From the providers' documentation and their users' public reports (docs/providers.md has
each provider's replay rule with its source):
- DeepSeek: `thinking` + `reasoning_effort` (low/high/max). With `tools` in a request, every
  earlier assistant message must carry `reasoning_content`, tool calls or not, or the
  request is refused (400); "" stands for a turn that had none. json_schema is refused,
  json_object wants the word "json" in the prompt.
- Kimi: `thinking: {type: disabled}`; an assistant message with tool calls must carry
  `reasoning_content` while thinking ("... missing in assistant tool call message at index
  N").
- GLM: `thinking` and `clear_thinking: false` to keep reasoning across turns; reasoning is
  to be returned with tool results; json_schema is accepted and ignored.
- Qwen: `enable_thinking`; reasoning back is optional; json_schema only on some models.
- Gemini 3 (its OpenAI-compatible endpoint): thought signatures on tool calls
  (bridge.translate.dialect), thinking through `extra_body.google.thinking_config`, thought
  summaries as <thought> in content; unknown top-level fields are refused (400).
- MiniMax M2: `reasoning_split: true` moves the thinking out of content into
  `reasoning_details`, which the docs say must come back complete on every later turn;
  temperature in (0, 1]; no response_format.
- OpenRouter: `reasoning: {effort | enabled}` and `reasoning_details` passed back unchanged.
- vLLM and llama.cpp `chat_template_kwargs.enable_thinking`; Ollama `reasoning_effort`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from bridge.translate.dialect import (
    PLAIN,
    UNSIGNED_CALL,
    Dialect,
    is_signature,
    signature_extra,
)
from bridge.translate.gaps import ReplayNeeds
from bridge.translate.output_format import StructuredOutput
from bridge.wire.chat import ChatMessage

log = logging.getLogger(__name__)

Effort = str | None
ThinkingSwitch = Callable[[Effort], dict[str, Any]]
# Which replayed assistant messages must carry the reasoning field even when the turn had
# no reasoning ("" then): none, those with tool calls, or all of them.
ReasoningRequired = Literal["never", "tool_calls", "always"]


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


# Gemini 3's thinking levels. Thinking cannot be switched off on Gemini 3 ("none" and
# "minimal" ask for the lowest level every Gemini 3 model takes); the thought summaries
# come only when asked for, and `reasoning_effort` cannot be sent beside thinking_config
# (ai.google.dev/gemini-api/docs/openai).
_GEMINI_LEVELS = {
    "none": "low",
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}


def _gemini(effort: Effort) -> dict[str, Any]:
    thinking: dict[str, Any] = {"include_thoughts": True}
    if effort is not None:
        thinking["thinking_level"] = _GEMINI_LEVELS.get(effort, effort)
    # The endpoint's own spelling: a top-level `extra_body` object.
    return {"extra_body": {"google": {"thinking_config": thinking}}}


def _minimax(effort: Effort) -> dict[str, Any]:
    # Thinking stays on whatever is asked (M2); the switch only moves it out of content.
    return {"reasoning_split": True}


@dataclass(frozen=True, slots=True)
class Profile:
    """What a provider needs that the generic Chat Completions translation does not do."""

    name: str
    thinking: ThinkingSwitch = _passthrough_effort
    # The field replayed assistant messages carry their reasoning text in (None: not sent).
    replay_field: str | None = "reasoning_content"
    # Which replayed assistant messages carry replay_field even without reasoning.
    reasoning_required: ReasoningRequired = "never"
    # Send the provider's own reasoning_details back unchanged (OpenRouter, MiniMax).
    replay_details: bool = False
    # Replayed details made from the text when the turn's reasoning came as text only.
    details_from_text: Callable[[str], list[dict[str, Any]]] | None = None
    # Gemini's thought signatures on replayed tool calls.
    signatures: bool = False
    dialect: Dialect = PLAIN
    parallel_tool_calls: bool = True
    structured_output: StructuredOutput = "json_schema"
    # Some providers reject an explicit tool_choice while thinking: it becomes "auto".
    tool_choice_with_thinking: bool = True
    # Request fields only some providers take (OpenAI's Chat Completions does); the others
    # get none of them: their prompt caching is automatic, `user` tells end users apart,
    # and they have no verbosity setting.
    extended_fields: bool = False
    # Top-level request fields the provider refuses.
    refused_fields: tuple[str, ...] = ()
    # The temperatures the provider takes; others are brought into the range.
    temperature_range: tuple[float, float] | None = None
    # A request that needs no events (`stream` false over HTTP) asks for one JSON answer,
    # which the provider documents with the same reasoning fields as its stream.
    whole_answers: bool = True

    @property
    def needs(self) -> ReplayNeeds:
        """What replayed assistant turns must come back with (what the store fills in)."""
        return ReplayNeeds(
            text=self.replay_field is not None,
            details=self.replay_details,
            signatures=self.signatures,
        )

    @property
    def wants_reasoning_back(self) -> bool:
        """Whether the provider refuses (or degrades on) a turn replayed without it."""
        return self.reasoning_required != "never" or self.signatures or self.replay_details


def _minimax_details(text: str) -> list[dict[str, Any]]:
    """Reasoning that came as text (a <think> block), in MiniMax's reasoning_details form."""
    return [
        {
            "type": "reasoning.text",
            "id": "reasoning-text-1",
            "format": "MiniMax-response-v1",
            "index": 0,
            "text": text,
        }
    ]


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile("openai", extended_fields=True),
        Profile(
            "deepseek",
            thinking=_deepseek,
            reasoning_required="always",
            structured_output="json_object",
            tool_choice_with_thinking=False,
        ),
        Profile(
            "kimi",
            thinking=_kimi,
            reasoning_required="tool_calls",
            tool_choice_with_thinking=False,
        ),
        Profile(
            "glm", thinking=_glm, reasoning_required="tool_calls", structured_output="json_object"
        ),
        Profile(
            "qwen",
            thinking=_qwen,
            structured_output="json_object",
            # Model Studio's "Deep thinking" page: "The thinking mode only supports
            # incremental output"; its FAQ: QwQ and QVQ are streaming-only.
            whole_answers=False,
        ),
        Profile(
            "gemini",
            thinking=_gemini,
            replay_field=None,
            signatures=True,
            dialect=Dialect(
                think_tag="thought", signatures=True, reasoning_outside_completion=True
            ),
            # "only false is supported" (ai.google.dev/api/compatibility), and
            # frequency_penalty is an unknown field there.
            parallel_tool_calls=False,
            refused_fields=("frequency_penalty",),
            # Thought summaries are told from the answer by a flag on each streamed delta
            # (extra_content.google.thought) and a text answer's signature comes in a
            # delta of its own: one whole message has room for neither.
            whole_answers=False,
        ),
        Profile(
            "minimax",
            thinking=_minimax,
            replay_field=None,
            replay_details=True,
            details_from_text=_minimax_details,
            dialect=Dialect(reasoning_in_details=True),
            structured_output="prompt",
            temperature_range=(0.01, 1.0),
        ),
        Profile("openrouter", thinking=_openrouter, replay_field=None, replay_details=True),
        Profile("vllm", thinking=_template_kwargs, replay_field="reasoning"),
        Profile("ollama", replay_field="reasoning", parallel_tool_calls=False),
        Profile("llamacpp", thinking=_template_kwargs, parallel_tool_calls=False),
        # The built-in demo model (bridge.demo): thinking, strict about replayed reasoning,
        # and it only streams.
        Profile("demo", reasoning_required="tool_calls", whole_answers=False),
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
        message.reasoning_content = message.reasoning = None
        required = profile.reasoning_required
        if not text:
            # The turn had none (or it is lost): where the field must be there all the
            # same it is "", elsewhere it is left out.
            needed = required == "always" or (required == "tool_calls" and message.tool_calls)
            text = "" if needed else None
        if profile.replay_field == "reasoning_content":
            message.reasoning_content = text
        elif profile.replay_field == "reasoning":
            message.reasoning = text
        details = message.reasoning_details
        if profile.signatures and message.tool_calls:
            _sign_calls(message, details or [])
        if not profile.replay_details:
            message.reasoning_details = None
        elif details is None and text and profile.details_from_text is not None:
            message.reasoning_details = profile.details_from_text(text)


def _sign_calls(message: ChatMessage, details: list[dict[str, Any]]) -> None:
    """Gemini: each call back with the signature it was made with. The first call of a turn
    must be signed; one Gemini never signed (history from another model) gets Google's
    documented stand-in (ai.google.dev/gemini-api/docs/thought-signatures, FAQ)."""
    signed = {
        detail.get("call_id"): detail.get("thought_signature")
        for detail in details
        if is_signature(detail)
    }
    for position, call in enumerate(message.tool_calls or ()):
        signature = signed.get(call.id)
        if isinstance(signature, str):
            call.extra_content = signature_extra(signature)
        elif position == 0 and not call.extra_content:
            call.extra_content = signature_extra(UNSIGNED_CALL)


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
    # Every profile's models think unless effort "none" switches thinking off.
    thinking = effort != "none"
    choice = body.get("tool_choice")
    if thinking and not profile.tool_choice_with_thinking and choice not in (None, "auto", "none"):
        log.debug("%s: tool_choice %r sent as auto while thinking", profile.name, choice)
        body["tool_choice"] = "auto"
    if not profile.extended_fields:
        for name in EXTENDED_FIELDS:
            body.pop(name, None)
    for name in profile.refused_fields:
        body.pop(name, None)
    temperature = body.get("temperature")
    if profile.temperature_range is not None and temperature is not None:
        low, high = profile.temperature_range
        body["temperature"] = min(max(temperature, low), high)
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
