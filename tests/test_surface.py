"""The rest of the Responses surface: request fields honoured or refused by name,
allowed_tools, item references, truncation."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MODEL
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply


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


# ---- item references -------------------------------------------------------------------------


async def test_item_references_are_resolved_from_the_store(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        tool_call_reply("Check Oslo.", [("call_o", "get_weather", ['{"city":"Oslo"}'])]),
        thinking_text_reply(["Answer."], ["Cold."]),
    )
    status, first = await post(
        bridge,
        input=[{"type": "message", "role": "user", "content": "Oslo?", "id": "msg_u1"}],
        tools=TOOLS[:1],
    )
    assert status == 200, first
    ids = [item["id"] for item in first["output"]]
    references = [{"type": "item_reference", "id": item_id} for item_id in ["msg_u1", *ids]]
    status, second = await post(
        bridge,
        input=[*references, {"type": "function_call_output", "call_id": "call_o", "output": "-3"}],
        tools=TOOLS[:1],
    )
    assert status == 200, second
    sent = fake_upstream.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[0]["content"] == "Oslo?"
    assert sent[1]["reasoning_content"] == "Check Oslo."  # from the referenced reasoning item
    assert sent[1]["tool_calls"][0]["id"] == "call_o"
    # What is stored is what the references stood for.
    items = await (await bridge.get(f"/v1/responses/{second['id']}/input_items?order=asc")).json()
    assert [item["type"] for item in items["data"]] == [
        "message",
        "reasoning",
        "function_call",
        "function_call_output",
    ]


async def test_an_unknown_item_reference_is_refused_by_name(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    status, body = await post(
        bridge,
        input=[
            {"type": "message", "role": "user", "content": "x"},
            {"type": "item_reference", "id": "rs_nope"},
        ],
    )
    assert status == 400
    assert body["error"]["param"] == "input[1].id"
    assert "rs_nope" in body["error"]["message"]
    assert fake_upstream.requests == []


async def test_another_clients_items_cannot_be_referenced(
    fake_upstream: FakeUpstream, aiohttp_client: Any
) -> None:
    from bridge.app import create_app
    from tests.conftest import bridge_config

    client = await aiohttp_client(
        create_app(bridge_config(fake_upstream.url), client_keys=("key-a", "key-b"))
    )
    fake_upstream.script(thinking_text_reply(["private"], ["A's answer"]))
    response = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": "x"},
        headers={"Authorization": "Bearer key-a"},
    )
    reasoning_id = (await response.json())["output"][0]["id"]
    refused = await client.post(
        "/v1/responses",
        json={"model": MODEL, "input": [{"type": "item_reference", "id": reasoning_id}]},
        headers={"Authorization": "Bearer key-b"},
    )
    assert refused.status == 400
    assert len(fake_upstream.requests) == 1


async def test_the_ai_sdk_tool_loop_sends_references_the_bridge_resolves(
    fake_upstream: FakeUpstream, aiohttp_server: Any
) -> None:
    import asyncio
    import json

    from aiohttp import web

    from bridge.app import create_app
    from tests.conftest import bridge_config
    from tests.test_clients import JS, REPO, node

    received: list[Any] = []

    @web.middleware
    async def keep_bodies(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "POST":
            received.append(json.loads(await request.read()))
        return await handler(request)

    app = create_app(bridge_config(fake_upstream.url))
    app.middlewares.insert(0, keep_bodies)
    server = await aiohttp_server(app)
    fake_upstream.script(
        tool_call_reply("Look it up.", [("call_w", "get_weather", ['{"city":"Oslo"}'])]),
        thinking_text_reply(["Done."], ["It is cold in Oslo."]),
    )
    process = await asyncio.create_subprocess_exec(
        node(),
        str(JS / "ai_sdk_tool_loop.mjs"),
        str(server.make_url("/v1")),
        MODEL,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    result = json.loads(out.decode().splitlines()[-1])
    assert process.returncode == 0 and result["ok"], (result, err.decode()[-2000:])
    assert result["text"] == "It is cold in Oslo."
    kinds = [item.get("type") for item in received[-1]["input"]]
    assert "item_reference" in kinds  # the SDK's default with store on
    assistant = fake_upstream.requests[-1]["messages"][1]
    assert assistant["reasoning_content"] == "Look it up."
    assert assistant["tool_calls"][0]["id"] == "call_w"
