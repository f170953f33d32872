"""The rest of the Responses surface: request fields honoured or refused by name,
allowed_tools, item references, truncation."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MODEL
from tests.fake_upstream import FakeUpstream, thinking_text_reply


async def post(bridge: TestClient, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await bridge.post("/v1/responses", json={"model": MODEL, "input": "x", **body})
    return response.status, await response.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", {"id": "pmpt_123", "version": "2"}),
        ("top_logprobs", 5),
        ("max_tool_calls", 3),
        ("service_tier", "priority"),
        ("truncation", "sometimes"),
    ],
)
async def test_fields_the_bridge_cannot_honour_are_refused_by_name(
    bridge: TestClient, fake_upstream: FakeUpstream, field: str, value: Any
) -> None:
    status, body = await post(bridge, **{field: value})
    assert status == 400
    assert body["error"]["param"] == field
    assert field in body["error"]["message"]
    assert fake_upstream.requests == []


async def test_fields_the_bridge_honours_are_echoed(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply([], ["ok"]))
    status, body = await post(
        bridge,
        service_tier="auto",
        top_logprobs=0,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        temperature=0.3,
        safety_identifier="hash-1",
        prompt_cache_key="key-1",
    )
    assert status == 200, body
    assert body["service_tier"] == "default"
    assert (body["presence_penalty"], body["frequency_penalty"], body["temperature"]) == (
        0.5,
        0.25,
        0.3,
    )
    assert body["top_p"] == 1.0  # not set: the Chat Completions default
    assert body["safety_identifier"] == "hash-1" and body["prompt_cache_key"] == "key-1"
    sent = fake_upstream.requests[0]
    assert (sent["presence_penalty"], sent["frequency_penalty"]) == (0.5, 0.25)
    assert sent["user"] == "hash-1"


TOOLS = [
    {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}
    for name in ("read_file", "delete_everything", "list_dir")
]


@pytest.mark.parametrize("mode", ["auto", "required"])
async def test_allowed_tools_reach_the_upstream_and_no_others(
    bridge: TestClient, fake_upstream: FakeUpstream, mode: str
) -> None:
    fake_upstream.script(thinking_text_reply([], ["ok"]))
    choice = {
        "type": "allowed_tools",
        "mode": mode,
        "tools": [
            {"type": "function", "name": "read_file"},
            {"type": "function", "name": "list_dir"},
        ],
    }
    status, body = await post(bridge, tools=TOOLS, tool_choice=choice)
    assert status == 200, body
    sent = fake_upstream.requests[0]
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["read_file", "list_dir"]
    assert sent["tool_choice"] == mode
    assert body["tool_choice"] == choice  # echoed as asked
    assert len(body["tools"]) == 3


async def test_an_allowed_tool_that_is_not_defined_is_refused(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    choice = {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [{"type": "function", "name": "nope"}],
    }
    status, body = await post(bridge, tools=TOOLS, tool_choice=choice)
    assert status == 400
    assert body["error"]["param"] == "tool_choice.tools[0]"
    assert "nope" in body["error"]["message"]
    assert fake_upstream.requests == []
