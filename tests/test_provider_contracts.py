"""Each thinking provider's replay rule, against a strict fake of that provider.

The fakes (tests/provider_fakes.py) refuse a replayed turn whose reasoning is missing or
altered as their providers do, so a conversation that goes through here is one the real
provider would have kept taking: over HTTP (a full replay with store: false, a
previous_response_id chain, a conversation) and over the WebSocket mode.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.translate.dialect import UNSIGNED_CALL as GEMINI_UNSIGNED
from tests.conftest import MODEL, assert_ends, bridge_config
from tests.fake_upstream import FakeUpstream
from tests.provider_fakes import (
    DEEPSEEK_MISSING,
    Call,
    DeepSeek,
    Gemini,
    Kimi,
    MiniMax,
    arguments,
)

ClientFactory = Callable[..., Awaitable[TestClient]]
TOOLS = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
]
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def output_of(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


def completed(body: dict[str, Any]) -> dict[str, Any]:
    """A response that must have completed; the error it carried otherwise."""
    assert body.get("status") == "completed", json.dumps(body.get("error") or body)[:800]
    return body


async def bridge_for(
    fake: FakeUpstream, aiohttp_client: ClientFactory, profile: str, store: str = ""
) -> TestClient:
    config = bridge_config(fake.url, provider=f'profile = "{profile}"', store=store)
    return await aiohttp_client(create_app(config))


async def create(bridge: TestClient, **body: Any) -> dict[str, Any]:
    response = await bridge.post("/v1/responses", json={"model": MODEL, "tools": TOOLS, **body})
    payload: dict[str, Any] = await response.json()
    assert response.status == 200, payload
    return payload


def strict(fake: FakeUpstream, rules: Any) -> Any:
    fake.rules = rules
    return rules


def replayed(body: dict[str, Any], call_id: str) -> dict[str, Any]:
    for message in body["messages"]:
        if any(call["id"] == call_id for call in message.get("tool_calls") or ()):
            return dict(message)
    raise AssertionError(f"call {call_id} not replayed")


# ---- DeepSeek: a tool-call turn that came back without reasoning ------------------------


async def test_deepseek_refuses_a_replay_without_the_field_as_the_provider_does(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """The fake itself: a reasoning-less tool turn replayed without the key is refused."""
    rules = strict(fake_upstream, DeepSeek())
    rules.turn(calls=[Call("c1", "read_file", "{}")])
    body = {
        "model": "m",
        "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {}}}],
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [_call("c1")]},
            {"role": "tool", "tool_call_id": "c1", "content": "x"},
        ],
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake_upstream.url}/v1/chat/completions", json=body) as answer:
            assert answer.status == 400
            assert (await answer.json())["error"]["message"] == DEEPSEEK_MISSING
        body["messages"][1]["reasoning_content"] = "made up"
        async with session.post(f"{fake_upstream.url}/v1/chat/completions", json=body) as answer:
            assert answer.status == 400  # altered: what the model said was nothing


def _call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "read_file", "arguments": "{}"}}


async def test_deepseek_tool_turn_without_reasoning_replayed_in_full(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """Codex's way: store false, the whole conversation sent again every time."""
    rules = strict(fake_upstream, DeepSeek())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "deepseek")
    fake_upstream.script(rules.turn(calls=[Call("c1", "read_file", arguments(path="a"))]))
    first = completed(await create(bridge, input=[user("read a")], store=False))
    assert [item["type"] for item in first["output"]] == ["function_call"]
    history = [user("read a"), *first["output"], output_of("c1", "alpha")]
    fake_upstream.script(rules.turn(reasoning="It says alpha.", text="The file says alpha."))
    second = completed(await create(bridge, input=history, store=False))
    follow = fake_upstream.requests[-1]
    assert replayed(follow, "c1")["reasoning_content"] == ""
    # A later turn: both earlier assistant messages carry their reasoning, tools present.
    history += [*second["output"], user("and b?")]
    fake_upstream.script(rules.turn(text="No b."))
    completed(await create(bridge, input=history, store=False))
    last = fake_upstream.requests[-1]
    assistants = [m for m in last["messages"] if m["role"] == "assistant"]
    assert [m["reasoning_content"] for m in assistants] == ["", "It says alpha."]
    assert rules.refused == []


