"""POST /v1/responses/compact over a Chat Completions upstream: the window summarised by
the model, the newest user message and open tool-call turns kept, and the compaction item
expanded again when a new chain starts from it, reasoning of kept tool-call turns intact for
a strict thinking upstream."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.translate.compaction import SUMMARY_HEADING, SUMMARY_PROMPT, decode_compaction
from tests import spec_schema
from tests.conftest import MODEL, assert_ends
from tests.fake_upstream import FakeUpstream, Reply, thinking_text_reply, tool_call_reply

WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


async def compact(bridge: TestClient, **body: Any) -> dict[str, Any]:
    answer = await bridge.post("/v1/responses/compact", json={"model": MODEL, **body})
    assert answer.status == 200, await answer.text()
    compacted: dict[str, Any] = await answer.json()
    assert spec_schema.errors("CompactResource", compacted) == []
    return compacted


async def test_a_conversation_is_summarised_into_a_compaction_item(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply(["Sum up."], ["Launch is Tuesday; tell support."]))
    compacted = await compact(
        bridge,
        input=[
            user("We agreed to launch on Tuesday and notify support first."),
            {"type": "message", "role": "assistant", "content": "Understood."},
            user("What did we agree?"),
        ],
        prompt_cache_key="openresponses-compact-test",
    )
    assert compacted["object"] == "response.compaction"
    newest, item = compacted["output"]
    assert newest["role"] == "user" and text_of(newest) == "What did we agree?"
    assert newest["status"] == "completed" and newest["id"].startswith("msg_")
    assert item["type"] == "compaction" and item["id"].startswith("cmp_")
    carried = decode_compaction(item["encrypted_content"])
    assert carried is not None and carried.summary == "Launch is Tuesday; tell support."
    assert compacted["usage"]["input_tokens"] == 11
    (asked,) = fake_upstream.requests
    assert [m["role"] for m in asked["messages"]] == ["user", "assistant", "user", "user"]
    assert asked["messages"][-1]["content"] == SUMMARY_PROMPT
    assert asked["prompt_cache_key"] == "openresponses-compact-test"


async def test_a_new_chain_starts_from_the_compacted_window(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """The client passes the output back as its input, then its next message; over HTTP
    and on a WebSocket the summary stands where the compaction item does."""
    fake_upstream.script(thinking_text_reply([], ["The code word is slate."]))
    compacted = await compact(
        bridge,
        input=[
            user("Remember the code word: slate."),
            {"type": "message", "role": "assistant", "content": "OK."},
            user("Compress this conversation."),
        ],
    )
    fake_upstream.script(
        thinking_text_reply([], ["slate"]), thinking_text_reply([], ["slate again"])
    )
    again = [*compacted["output"], user("What is the code word?")]
    answer = await bridge.post("/v1/responses", json={"model": MODEL, "input": again})
    assert answer.status == 200, await answer.text()
    async with bridge.ws_connect("/v1/responses") as ws:
        create = {"type": "response.create", "model": MODEL, "store": False, "tools": []}
        await ws.send_str(json.dumps({**create, "input": again}))
        while (event := json.loads((await ws.receive(timeout=10)).data))["type"] not in (
            "response.completed",
            "response.failed",
            "error",
        ):
            pass
    assert_ends(event)
    for sent in fake_upstream.requests[1:]:
        assert [m["role"] for m in sent["messages"]] == ["user", "user", "user"]
        assert sent["messages"][0]["content"] == "Compress this conversation."
        summary = sent["messages"][1]["content"]
        assert summary == f"{SUMMARY_HEADING}\n\nThe code word is slate."
        assert sent["messages"][2]["content"] == "What is the code word?"


async def tool_chain(bridge: TestClient, fake_upstream: FakeUpstream) -> dict[str, Any]:
    """A stored chain whose last turn left a tool call open: [question, reasoning R1, call
    c1, its output, reasoning R2, call c2]."""
    fake_upstream.script(
        tool_call_reply("R1: Oslo first.", [("c1", "get_weather", ['{"city":"Oslo"}'])]),
        tool_call_reply("R2: now Paris.", [("c2", "get_weather", ['{"city":"Paris"}'])]),
    )
    first = await (
        await bridge.post(
            "/v1/responses",
            json={"model": MODEL, "input": "Weather in Oslo and Paris?", "tools": [WEATHER]},
        )
    ).json()
    second = await (
        await bridge.post(
            "/v1/responses",
            json={
                "model": MODEL,
                "previous_response_id": first["id"],
                "input": [{"type": "function_call_output", "call_id": "c1", "output": "Foggy"}],
                "tools": [WEATHER],
            },
        )
    ).json()
    assert second["status"] == "completed", second
    return second


async def test_an_open_tool_call_and_its_reasoning_survive_compaction(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """The strict thinking upstream takes the summary request (R1 restored for the
    summarised turn) and, after the client dropped every reasoning item, the new chain's
    kept turn (R2 restored from the compaction item)."""
    second = await tool_chain(bridge, fake_upstream)
    fake_upstream.script(thinking_text_reply([], ["Oslo was foggy; Paris asked."]))
    compacted = await compact(bridge, previous_response_id=second["id"], tools=[WEATHER])
    kinds = [(item["type"], item.get("call_id")) for item in compacted["output"]]
    assert kinds == [
        ("message", None),
        ("compaction", None),
        ("reasoning", None),
        ("function_call", "c2"),
    ]
    summarising = fake_upstream.requests[-1]
    assert summarising["tool_choice"] == "none"
    assert [m["role"] for m in summarising["messages"]] == ["user", "assistant", "tool", "user"]
    assert summarising["messages"][1]["reasoning_content"] == "R1: Oslo first."
    without_reasoning = [item for item in compacted["output"] if item["type"] != "reasoning"]
    fake_upstream.script(thinking_text_reply([], ["Paris is sunny, Oslo foggy."]))
    answer = await bridge.post(
        "/v1/responses",
        json={
            "model": MODEL,
            "tools": [WEATHER],
            "input": [
                *without_reasoning,
                {"type": "function_call_output", "call_id": "c2", "output": "Sunny"},
            ],
        },
    )
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["status"] == "completed"
    sent = fake_upstream.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "user", "assistant", "tool"]
    assert sent[2]["reasoning_content"] == "R2: now Paris."
    assert sent[2]["tool_calls"][0]["id"] == "c2"


async def test_a_compacted_window_compacts_again(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply([], ["First summary."]))
    first = await compact(bridge, input=[user("a"), {"role": "assistant", "content": "b"}])
    fake_upstream.script(thinking_text_reply([], ["Second summary."]))
    second = await compact(
        bridge,
        input=[*first["output"], {"role": "assistant", "content": "c"}, user("d")],
    )
    summarising = fake_upstream.requests[-1]["messages"]
    assert summarising[1]["content"] == f"{SUMMARY_HEADING}\n\nFirst summary."
    (item,) = [i for i in second["output"] if i["type"] == "compaction"]
    carried = decode_compaction(item["encrypted_content"])
    assert carried is not None and carried.summary == "Second summary."


async def test_compaction_errors_in_the_openai_shape(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    missing = await bridge.post("/v1/responses/compact", json={"input": [user("x")]})
    assert missing.status == 400
    error = (await missing.json())["error"]
    assert (error["param"], error["code"]) == ("model", "missing_required_parameter")
    unknown = await bridge.post("/v1/responses/compact", json={"model": "nope", "input": "x"})
    assert unknown.status == 404
    gone = await bridge.post(
        "/v1/responses/compact", json={"model": MODEL, "previous_response_id": "resp_gone"}
    )
    assert (await gone.json())["error"]["code"] == "previous_response_not_found"
    empty = await bridge.post("/v1/responses/compact", json={"model": MODEL})
    assert empty.status == 400
    fake_upstream.script(
        Reply(status=429, error_body={"error": {"message": "slow down", "type": "rate_limit"}})
    )
    limited = await bridge.post(
        "/v1/responses/compact",
        json={"model": MODEL, "input": [user("a"), {"role": "assistant", "content": "b"}]},
    )
    assert limited.status == 429
    assert set((await limited.json())["error"]) == {"message", "type", "param", "code"}


async def test_codex_remote_compaction_v2_is_refused_saying_why(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """Codex's remote compaction "v2" ends its input with a compaction_trigger item and wants
    one compaction item back: not served (docs/codex.md), and never sent to the model."""
    answer = await bridge.post(
        "/v1/responses",
        json={"model": MODEL, "input": [user("hi"), {"type": "compaction_trigger"}]},
    )
    assert answer.status == 400
    error = (await answer.json())["error"]
    assert error["param"] == "input[1].type" and "compaction_trigger" in error["message"]
    assert fake_upstream.requests == []


async def test_a_compaction_item_the_bridge_did_not_make_is_left_out(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply([], ["ok"]))
    foreign = {"type": "compaction", "id": "cmp_x", "encrypted_content": "gAAAAABpM0Yj-x="}
    answer = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": [foreign, user("hi")]}
    )
    assert answer.status == 200
    assert fake_upstream.requests[-1]["messages"] == [{"role": "user", "content": "hi"}]
