"""Provider profiles: the request body each provider gets, effort by effort."""

from __future__ import annotations

import json
from typing import Any, get_args

import msgspec
import pytest

from bridge.config import PROFILE
from bridge.providers import PROFILES, shape_body
from bridge.translate.request import translate_request
from bridge.wire.responses import ResponsesRequest

TOOLS = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
HISTORY = [
    {"role": "user", "content": "go"},
    {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "plan"}]},
    {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": "done"},
]
# Fields outside the generic translation, by profile and by reasoning.effort.
EXPECTED_SWITCH: dict[str, dict[str | None, dict[str, Any]]] = {
    # The built-in demo model (bridge.demo) reads no switch; it is sent as to OpenAI.
    "demo": {
        None: {},
        "none": {"reasoning_effort": "none"},
        "medium": {"reasoning_effort": "medium"},
        "high": {"reasoning_effort": "high"},
    },
    "openai": {
        None: {},
        "none": {"reasoning_effort": "none"},
        "medium": {"reasoning_effort": "medium"},
        "high": {"reasoning_effort": "high"},
    },
    "deepseek": {
        None: {},
        "none": {"thinking": {"type": "disabled"}},
        "medium": {"thinking": {"type": "enabled"}},
        "high": {"thinking": {"type": "enabled"}, "reasoning_effort": "high"},
    },
    "kimi": {None: {}, "none": {"thinking": {"type": "disabled"}}, "medium": {}, "high": {}},
    "glm": {
        None: {"clear_thinking": False},
        "none": {"thinking": {"type": "disabled"}},
        "medium": {"thinking": {"type": "enabled"}, "clear_thinking": False},
        "high": {"thinking": {"type": "enabled"}, "clear_thinking": False},
    },
    "qwen": {
        None: {},
        "none": {"enable_thinking": False},
        "medium": {"enable_thinking": True},
        "high": {"enable_thinking": True},
    },
    "openrouter": {
        None: {},
        "none": {"reasoning": {"enabled": False}},
        "medium": {"reasoning": {"effort": "medium"}},
        "high": {"reasoning": {"effort": "high"}},
    },
    "vllm": {
        None: {},
        "none": {"chat_template_kwargs": {"enable_thinking": False}},
        "medium": {"chat_template_kwargs": {"enable_thinking": True}},
        "high": {"chat_template_kwargs": {"enable_thinking": True}},
    },
    "ollama": {
        None: {},
        "none": {"reasoning_effort": "none"},
        "medium": {"reasoning_effort": "medium"},
        "high": {"reasoning_effort": "high"},
    },
    "llamacpp": {
        None: {},
        "none": {"chat_template_kwargs": {"enable_thinking": False}},
        "medium": {"chat_template_kwargs": {"enable_thinking": True}},
        "high": {"chat_template_kwargs": {"enable_thinking": True}},
    },
    # Gemini 3 cannot switch thinking off; its summaries come only when asked for.
    "gemini": {
        effort: {
            "extra_body": {
                "google": {
                    "thinking_config": {"include_thoughts": True}
                    | ({"thinking_level": level} if level else {})
                }
            }
        }
        for effort, level in ((None, None), ("none", "low"), ("medium", "medium"), ("high", "high"))
    },
    "minimax": {effort: {"reasoning_split": True} for effort in (None, "none", "medium", "high")},
}
# Where each profile replays the reasoning of an earlier tool-call turn.
REPLAY_FIELD = {
    "openai": "reasoning_content",
    "deepseek": "reasoning_content",
    "kimi": "reasoning_content",
    "glm": "reasoning_content",
    "qwen": "reasoning_content",
    "openrouter": None,
    "vllm": "reasoning",
    "ollama": "reasoning",
    "llamacpp": "reasoning_content",
    "gemini": None,
    "minimax": None,
    "demo": "reasoning_content",
}
GENERIC_KEYS = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "max_tokens",
}


def body_for(profile: str, effort: str | None, *, tools: bool, **extra: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"model": "m", "input": HISTORY, "max_output_tokens": 500}
    if tools:
        request |= {"tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": True}
    if effort is not None:
        request["reasoning"] = {"effort": effort}
    request |= extra.pop("request", {})
    req = msgspec.json.decode(json.dumps(request), type=ResponsesRequest)
    rules = PROFILES[profile]
    plan = translate_request(req, "up", needs=rules.needs, structured=rules.structured_output)
    shape_body(plan.body, rules, effort, **extra)
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(plan.body))
    return decoded


def test_every_configurable_profile_exists() -> None:
    assert set(get_args(PROFILE)) == set(PROFILES) == set(EXPECTED_SWITCH)