async def test_deepseek_reasoning_less_turn_in_a_chain_and_a_conversation(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    rules = strict(fake_upstream, DeepSeek())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "deepseek")
    # previous_response_id
    fake_upstream.script(rules.turn(calls=[Call("p1", "read_file", arguments(path="a"))]))
    first = completed(await create(bridge, input="read a"))
    fake_upstream.script(rules.turn(text="Done."))
    completed(
        await create(bridge, previous_response_id=first["id"], input=[output_of("p1", "alpha")])
    )
    assert replayed(fake_upstream.requests[-1], "p1")["reasoning_content"] == ""
    # a Conversations API conversation
    response = await bridge.post("/v1/conversations", json={})
    conversation = (await response.json())["id"]
    fake_upstream.script(rules.turn(calls=[Call("v1", "read_file", arguments(path="b"))]))
    completed(await create(bridge, conversation=conversation, input="read b"))
    fake_upstream.script(rules.turn(text="Done too."))
    completed(await create(bridge, conversation=conversation, input=[output_of("v1", "beta")]))
    assert replayed(fake_upstream.requests[-1], "v1")["reasoning_content"] == ""
    assert rules.refused == []


async def test_deepseek_effort_toggled_off_and_on_keeps_the_session_valid(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """Codex's effort switch: a turn at "none" (thinking disabled) answers without
    reasoning; the turns after it think again and must still carry the field."""
    rules = strict(fake_upstream, DeepSeek())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "deepseek")
    history: list[dict[str, Any]] = [user("read a")]
    fake_upstream.script(rules.turn(reasoning="Read it.", calls=[Call("t1", "read_file", "{}")]))
    first = completed(await create(bridge, input=history, store=False))
    history += [*first["output"], output_of("t1", "alpha"), user("quick: read b")]
    fake_upstream.script(rules.turn(calls=[Call("t2", "read_file", "{}")]))
    second = completed(
        await create(bridge, input=history, store=False, reasoning={"effort": "none"})
    )
    assert fake_upstream.requests[-1]["thinking"] == {"type": "disabled"}
    history += [*second["output"], output_of("t2", "beta"), user("think hard: and c?")]
    fake_upstream.script(rules.turn(reasoning="Both read.", text="Alpha and beta."))
    completed(await create(bridge, input=history, store=False, reasoning={"effort": "high"}))
    last = fake_upstream.requests[-1]
    assert last["thinking"] == {"type": "enabled"}
    assert replayed(last, "t1")["reasoning_content"] == "Read it."
    assert replayed(last, "t2")["reasoning_content"] == ""
    assert rules.refused == []


async def test_deepseek_reasoning_less_turn_over_the_websocket(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    rules = strict(fake_upstream, DeepSeek())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "deepseek")
    async with bridge.ws_connect("/v1/responses") as ws:
        fake_upstream.script(rules.turn(calls=[Call("w1", "read_file", "{}")]))
        first = await ws_turn(ws, input=[user("read a")], store=False)
        fake_upstream.script(rules.turn(text="Read."))
        await ws_turn(
            ws, previous_response_id=first["id"], input=[output_of("w1", "alpha")], store=False
        )
    assert replayed(fake_upstream.requests[-1], "w1")["reasoning_content"] == ""
    assert rules.refused == []


async def ws_turn(ws: aiohttp.ClientWebSocketResponse, **body: Any) -> dict[str, Any]:
    """One response.create on a socket; the response its final event carries."""
    request = {"type": "response.create", "model": MODEL, "tools": TOOLS, **body}
    await ws.send_str(json.dumps(request))
    for _ in range(1000):
        message = await ws.receive(timeout=10)
        assert message.type == WSMsgType.TEXT, message
        event = json.loads(message.data)
        if event["type"] in TERMINAL:
            assert_ends(event)
            response: dict[str, Any] = event["response"]
            return response
    raise AssertionError("no final event")


# ---- Kimi ------------------------------------------------------------------------------------


