"""The rest of the Responses surface: request fields honoured or refused by name,
allowed_tools, item references, truncation."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from bridge.truncation import MARGIN, kept_share, truncate
from bridge.wire.chat import ChatFunctionCall, ChatMessage, ChatToolCall
from tests.conftest import MODEL
from tests.fake_upstream import OVERFLOW, FakeUpstream, thinking_text_reply, tool_call_reply
from tests.processes import output_of

# The store's behaviour is the same on SQLite and PostgreSQL (tests/conftest.py).
STORE_BACKENDS = ["sqlite", "postgres"]


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
    from tests.conftest import JS, bridge_config, node
    from tests.processes import REPO

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
    out, err = await output_of(process, 60)
    result = json.loads(out.decode().splitlines()[-1])
    assert process.returncode == 0 and result["ok"], (result, err.decode()[-2000:])
    assert result["text"] == "It is cold in Oslo."
    kinds = [item.get("type") for item in received[-1]["input"]]
    assert "item_reference" in kinds  # the SDK's default with store on
    assistant = fake_upstream.requests[-1]["messages"][1]
    assert assistant["reasoning_content"] == "Look it up."
    assert assistant["tool_calls"][0]["id"] == "call_w"


# Truncation: a provider that refuses the input's length (OVERFLOW).


def long_history(turns: int) -> list[dict[str, Any]]:
    """`turns` exchanges, each a user message, a tool call with its output and an answer."""
    items: list[dict[str, Any]] = []
    for n in range(turns):
        items += [
            {"role": "user", "content": f"question {n} " + "x" * 200},
            {
                "type": "function_call",
                "call_id": f"call_{n}",
                "name": "read_file",
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": f"call_{n}", "output": "y" * 200},
            {"role": "assistant", "content": f"answer {n}"},
        ]
    items.append({"role": "user", "content": "the last question"})
    return items


async def test_truncation_auto_drops_the_oldest_turns_and_retries_once(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    # The history's tool calls carry no reasoning (a non-thinking model made them).
    fake_upstream.require_reasoning = False
    fake_upstream.script(OVERFLOW, thinking_text_reply([], ["short enough"]))
    status, body = await post(
        bridge,
        instructions="You are terse.",
        input=[{"role": "developer", "content": "Follow the house rules."}, *long_history(8)],
        truncation="auto",
    )
    assert status == 200, body
    assert body["truncation"] == "auto"
    assert body["output"][0]["content"][0]["text"] == "short enough"
    first, second = fake_upstream.requests
    assert len(second["messages"]) < len(first["messages"])
    assert second["messages"][0] == {"role": "system", "content": "You are terse."}
    assert second["messages"][1]["content"] == "Follow the house rules."
    assert second["messages"][-1]["content"] == "the last question"
    assert second["messages"] == [m for m in first["messages"] if m in second["messages"]], (
        "only whole messages go, the order kept"
    )
    # The oldest went first, and no tool message lost its call.
    assert "question 0" not in str(second["messages"])
    called = set()
    for message in second["messages"]:
        for call in message.get("tool_calls") or ():
            called.add(call["id"])
        if message["role"] == "tool":
            assert message["tool_call_id"] in called
    # The provider said 1000 of 4000 tokens: about a quarter of the history stays.
    assert "question 7" in str(second["messages"])
    assert "question 3" not in str(second["messages"])


async def test_without_truncation_auto_the_overflow_is_the_answer(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.require_reasoning = False
    fake_upstream.script(OVERFLOW, thinking_text_reply([], ["never sent"]))
    status, body = await post(bridge, input=long_history(3))
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert len(fake_upstream.requests) == 1


async def test_truncation_auto_gives_up_after_one_retry(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.require_reasoning = False
    fake_upstream.script(OVERFLOW, OVERFLOW, thinking_text_reply([], ["never sent"]))
    status, body = await post(bridge, input=long_history(6), truncation="auto")
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert len(fake_upstream.requests) == 2


async def test_truncation_auto_with_nothing_to_drop_keeps_the_overflow(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(OVERFLOW)
    status, body = await post(bridge, input="one long question", truncation="auto")
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert len(fake_upstream.requests) == 1


def test_kept_share_reads_the_providers_figures() -> None:
    assert kept_share(
        "This model's maximum context length is 65536 tokens. However, you requested "
        "131,072 tokens (131000 in the messages, 72 in the completion)."
    ) == pytest.approx(65536 / 131072 * MARGIN)
    assert kept_share("input too long") is None
    assert kept_share("maximum context length is 8192 tokens") is None


def test_truncate_keeps_calls_with_their_outputs() -> None:
    messages = [
        ChatMessage(role="system", content="s"),
        ChatMessage(role="user", content="u0" * 100),
        ChatMessage(
            role="assistant",
            content=None,
            tool_calls=[ChatToolCall(id="c1", function=ChatFunctionCall(name="f", arguments=""))],
        ),
        ChatMessage(role="tool", content="o" * 400, tool_call_id="c1"),
        ChatMessage(role="user", content="u1"),
    ]
    kept = truncate(messages, 0.1)
    assert kept is not None
    assert [m.role for m in kept] == ["system", "user"]
    assert kept[-1].content == "u1"
    assert truncate(messages[:1] + messages[-1:], 0.1) is None


# ---- the same through the openai SDK ----------------------------------------------------------


async def test_the_openai_sdk_sends_allowed_tools_and_truncation(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.require_reasoning = False
    fake_upstream.script(OVERFLOW, thinking_text_reply([], ["fits now"]))
    response = await sdk.responses.create(
        model=MODEL,
        input=long_history(6),  # type: ignore[arg-type]
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "list_dir"}],
        },
        truncation="auto",
    )
    assert response.truncation == "auto"
    assert response.output_text == "fits now"
    assert response.tool_choice.type == "allowed_tools"  # type: ignore[union-attr]
    first, second = fake_upstream.requests
    for sent in (first, second):
        assert [tool["function"]["name"] for tool in sent["tools"]] == ["list_dir"]
        assert sent["tool_choice"] == "required"
    assert len(second["messages"]) < len(first["messages"])
    assert second["messages"][-1]["content"] == "the last question"