@pytest.mark.parametrize("tools", [False, True], ids=["no-tools", "tools"])
@pytest.mark.parametrize("effort", [None, "none", "medium", "high"])
@pytest.mark.parametrize("profile", sorted(EXPECTED_SWITCH))
def test_request_body(profile: str, effort: str | None, tools: bool) -> None:
    body = body_for(profile, effort, tools=tools)
    switch = {k: v for k, v in body.items() if k not in GENERIC_KEYS}
    assert switch == EXPECTED_SWITCH[profile][effort]
    assert body["model"] == "up"
    assert body["max_tokens"] == 500
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    if tools:
        assert body["tools"][0]["function"]["name"] == "f"
        assert body["tool_choice"] == "auto"
        if profile in ("ollama", "llamacpp", "gemini"):
            assert "parallel_tool_calls" not in body
        else:
            assert body["parallel_tool_calls"] is True
    else:
        assert "tools" not in body and "tool_choice" not in body
    assistant = body["messages"][1]
    assert assistant["tool_calls"][0]["id"] == "c1"
    field = REPLAY_FIELD[profile]
    reasoning_fields = {k for k in ("reasoning_content", "reasoning") if k in assistant}
    assert reasoning_fields == ({field} if field else set())
    if field:
        assert assistant[field] == "plan"
    if profile == "minimax":
        # Reasoning that came as text goes back in MiniMax's reasoning_details form.
        assert assistant["reasoning_details"] == [
            {
                "type": "reasoning.text",
                "id": "reasoning-text-1",
                "format": "MiniMax-response-v1",
                "index": 0,
                "text": "plan",
            }
        ]
    if profile == "gemini":
        # A call Gemini never signed gets Google's stand-in.
        assert assistant["tool_calls"][0]["extra_content"] == {
            "google": {"thought_signature": "skip_thought_signature_validator"}
        }


def test_deepseek_downgrades_json_schema_and_explicit_tool_choice() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = {
        "instructions": "Be brief.",
        "text": {"format": {"type": "json_schema", "name": "o", "schema": schema}},
        "tool_choice": {"type": "function", "name": "f"},
    }
    body = body_for("deepseek", "high", tools=True, request=request)
    assert body["response_format"] == {"type": "json_object"}
    # The schema reaches the model as an instruction after the request's own, which has
    # the word DeepSeek's JSON mode wants.
    system = body["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.\n\nAnswer with JSON only")
    assert "Schema name: o" in system["content"]
    assert json.dumps(schema, separators=(",", ":")) in system["content"]
    assert body["tool_choice"] == "auto"
    # Without thinking an explicit choice is kept.
    body = body_for("deepseek", "none", tools=True, request=request)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    # Other providers keep both, and their instructions as they are.
    body = body_for("openai", "high", tools=True, request=request)
    assert body["response_format"]["type"] == "json_schema"
    assert body["messages"][0]["content"] == "Be brief."
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    # MiniMax has no response_format at all: the instruction alone.
    body = body_for("minimax", "high", tools=True, request=request)
    assert "response_format" not in body
    assert "Schema name: o" in body["messages"][0]["content"]


def test_extra_body_merges_and_drop_params_removes() -> None:
    body = body_for(
        "vllm",
        "high",
        tools=True,
        extra_body={"chat_template_kwargs": {"thinking_budget": 512}, "top_k": 20},
        drop_params=["stream_options", "parallel_tool_calls"],
    )
    assert body["chat_template_kwargs"] == {"enable_thinking": True, "thinking_budget": 512}
    assert body["top_k"] == 20
    assert "stream_options" not in body and "parallel_tool_calls" not in body


def test_extra_body_replaces_non_tables() -> None:
    body = body_for("deepseek", "high", tools=False, extra_body={"reasoning_effort": "max"})
    assert body["reasoning_effort"] == "max"


def test_max_tokens_param_can_be_renamed() -> None:
    body = body_for("openai", None, tools=False, max_tokens_param="max_completion_tokens")
    assert body["max_completion_tokens"] == 500
    assert "max_tokens" not in body


@pytest.mark.parametrize("profile", sorted(EXPECTED_SWITCH))
def test_request_fields_go_to_the_providers_that_take_them(profile: str) -> None:
    fields = {
        "presence_penalty": 0.5,
        "frequency_penalty": -0.25,
        "prompt_cache_key": "thread-7",
        "safety_identifier": "user-hash",
        "text": {"verbosity": "low"},
    }
    body = body_for(profile, None, tools=False, request=fields)
    assert body["presence_penalty"] == 0.5
    # An unknown field on Gemini's endpoint is a 400.
    assert body.get("frequency_penalty") == (None if profile == "gemini" else -0.25)
    assert body["user"] == "user-hash"  # every provider takes `user`
    extended = {k: body.get(k) for k in ("prompt_cache_key", "safety_identifier", "verbosity")}
    if profile == "openai":
        assert extended == {
            "prompt_cache_key": "thread-7",
            "safety_identifier": "user-hash",
            "verbosity": "low",
        }
    else:
        assert extended == dict.fromkeys(extended)  # none of them: unknown there