async def test_kimi_tool_call_turns_carry_the_field_plain_ones_need_not(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    rules = strict(fake_upstream, Kimi())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "kimi")
    fake_upstream.script(rules.turn(calls=[Call("k1", "read_file", "{}")]))
    first = completed(await create(bridge, input=[user("read a")], store=False))
    history = [user("read a"), *first["output"], output_of("k1", "alpha")]
    fake_upstream.script(rules.turn(text="Alpha."))
    second = completed(await create(bridge, input=history, store=False))
    history += [*second["output"], user("thanks")]
    fake_upstream.script(rules.turn(text="Welcome."))
    completed(await create(bridge, input=history, store=False))
    last = fake_upstream.requests[-1]
    assert replayed(last, "k1")["reasoning_content"] == ""
    plain = [m for m in last["messages"] if m["role"] == "assistant" and not m.get("tool_calls")]
    assert "reasoning_content" not in plain[0]
    assert rules.refused == []


@pytest.mark.parametrize(("profile", "warnings"), [("deepseek", 1), ("qwen", 0), ("ollama", 0)])
async def test_missing_reasoning_is_one_warning_per_request_and_only_where_it_matters(
    fake_upstream: FakeUpstream,
    aiohttp_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    profile: str,
    warnings: int,
) -> None:
    """A history the bridge never saw (another tool wrote it): 300 tool-call turns without
    reasoning, which the store cannot fill."""
    bridge = await bridge_for(fake_upstream, aiohttp_client, profile)
    fake_upstream.require_reasoning = False
    history: list[dict[str, Any]] = [user("read them all")]
    for number in range(300):
        call = {"type": "function_call", "call_id": f"x{number}", "name": "read_file"}
        history += [{**call, "arguments": "{}"}, output_of(f"x{number}", "x")]
    fake_upstream.script(DeepSeek().turn(text="Read."))
    with caplog.at_level("WARNING"):
        completed(await create(bridge, input=history, store=False))
    said = [r.getMessage() for r in caplog.records if "no reasoning found" in r.getMessage()]
    assert len(said) == warnings, said
    if warnings:
        assert "x0, x1, x2, x3, x4 and 295 more" in said[0]
    sent = [m for m in fake_upstream.requests[-1]["messages"] if m["role"] == "assistant"]
    if profile == "deepseek":
        assert {m["reasoning_content"] for m in sent} == {""}
    else:
        field = "reasoning" if profile == "ollama" else "reasoning_content"
        assert all(field not in m for m in sent)


# ---- Gemini 3: thought signatures --------------------------------------------------------

GEMINI_TEXT = "Paris is sunny."


def reasoning_items(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in output if item["type"] == "reasoning"]


async def test_gemini_signed_calls_go_back_on_every_replay_path(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    rules = strict(fake_upstream, Gemini())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "gemini")
    # 1. A stateless client (store false) that sends back the reasoning items it was given.
    fake_upstream.script(
        rules.turn(
            thought="The user wants weather; call read_file.",
            calls=[Call("g1", "read_file", arguments(path="w"))],
        )
    )
    first = completed(
        await create(
            bridge,
            input=[user("weather?")],
            store=False,
            include=["reasoning.encrypted_content"],
            reasoning={"effort": "high"},
        )
    )
    sent = fake_upstream.requests[-1]
    assert "reasoning_effort" not in sent
    assert sent["extra_body"]["google"]["thinking_config"] == {
        "include_thoughts": True,
        "thinking_level": "high",
    }
    (thought,) = reasoning_items(first["output"])
    assert thought["content"][0]["text"] == "The user wants weather; call read_file."
    assert thought["encrypted_content"]
    # The thinking is counted in output_tokens (Gemini's completion_tokens leave it out).
    usage = first["usage"]
    assert usage["output_tokens_details"]["reasoning_tokens"] == 40
    assert usage["output_tokens"] == usage["total_tokens"] - usage["input_tokens"] == 40 + 7
    history = [user("weather?"), *first["output"], output_of("g1", "sunny")]
    fake_upstream.script(rules.turn(text=GEMINI_TEXT))
    completed(await create(bridge, input=history, store=False))
    call = replayed(fake_upstream.requests[-1], "g1")["tool_calls"][0]
    assert call["extra_content"] == {"google": {"thought_signature": rules.signatures["g1"]}}
    assert "reasoning_content" not in replayed(fake_upstream.requests[-1], "g1")
    # 2. The same client dropping the reasoning items: the store finds the signature.
    bare = [item for item in history if item.get("type") != "reasoning"]
    fake_upstream.script(rules.turn(text=GEMINI_TEXT))
    completed(await create(bridge, input=bare, store=False))
    # 3. A previous_response_id chain.
    fake_upstream.script(rules.turn(calls=[Call("g2", "read_file", arguments(path="x"))]))
    chained = completed(await create(bridge, input="read x"))
    fake_upstream.script(rules.turn(text="x read."))
    completed(
        await create(bridge, previous_response_id=chained["id"], input=[output_of("g2", "1")])
    )
    call = replayed(fake_upstream.requests[-1], "g2")["tool_calls"][0]
    assert call["extra_content"]["google"]["thought_signature"] == rules.signatures["g2"]
    assert rules.refused == []


