"""Requests that need no events (`stream` false over HTTP) ask the provider for one JSON
answer instead of a stream, where the provider's profile allows it; what is stored of such a
turn, and so what a later turn replays, is what the streamed turn would have left (issue 25).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from tests.conftest import MODEL, assert_ends, bridge_config, read_events
from tests.fake_upstream import (
    FakeUpstream,
    Reply,
    completion_of,
    thinking_text_reply,
    tool_call_reply,
)
from tests.provider_fakes import Call, DeepSeek, Kimi, MiniMax, arguments
from tests.websocket_client import turn as ws_turn
from tests.websocket_client import user

ClientFactory = Callable[..., Awaitable[TestClient]]
TOOLS = [
    {
        "type": "function",
        "name": "read_file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
]


async def bridge_for(
    fake: FakeUpstream, aiohttp_client: ClientFactory, profile: str = "openai", upstream: str = ""
) -> TestClient:
    config = bridge_config(fake.url, provider=f'profile = "{profile}"', upstream=upstream)
    return await aiohttp_client(create_app(config))


async def answered(bridge: TestClient, **body: Any) -> dict[str, Any]:
    """The completed response to a request, streamed or not (`stream` in `body`)."""
    response = await bridge.post("/v1/responses", json={"model": MODEL, **body})
    if body.get("stream"):
        events = await read_events(response)
        final: dict[str, Any] = assert_ends(events)["response"]
        return final
    payload: dict[str, Any] = await response.json()
    assert response.status == 200, payload
    assert payload["status"] == "completed", json.dumps(payload.get("error"))
    return payload


async def test_a_json_request_asks_the_provider_for_one_json_answer(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    bridge = await bridge_for(fake_upstream, aiohttp_client)
    fake_upstream.script(thinking_text_reply(["Think", "ing."], ["Hel", "lo."], prompt_tokens=40))
    response = await answered(bridge, input="hi", reasoning={"effort": "high"})
    sent = fake_upstream.requests[-1]
    assert sent["stream"] is False
    assert "stream_options" not in sent  # OpenAI refuses it on a request that does not stream
    assert fake_upstream.headers[-1]["Accept"] == "application/json"
    reasoning, message = response["output"]
    assert reasoning["content"][0]["text"] == "Thinking."
    assert message["content"][0]["text"] == "Hello."
    assert response["usage"]["input_tokens"] == 40
    assert response["usage"]["input_tokens_details"]["cached_tokens"] == 3
    assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == 2


async def test_requests_that_need_events_still_stream(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """A client's stream, a WebSocket, a background response's followers; and providers
    that need the stream (Gemini's flagged thoughts, Qwen's stream-only thinking models)."""
    bridge = await bridge_for(fake_upstream, aiohttp_client)
    fake_upstream.responder = lambda body: thinking_text_reply(["r"], ["ok"])
    await answered(bridge, input="hi", stream=True)
    assert fake_upstream.requests[-1]["stream"] is True
    async with bridge.ws_connect("/v1/responses") as ws:
        assert_ends(await ws_turn(ws, input=[user("hi")]))
    assert fake_upstream.requests[-1]["stream"] is True
    response = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": "hi", "background": True}
    )
    assert response.status == 200
    created = await response.json()
    done = await bridge.get(f"/v1/responses/{created['id']}?stream=true")
    assert_ends(await read_events(done))
    assert fake_upstream.requests[-1]["stream"] is True
    for profile in ("gemini", "qwen"):
        streaming_only = await bridge_for(fake_upstream, aiohttp_client, profile)
        await answered(streaming_only, input="hi")
        assert fake_upstream.requests[-1]["stream"] is True
        assert fake_upstream.requests[-1]["stream_options"] == {"include_usage": True}


async def test_a_server_that_streams_anyway_is_read_as_a_stream(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    bridge = await bridge_for(fake_upstream, aiohttp_client)
    frames = thinking_text_reply(["r"], ["stre", "amed"]).frames
    fake_upstream.script(Reply(raw_parts=frames, content_type="text/event-stream"))
    response = await answered(bridge, input="hi")
    assert fake_upstream.requests[-1]["stream"] is False
    assert response["output"][-1]["content"][0]["text"] == "streamed"


async def test_a_slow_whole_answer_fails_after_the_answer_timeout(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """A non-streamed answer sends nothing until it is done: the idle timeout cannot tell a
    model thinking from a dead one, answer_timeout bounds the whole."""
    bridge = await bridge_for(
        fake_upstream, aiohttp_client, upstream="idle_timeout = 0.2\nanswer_timeout = 0.6"
    )
    slow = thinking_text_reply(["long thought"], ["late"])
    slow.frame_delay = 0.05  # about 0.45 s in all: past idle_timeout, within answer_timeout
    fake_upstream.script(slow)
    assert (await answered(bridge, input="hi"))["output"][-1]["content"][0]["text"] == "late"
    hung = thinking_text_reply([], ["never"])
    hung.delay_before = 3.0
    fake_upstream.script(hung)
    response = await bridge.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    assert response.status == 504
    error = (await response.json())["error"]
    assert "answer_timeout" in error["message"], error


async def test_a_whole_answer_is_retried_and_its_errors_mapped_as_a_stream_is(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    bridge = await bridge_for(fake_upstream, aiohttp_client, upstream="max_retries = 2")
    fake_upstream.script(
        Reply(status=503, error_body={"error": {"message": "busy"}}),
        thinking_text_reply([], ["ok"]),
    )
    assert (await answered(bridge, input="hi"))["output"][-1]["content"][0]["text"] == "ok"
    assert [r["stream"] for r in fake_upstream.requests] == [False, False]
    # An error object in a 200 answer is the provider's refusal, as inside a stream.
    refused = Reply(whole={"error": {"message": "content filtered", "code": "content_filter"}})
    fake_upstream.script(refused)
    response = await bridge.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    assert response.status >= 400
    assert "content filtered" in (await response.json())["error"]["message"]
    # Larger than max_answer_bytes: refused with the setting named, not read on.
    small = await bridge_for(fake_upstream, aiohttp_client, upstream="max_answer_bytes = 2048")
    fake_upstream.script(Reply(whole=completion_of(thinking_text_reply([], ["x" * 4096]).frames)))
    response = await small.post("/v1/responses", json={"model": MODEL, "input": "hi"})
    assert response.status >= 500
    assert "max_answer_bytes" in (await response.json())["error"]["message"]


# ---- what a later turn replays --------------------------------------------------------

Turn = Callable[[dict[str, Any]], Reply]


def generic(fake: FakeUpstream) -> tuple[Turn, Turn]:
    """The suite's thinking fake (DeepSeek's shapes): a tool call, then text."""
    return (
        lambda body: tool_call_reply(
            "I should read a.", [("c1", "read_file", ['{"path"', ':"a"}'])]
        ),
        lambda body: thinking_text_reply(["Read ", "it."], ["alpha"]),
    )


def reasoning_content(rules: DeepSeek | Kimi, fake: FakeUpstream) -> tuple[Turn, Turn]:
    """A strict fake of a provider that wants reasoning_content back (DeepSeek, Kimi)."""
    fake.rules = rules
    call = Call("c1", "read_file", arguments(path="a"))
    return (
        lambda body: rules.turn(reasoning="I should read a.", calls=[call]),
        lambda body: rules.turn(reasoning="Read it.", text="alpha"),
    )


def deepseek(fake: FakeUpstream) -> tuple[Turn, Turn]:
    return reasoning_content(DeepSeek(), fake)


def kimi(fake: FakeUpstream) -> tuple[Turn, Turn]:
    return reasoning_content(Kimi(), fake)


def minimax(fake: FakeUpstream) -> tuple[Turn, Turn]:
    rules = fake.rules = MiniMax()
    call = Call("c1", "read_file", arguments(path="a"))
    return (
        lambda body: rules.turn(body, reasoning="I should read a.", calls=[call]),
        lambda body: rules.turn(body, reasoning="Read it.", text="alpha"),
    )


def without_ids(value: Any) -> Any:
    """A response with what differs from one response to the next taken out."""
    if isinstance(value, dict):
        return {
            k: without_ids(v)
            for k, v in value.items()
            if k not in ("id", "created_at", "completed_at", "previous_response_id")
        }
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("profile", "provider"),
    [("openai", generic), ("deepseek", deepseek), ("kimi", kimi), ("minimax", minimax)],
    ids=["generic", "deepseek", "kimi", "minimax"],
)
async def test_a_turn_answered_whole_replays_as_the_streamed_one_does(
    fake_upstream: FakeUpstream,
    aiohttp_client: ClientFactory,
    profile: str,
    provider: Callable[[FakeUpstream], tuple[Turn, Turn]],
) -> None:
    """A stored tool-call turn, answered whole or streamed, then its follow-up through
    previous_response_id: the follow-up's upstream body is the same, byte for byte, and so
    are the stored turns (reasoning, output, usage)."""
    bridge = await bridge_for(fake_upstream, aiohttp_client, profile)
    fake_upstream.record_bytes = True
    first_turn, second_turn = provider(fake_upstream)
    sent: dict[bool, bytes] = {}
    stored: dict[bool, Any] = {}
    for streamed in (True, False):
        fake_upstream.responder = first_turn
        first = await answered(
            bridge, input=[user("read a")], tools=TOOLS, stream=streamed, store=True
        )
        assert fake_upstream.requests[-1]["stream"] is streamed
        fake_upstream.responder = second_turn
        follow_up = {"type": "function_call_output", "call_id": "c1", "output": "alpha"}
        second = await answered(
            bridge, previous_response_id=first["id"], input=[follow_up], tools=TOOLS, stream=True
        )
        sent[streamed] = fake_upstream.bodies[-1]
        kept = await bridge.get(f"/v1/responses/{first['id']}")
        stored[streamed] = without_ids([await kept.json(), second["output"], second["usage"]])
    assert sent[False] == sent[True]
    assert stored[False] == stored[True]
    assert getattr(fake_upstream.rules, "refused", []) == []
