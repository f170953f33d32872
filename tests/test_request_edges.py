"""Requests at the edges of what clients send: tool outputs that answer no call, half an
emoji from a JavaScript client, tool names that flatten to the same upstream name, and
conversation items that repeat an id."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import MODEL, assert_ends
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


async def test_a_tool_output_that_answers_no_call_is_refused_naming_its_call_id(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    answer = await bridge.post(
        "/v1/responses",
        json={
            "model": MODEL,
            "input": [
                user("Weather?"),
                {"type": "function_call_output", "call_id": "call_nobody", "output": "Foggy"},
            ],
        },
    )
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert "'call_nobody'" in error["message"]
    assert error["param"] == "input[1].call_id"
    assert fake_upstream.requests == []


# What JavaScript's JSON.stringify writes for "Done 😀" cut after its fifth UTF-16 unit:
# the high half of the emoji's surrogate pair, alone.
HALF_EMOJI_OUTPUT = b'"Done \\ud83d"'


def body_with_half_emoji(history: list[dict[str, Any]], tail: list[dict[str, Any]]) -> bytes:
    """A Codex-like replay whose tool output ends in half an emoji, as JS sends it."""
    marker = "@@OUTPUT@@"
    items = [
        *history,
        {"type": "function_call", "call_id": "call_e", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_e", "output": marker},
        *tail,
    ]
    text = json.dumps({"model": MODEL, "input": items, "tools": [WEATHER], "store": False})
    return text.replace(json.dumps(marker), HALF_EMOJI_OUTPUT.decode()).encode()


async def test_half_an_emoji_is_replaced_and_every_later_replay_still_goes(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.require_reasoning = False
    fake_upstream.script(thinking_text_reply([], ["Sunny."]), thinking_text_reply([], ["Yes."]))
    first = await bridge.post(
        "/v1/responses",
        data=body_with_half_emoji([user("Weather?")], []),
        headers={"Content-Type": "application/json"},
    )
    assert first.status == 200, await first.text()
    tool_message = fake_upstream.requests[0]["messages"][-1]
    assert tool_message == {"role": "tool", "content": "Done \ufffd", "tool_call_id": "call_e"}
    # The next turn replays the same output again, as Codex does on every turn.
    again = await bridge.post(
        "/v1/responses",
        data=body_with_half_emoji(
            [user("Weather?")],
            [{"type": "message", "role": "assistant", "content": "Sunny."}, user("Sure?")],
        ),
        headers={"Content-Type": "application/json"},
    )
    assert again.status == 200, await again.text()


async def test_half_an_emoji_on_a_websocket_and_in_conversation_items(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.require_reasoning = False
    fake_upstream.script(thinking_text_reply([], ["Sunny."]))
    body = json.loads(body_with_half_emoji([user("Weather?")], []).replace(b"\\ud83d", b"X"))
    message = json.dumps({"type": "response.create", **body}).replace('X"', '\\ud83d"')
    async with bridge.ws_connect("/v1/responses") as ws:
        await ws.send_str(message)
        while (event := json.loads((await ws.receive(timeout=10)).data))["type"] not in (
            "response.completed",
            "response.failed",
            "error",
        ):
            pass
    assert_ends(event)
    assert fake_upstream.requests[0]["messages"][-1]["content"] == "Done \ufffd"
    created = await bridge.post(
        "/v1/conversations",
        data=b'{"items": [{"type": "message", "role": "user", "content": "cut \\ud83d"}]}',
        headers={"Content-Type": "application/json"},
    )
    assert created.status == 200, await created.text()
    conversation = (await created.json())["id"]
    items = await (await bridge.get(f"/v1/conversations/{conversation}/items")).json()
    assert items["data"][0]["content"][0]["text"] == "cut \ufffd"


async def test_tools_that_flatten_to_one_upstream_name_are_refused_naming_both(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """Namespace `ns` with `a__b` and a function `ns__a__b` are both `ns__a__b` upstream:
    the model could only ever call one of them."""
    tools = [
        {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "a__b"}]},
        {"type": "function", "name": "ns__a__b"},
    ]
    answer = await bridge.post("/v1/responses", json={"model": MODEL, "input": "x", "tools": tools})
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert error["param"] == "tools[1]"
    assert "'ns__a__b'" in error["message"] and "tools[0].tools[0]" in error["message"]
    assert "namespace 'ns'" in error["message"]
    assert fake_upstream.requests == []
    # Apart, each is called by its own name and comes back with its namespace.
    fake_upstream.script(tool_call_reply("Call it.", [("call_n", "ns__a__b", ["{}"])]))
    called = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": "x", "tools": tools[:1]}
    )
    (call,) = [item for item in (await called.json())["output"] if item["type"] == "function_call"]
    assert (call["name"], call["namespace"]) == ("a__b", "ns")


async def test_conversation_items_that_repeat_an_id_are_refused_naming_it(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    conversation = (await (await bridge.post("/v1/conversations", json={})).json())["id"]
    twice = [user("one") | {"id": "msg_same"}, user("two") | {"id": "msg_same"}]
    answer = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": twice, "conversation": conversation}
    )
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert "'msg_same'" in error["message"] and error["param"] == "input[1].id"
    added = await bridge.post(f"/v1/conversations/{conversation}/items", json={"items": twice})
    assert added.status == 400
    assert (await added.json())["error"]["param"] == "items[1].id"
    created = await bridge.post("/v1/conversations", json={"items": twice})
    assert created.status == 400
    items = await (await bridge.get(f"/v1/conversations/{conversation}/items")).json()
    assert items["data"] == []
    assert fake_upstream.requests == []