async def test_gemini_parallel_calls_are_one_turn_with_the_first_signed(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    rules = strict(fake_upstream, Gemini())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "gemini")
    calls = [Call("pa", "read_file", arguments(path="a")), Call("pb", "read_file", "{}")]
    fake_upstream.script(rules.turn(calls=calls))  # no thought text: the signature alone
    first = completed(await create(bridge, input=[user("both")], store=False))
    kinds = [item["type"] for item in first["output"]]
    assert kinds == ["reasoning", "function_call", "function_call"], kinds
    history = [user("both"), *first["output"], output_of("pa", "1"), output_of("pb", "2")]
    fake_upstream.script(rules.turn(text="Both read."))
    completed(await create(bridge, input=history, store=False))
    assistant = replayed(fake_upstream.requests[-1], "pa")
    assert [c["id"] for c in assistant["tool_calls"]] == ["pa", "pb"]
    assert "extra_content" in assistant["tool_calls"][0]
    assert "extra_content" not in assistant["tool_calls"][1]
    assert rules.refused == []


async def test_gemini_history_it_never_signed_uses_googles_stand_in(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """A conversation begun on another model: its calls were never signed."""
    rules = strict(fake_upstream, Gemini())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "gemini")
    history = [
        user("read a"),
        {"type": "function_call", "call_id": "o1", "name": "read_file", "arguments": "{}"},
        output_of("o1", "alpha"),
    ]
    fake_upstream.script(rules.turn(text="Alpha."))
    completed(await create(bridge, input=history, store=False))
    call = replayed(fake_upstream.requests[-1], "o1")["tool_calls"][0]
    assert call["extra_content"] == {"google": {"thought_signature": GEMINI_UNSIGNED}}
    assert rules.refused == []


async def test_gemini_tool_loop_over_the_websocket(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    rules = strict(fake_upstream, Gemini())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "gemini")
    async with bridge.ws_connect("/v1/responses") as ws:
        fake_upstream.script(rules.turn(thought="Read a.", calls=[Call("s1", "read_file", "{}")]))
        first = await ws_turn(ws, input=[user("read a")], store=False)
        fake_upstream.script(rules.turn(thought="Then b.", calls=[Call("s2", "read_file", "{}")]))
        second = await ws_turn(
            ws, previous_response_id=first["id"], input=[output_of("s1", "alpha")], store=False
        )
        fake_upstream.script(rules.turn(text="Alpha, beta."))
        await ws_turn(
            ws, previous_response_id=second["id"], input=[output_of("s2", "beta")], store=False
        )
    last = fake_upstream.requests[-1]
    for call_id in ("s1", "s2"):
        call = replayed(last, call_id)["tool_calls"][0]
        assert call["extra_content"]["google"]["thought_signature"] == rules.signatures[call_id]
    assert rules.refused == []


