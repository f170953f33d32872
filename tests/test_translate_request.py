"""Responses request -> Chat Completions body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bridge.translate.errors import RequestError
from bridge.translate.reasoning import decode_reasoning, encode_reasoning, turn_fingerprint
from bridge.translate.request import translate_request
from bridge.translate.tools import upstream_tool_name
from bridge.wire.responses import ResponsesRequest

FIXTURES = Path(__file__).parent / "fixtures" / "codex-0.169.0"


def parse(request: dict[str, Any]) -> ResponsesRequest:
    """A request as the handler gets it: decoded from JSON bytes."""
    return msgspec.json.decode(json.dumps(request), type=ResponsesRequest)


def body_for(request: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    req = parse(request)
    plan = translate_request(req, "up-model", **kwargs)
    # Through JSON, exactly as it goes upstream.
    decoded: dict[str, Any] = json.loads(msgspec.json.encode(plan.body))
    return decoded


def test_string_input_and_instructions() -> None:
    body = body_for({"model": "m", "input": "hello", "instructions": "be brief"})
    assert body["model"] == "up-model"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_message_roles_and_parts() -> None:
    body = body_for(
        {
            "model": "m",
            "input": [
                {"type": "message", "role": "developer", "content": "dev rules"},
                {"role": "system", "content": [{"type": "input_text", "text": "sys"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [
                        {"type": "output_text", "text": "I "},
                        {"type": "output_text", "text": "see"},
                    ],
                },
            ],
        }
    )
    assert body["messages"] == [
        {"role": "system", "content": "dev rules"},
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {"role": "assistant", "content": "I see"},
    ]


def test_developer_role_kept_when_provider_takes_it() -> None:
    body = body_for(
        {"model": "m", "input": [{"role": "developer", "content": "x"}]}, developer_role=True
    )
    assert body["messages"] == [{"role": "developer", "content": "x"}]


def test_text_parts_of_one_message_are_joined() -> None:
    body = body_for(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "a"},
                        {"type": "input_text", "text": "b"},
                    ],
                }
            ],
        }
    )
    assert body["messages"] == [{"role": "user", "content": "a\n\nb"}]


def test_function_calls_merge_and_outputs_follow_in_order() -> None:
    body = body_for(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [],
                    "content": [{"type": "reasoning_text", "text": "think"}],
                },
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": '{"x":1}'},
                {"type": "function_call", "call_id": "c2", "name": "b", "arguments": ""},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "two"}],
                },
                {"role": "assistant", "content": "done"},
            ],
        }
    )
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "think",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
                # A zero-argument call is replayed as "{}", never "".
                {"id": "c2", "type": "function", "function": {"name": "b", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "content": "one", "tool_call_id": "c1"},
        {"role": "tool", "content": "two", "tool_call_id": "c2"},
        {"role": "assistant", "content": "done"},
    ]


def test_assistant_text_then_calls_is_one_message() -> None:
    body = body_for(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "reasoning", "summary": [], "encrypted_content": encode_reasoning("r")},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Let me."}]},
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
        }
    )
    assistant = body["messages"][1]
    assert assistant["content"] == "Let me."
    assert assistant["reasoning_content"] == "r"
    assert [c["id"] for c in assistant["tool_calls"]] == ["c1"]


def test_reasoning_from_own_encrypted_content_when_content_dropped() -> None:
    body = body_for(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "reasoning", "summary": [], "encrypted_content": encode_reasoning("é∑")},
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
        }
    )
    assert body["messages"][1]["reasoning_content"] == "é∑"


def test_foreign_encrypted_content_is_not_reasoning() -> None:
    assert decode_reasoning("ENC-1") is None
    assert decode_reasoning("rb1.!!!not-base64") is None
    req = parse(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "go"},
                {"type": "reasoning", "summary": [], "encrypted_content": "gAAAA-openai"},
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
        }
    )
    plan = translate_request(req, "m")
    assistant = plan.body["messages"][1]
    assert assistant.reasoning_content is None  # never a placeholder
    (gap,) = plan.reasoning_gaps
    assert gap.message is assistant
    assert gap.call_ids == ["c1"]
    assert gap.fingerprint == turn_fingerprint("", ["c1"])


def test_custom_tool_round_trip_shapes() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
    body = body_for(
        {
            "model": "m",
            "tools": [
                {
                    "type": "custom",
                    "name": "apply_patch",
                    "description": "Edit files.",
                    "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"},
                }
            ],
            "input": [
                {"role": "user", "content": "go"},
                {"type": "reasoning", "summary": [], "content": [{"text": "r"}]},
                {
                    "type": "custom_tool_call",
                    "call_id": "c1",
                    "name": "apply_patch",
                    "input": patch,
                },
                {"type": "custom_tool_call_output", "call_id": "c1", "output": "Success"},
            ],
        }
    )
    (tool,) = body["tools"]
    assert tool["function"]["name"] == "apply_patch"
    assert tool["function"]["parameters"]["required"] == ["input"]
    assert "start: x" in tool["function"]["description"]
    call = body["messages"][1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"input": patch}
    assert body["messages"][2] == {"role": "tool", "content": "Success", "tool_call_id": "c1"}


def test_namespace_tools_are_flattened_reversibly() -> None:
    req = parse(
        {
            "model": "m",
            "input": "x",
            "tools": [
                {
                    "type": "namespace",
                    "name": "multi_agent_v1",
                    "tools": [{"type": "function", "name": "close_agent", "parameters": {}}],
                },
                {"type": "web_search"},
                {"type": "function", "name": "a.b/c", "parameters": {"type": "object"}},
            ],
            "tool_choice": {"type": "function", "name": "a.b/c"},
        }
    )
    plan = translate_request(req, "m")
    names = [t["function"]["name"] for t in plan.body["tools"]]
    assert names[0] == "multi_agent_v1__close_agent"
    assert len(names) == 2  # web_search dropped
    assert names[1] == upstream_tool_name("a.b/c")
    assert names[1].startswith("a_b_c_") and len(names[1]) <= 64
    assert plan.body["tool_choice"] == {"type": "function", "function": {"name": names[1]}}
    ref = plan.tool_map.resolve("multi_agent_v1__close_agent")
    assert (ref.name, ref.namespace, ref.kind) == ("close_agent", "multi_agent_v1", "function")
    assert plan.tool_map.resolve(names[1]).name == "a.b/c"


def test_long_names_fit_and_stay_stable() -> None:
    name = "x" * 80
    mapped = upstream_tool_name(name, "ns")
    assert len(mapped) <= 64
    assert mapped == upstream_tool_name(name, "ns")
    assert mapped != upstream_tool_name("x" * 81, "ns")


def test_sampling_and_format_parameters() -> None:
    body = body_for(
        {
            "model": "m",
            "input": "x",
            "temperature": 0.5,
            "top_p": 0.9,
            "max_output_tokens": 100,
            "reasoning": {"effort": "high", "summary": "auto"},
            "text": {
                "format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}},
                "verbosity": "low",
            },
            "store": False,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "k",
            "metadata": {"a": "b"},
            "user": "u1",
        }
    )
    assert body["temperature"] == 0.5
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 100
    assert "reasoning_effort" not in body  # the provider profile maps the effort
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}},
    }
    assert body["user"] == "u1"
    # Kept in the generic body; the provider's profile decides (tests/test_providers.py).
    assert body["prompt_cache_key"] == "k" and body["verbosity"] == "low"
    for absent in ("store", "include", "metadata"):
        assert absent not in body


def test_json_object_format_and_no_tool_choice_without_tools() -> None:
    body = body_for(
        {
            "model": "m",
            "input": "x",
            "text": {"format": {"type": "json_object"}},
            "tools": [{"type": "web_search"}],
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        }
    )
    assert body["response_format"] == {"type": "json_object"}
    assert "tools" not in body and "tool_choice" not in body
    assert "parallel_tool_calls" not in body


def test_tool_output_images_follow_the_tool_messages() -> None:
    body = body_for(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "look"},
                {"type": "reasoning", "summary": [], "content": [{"text": "r"}]},
                {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "view_image", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c1",
                    "output": [{"type": "input_image", "image_url": "data:image/png;base64,AA"}],
                },
                {"type": "function_call_output", "call_id": "c2", "output": "none"},
            ],
        }
    )
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assert body["messages"][4]["content"][1]["image_url"]["url"] == "data:image/png;base64,AA"


def test_unknown_items_are_skipped() -> None:
    body = body_for(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "x"},
                {"type": "web_search_call", "id": "ws", "status": "completed"},
                {"type": "some_future_item", "foo": 1},
            ],
        }
    )
    assert body["messages"] == [{"role": "user", "content": "x"}]


def test_a_tool_output_that_answers_no_call_fails_naming_its_call_id() -> None:
    """The Open Responses specification fails the turn (its suite's failed-continuation
    test sends one); dropping it would answer a question nobody asked."""
    request = msgspec.convert(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "x"},
                {"type": "function_call_output", "call_id": "nobody", "output": "x"},
            ],
        },
        ResponsesRequest,
    )
    with pytest.raises(RequestError) as raised:
        translate_request(request, "m")
    assert "'nobody'" in raised.value.message
    assert raised.value.param == "input[1].call_id"


def test_an_orphan_tool_output_kept_in_history_is_left_out() -> None:
    """History the bridge keeps (a chain stored by an older release) never fails a turn."""
    request = msgspec.convert({"model": "m", "input": "next"}, ResponsesRequest)
    history = [
        {"role": "user", "content": "x"},
        {"type": "function_call_output", "call_id": "nobody", "output": "x"},
    ]
    plan = translate_request(request, "m", history=history)
    assert [m.role for m in plan.messages] == ["user", "user"]


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"model": "m", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"model": "m", "input": [{"type": "function_call", "name": "a"}]}, "input[0]"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image"}]}]},
            "input[0].content[0].image_url",
        ),
        ({"model": "m", "input": [{"content": "no role or type"}]}, "input[0].type"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": "x", "tools": [{"type": "function"}]}, "tools[0]"),
    ],
)
def test_bad_input_names_the_field(request_body: dict[str, Any], param: str) -> None:
    req = parse(request_body)
    with pytest.raises(RequestError) as caught:
        translate_request(req, "m")
    assert caught.value.param is not None
    assert caught.value.param.startswith(param)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.request.json")), ids=lambda p: p.name)
def test_real_codex_requests_translate(path: Path) -> None:
    captured = json.loads(path.read_text())["body"]
    req = parse(captured)
    plan = translate_request(req, "up")
    messages = plan.body["messages"]
    assert messages[0].role == "system"  # Codex's developer prompt
    assert messages[-1].role in ("user", "tool")
    names = {t["function"]["name"] for t in plan.body["tools"]}
    assert "exec_command" in names
    assert not any(t["type"] != "function" for t in plan.body["tools"])
    if any(t.get("type") == "custom" for t in captured["tools"]):
        assert "apply_patch" in names
        assert plan.tool_map.resolve("apply_patch").kind == "custom"
    for tool in captured["tools"]:
        if tool.get("type") == "namespace":
            for inner in tool["tools"]:
                flat = upstream_tool_name(inner["name"], tool["name"])
                assert flat in names
                assert plan.tool_map.resolve(flat).namespace == tool["name"]
    replayed_calls = [i for i in captured["input"] if i.get("type", "").endswith("call")]
    if replayed_calls:
        assistant = next(m for m in messages if m.role == "assistant")
        # The fixture's reasoning item carries "raw thinking 1" in its content.
        assert assistant.reasoning_content == "raw thinking 1"
        assert assistant.tool_calls is not None
        assert assistant.tool_calls[0].id == replayed_calls[0]["call_id"]
        assert messages[-1].role == "tool"