async def test_gemini_refuses_what_the_real_endpoint_refuses(
    fake_upstream: FakeUpstream,
) -> None:
    """The fake itself, against the documented failures: a lost or altered signature."""
    rules = strict(fake_upstream, Gemini())
    rules.turn(calls=[Call("f1", "read_file", "{}")])
    body: dict[str, Any] = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": None, "tool_calls": [_call("f1")]},
            {"role": "tool", "tool_call_id": "f1", "content": "x"},
        ],
    }
    async with aiohttp.ClientSession() as session:
        url = f"{fake_upstream.url}/v1/chat/completions"
        async with session.post(url, json=body) as answer:
            assert answer.status == 400
            assert "missing a thought_signature" in (await answer.json())[0]["error"]["message"]
        body["messages"][1]["tool_calls"][0]["extra_content"] = {
            "google": {"thought_signature": "forged"}
        }
        async with session.post(url, json=body) as answer:
            assert (await answer.json())[0]["error"]["message"] == "Corrupted thought signature."
        body["frequency_penalty"] = 0.1
        async with session.post(url, json=body) as answer:
            message = (await answer.json())[0]["error"]["message"]
            assert 'Unknown name "frequency_penalty"' in message


# ---- MiniMax M2: reasoning_details ------------------------------------------------------


@pytest.mark.parametrize("cumulative", [False, True], ids=["increments", "snapshots"])
async def test_minimax_reasoning_details_shown_and_sent_back_whole(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, cumulative: bool
) -> None:
    rules = strict(fake_upstream, MiniMax(cumulative=cumulative))
    bridge = await bridge_for(fake_upstream, aiohttp_client, "minimax")
    thinking = "The user wants file a. I will call read_file with path a."
    fake_upstream.responder = lambda body: rules.turn(
        body, reasoning=thinking, calls=[Call("m1", "read_file", arguments(path="a"))]
    )
    first = completed(await create(bridge, input=[user("read a")], store=False, temperature=0))
    sent = fake_upstream.requests[-1]
    assert sent["reasoning_split"] is True
    assert sent["temperature"] == 0.01  # MiniMax takes (0, 1]
    (reasoning,) = reasoning_items(first["output"])
    assert reasoning["content"][0]["text"] == thinking
    history = [user("read a"), *first["output"], output_of("m1", "alpha")]
    fake_upstream.responder = lambda body: rules.turn(body, reasoning="Done.", text="Alpha.")
    second = completed(await create(bridge, input=history, store=False))
    assistant = replayed(fake_upstream.requests[-1], "m1")
    assert assistant["reasoning_details"] == rules.details_of_call["m1"]
    assert assistant["reasoning_details"][0]["text"] == thinking
    assert "reasoning_content" not in assistant
    # Again over a chain the store keeps, and over the socket.
    history += [*second["output"], user("again")]
    fake_upstream.responder = lambda body: rules.turn(body, text="Again alpha.")
    completed(await create(bridge, input=history, store=False))
    async with bridge.ws_connect("/v1/responses") as ws:
        fake_upstream.responder = lambda body: rules.turn(
            body, reasoning="Read b.", calls=[Call("m2", "read_file", "{}")]
        )
        turn = await ws_turn(ws, input=[user("read b")], store=False)
        fake_upstream.responder = lambda body: rules.turn(body, text="Beta.")
        await ws_turn(
            ws, previous_response_id=turn["id"], input=[output_of("m2", "beta")], store=False
        )
    assert replayed(fake_upstream.requests[-1], "m2")["reasoning_details"][0]["text"] == "Read b."
    assert rules.refused == []


# ---- Structured output where the provider has only a JSON mode ----------------------------

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
    "additionalProperties": False,
}
WEATHER_FORMAT = {
    "format": {
        "type": "json_schema",
        "name": "weather",
        "description": "The weather in one city",
        "schema": WEATHER,
        "strict": True,
    }
}


async def test_json_schema_on_deepseek_reaches_the_model_and_is_checked(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    rules = strict(fake_upstream, DeepSeek())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "deepseek")
    fake_upstream.script(rules.turn(reasoning="Oslo.", text='{"city": "Oslo", "celsius": 4}'))
    history: list[dict[str, Any]] = [user("Weather in Oslo?")]
    first = completed(await create(bridge, input=history, text=WEATHER_FORMAT, store=False))
    assert json.loads(first["output"][-1]["content"][0]["text"]) == {"city": "Oslo", "celsius": 4}
    # The echo keeps what the client asked for.
    assert first["text"]["format"]["type"] == "json_schema"
    sent = fake_upstream.requests[-1]
    assert sent["response_format"] == {"type": "json_object"}
    system = sent["messages"][0]
    assert system["role"] == "system" and "weather" in system["content"]
    assert json.dumps(WEATHER, separators=(",", ":")) in system["content"]
    # The next turn: the same instruction, first again; the conversation after it.
    history += [*first["output"], user("And Bergen?")]
    fake_upstream.script(rules.turn(text='{"city": "Bergen"}'))
    response = await bridge.post(
        "/v1/responses",
        json={"model": MODEL, "input": history, "text": WEATHER_FORMAT, "store": False},
    )
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "invalid_output"
    assert "does not match the json_schema 'weather'" in error["message"]
    assert "celsius" in error["message"]
    again = fake_upstream.requests[-1]
    assert again["messages"][0] == system
    assert again["messages"][: len(sent["messages"])] == sent["messages"]
    # Streamed: the answer arrives, then response.failed says why it does not do.
    fake_upstream.script(rules.turn(text="It is cold."))
    response = await bridge.post(
        "/v1/responses",
        json={"model": MODEL, "input": history, "text": WEATHER_FORMAT, "stream": True},
    )
    frames = (await response.read()).decode()
    assert "response.output_text.done" in frames
    final = [line for line in frames.splitlines() if line.startswith("data: {")][-1]
    failed = json.loads(final.removeprefix("data: "))
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"]["code"] == "invalid_output"
    assert "not JSON" in failed["response"]["error"]["message"]
    assert rules.refused == []


async def test_json_object_on_deepseek_gets_the_word_json(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """DeepSeek refuses json_object unless the prompt says "json"; the client's does not."""
    rules = strict(fake_upstream, DeepSeek())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "deepseek")
    fake_upstream.script(rules.turn(text='{"ok": true}'))
    answer = await create(
        bridge, input="Say ok as an object.", text={"format": {"type": "json_object"}}
    )
    completed(answer)
    assert rules.refused == []


@pytest.mark.parametrize("apart", [False, True], ids=["on-the-call", "after-the-call"])
async def test_gemini_text_then_a_signed_call_stays_one_turn(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, apart: bool
) -> None:
    """Text before the call, the signature on the call or in a delta after it: replayed as
    the one assistant message Gemini answered, its call signed."""
    rules = strict(fake_upstream, Gemini())
    bridge = await bridge_for(fake_upstream, aiohttp_client, "gemini")
    fake_upstream.script(
        rules.turn(
            text="Let me look.",
            calls=[Call("t1", "read_file", arguments(path="a"))],
            signature_apart=apart,
        )
    )
    first = completed(await create(bridge, input=[user("read a")], store=False))
    history = [user("read a"), *first["output"], output_of("t1", "alpha")]
    fake_upstream.script(rules.turn(text="Alpha."))
    completed(await create(bridge, input=history, store=False))
    assistant = replayed(fake_upstream.requests[-1], "t1")
    assert assistant["content"] == "Let me look."
    signature = assistant["tool_calls"][0]["extra_content"]["google"]["thought_signature"]
    assert signature == rules.signatures["t1"]
    assert rules.refused == []


async def test_a_turn_known_to_have_had_no_reasoning_sends_no_field_where_none_is_asked(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """Qwen takes reasoning back but does not ask for it: a tool turn the store knows came
    without reasoning goes back without the field, not with an empty one."""
    bridge = await bridge_for(fake_upstream, aiohttp_client, "qwen")
    fake_upstream.require_reasoning = False
    shape = DeepSeek()
    fake_upstream.script(shape.turn(calls=[Call("n1", "read_file", "{}")]))
    first = completed(await create(bridge, input=[user("read a")], store=False))
    fake_upstream.script(shape.turn(text="Alpha."))
    history = [user("read a"), *first["output"], output_of("n1", "alpha")]
    completed(await create(bridge, input=history, store=False))
    assert "reasoning_content" not in replayed(fake_upstream.requests[-1], "n1")
