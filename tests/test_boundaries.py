"""Rules that changes to the code once broke without a test noticing: which header names a
conversation, when a failed attempt is tried again, what truncation keeps, and where the
limit on an upstream event lies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.sse import SSEParser, SSEProtocolError
from bridge.truncation import truncate
from bridge.wire.chat import ChatFunctionCall, ChatMessage, ChatToolCall
from tests.conftest import MODEL, assert_ends, bridge_config, read_events
from tests.fake_upstream import (
    DONE,
    FakeUpstream,
    Reply,
    chunk,
    sse,
    thinking_text_reply,
    tool_call_reply,
    usage_chunk,
)

ClientFactory = Callable[..., Awaitable[TestClient]]
TOOLS = [{"type": "function", "name": "read", "parameters": {"type": "object"}}]


def replay(call_id: str) -> list[dict[str, Any]]:
    """A stateless replay of a tool-call turn without its reasoning (as Codex sends one
    whose reasoning it does not have)."""
    return [
        {"type": "message", "role": "user", "content": "read it"},
        {"type": "function_call", "call_id": call_id, "name": "read", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call_id, "output": "contents"},
    ]


async def test_the_thread_id_names_the_conversation_before_the_session_id(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """Two sub-agent threads of one Codex session use the same call id: each gets its own
    reasoning back (the session id alone would mix them up)."""
    for thread in ("thread-a", "thread-b"):
        fake_upstream.script(tool_call_reply(f"{thread} thinks", [("call_1", "read", ["{}"])]))
        response = await bridge.post(
            "/v1/responses",
            json={"model": MODEL, "store": False, "tools": TOOLS, "input": replay("call_1")[:1]},
            headers={"session-id": "one-session", "thread-id": thread},
        )
        assert response.status == 200, await response.text()
    for thread in ("thread-a", "thread-b"):
        fake_upstream.script(thinking_text_reply([], ["done"]))
        response = await bridge.post(
            "/v1/responses",
            json={"model": MODEL, "store": False, "tools": TOOLS, "input": replay("call_1")},
            headers={"session-id": "one-session", "thread-id": thread},
        )
        assert response.status == 200, await response.text()
        assistant = fake_upstream.requests[-1]["messages"][1]
        assert assistant["reasoning_content"] == f"{thread} thinks"


@pytest.fixture
async def retrying(fake_upstream: FakeUpstream, aiohttp_client: ClientFactory) -> TestClient:
    config = bridge_config(fake_upstream.url, upstream="max_retries = 2\nmax_retry_wait = 0.1")
    return await aiohttp_client(create_app(config))


async def test_no_retry_once_output_went_out_and_the_client_sees_the_upstreams_error(
    retrying: TestClient, fake_upstream: FakeUpstream
) -> None:
    broken = thinking_text_reply(["thinking"], ["the first words"])
    broken.drop_after = 3  # after the reasoning and the text: the connection breaks
    fake_upstream.script(broken, thinking_text_reply([], ["never asked for"]))
    response = await retrying.post(
        "/v1/responses", json={"model": MODEL, "input": "x", "stream": True}
    )
    events = await read_events(response)
    final = assert_ends(events, "response.failed")
    error = final["response"]["error"]
    assert error["code"] == "server_error"
    assert error["message"].startswith("upstream unreachable"), error
    assert fake_upstream.url in error["message"]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "the first words"
    assert len(fake_upstream.requests) == 1


@pytest.mark.parametrize(("status", "attempts"), [(500, 1), (502, 2), (503, 2), (504, 2)])
async def test_http_500_is_not_retried_but_gateway_errors_are(
    retrying: TestClient, fake_upstream: FakeUpstream, status: int, attempts: int
) -> None:
    failing = Reply(status=status, error_body={"error": {"message": f"status {status}"}})
    fake_upstream.script(failing, thinking_text_reply([], ["second try"]))
    response = await retrying.post("/v1/responses", json={"model": MODEL, "input": "x"})
    body = await response.json()
    assert len(fake_upstream.requests) == attempts
    if attempts == 1:
        assert response.status == 502
        assert f"status {status}" in body["error"]["message"]
    else:
        assert response.status == 200, body
        assert body["output"][-1]["content"][0]["text"] == "second try"


def message(role: str, text: str) -> ChatMessage:
    return ChatMessage(role=role, content=text)


def test_truncation_keeps_the_newest_turn_and_the_latest_user_message() -> None:
    call = ChatToolCall(id="c1", function=ChatFunctionCall(name="read", arguments="{}"))
    newest = [
        ChatMessage(role="assistant", content=None, tool_calls=[call], reasoning_content="r"),
        ChatMessage(role="tool", content="x" * 50_000, tool_call_id="c1"),
    ]
    messages = [
        message("system", "rules"),
        message("user", "old question " * 100),
        message("assistant", "old answer " * 100),
        message("user", "the latest question"),
        *newest,
    ]
    kept = truncate(messages, 0.01)
    assert kept is not None
    assert kept == [messages[0], messages[3], *newest]


@pytest.mark.parametrize(("size", "accepted"), [(100, True), (101, False)])
def test_max_event_bytes_is_the_largest_event_accepted(size: int, accepted: bool) -> None:
    parser = SSEParser(max_event_bytes=100)
    event = b"data: " + b"x" * size + b"\n\n"
    if accepted:
        (parsed,) = parser.feed(event)
        assert len(parsed.data) == 100
    else:
        with pytest.raises(SSEProtocolError, match="larger than 100 bytes"):
            parser.feed(event)
    # Lines of one event count as they are joined: 49 + newline + 50 bytes.
    assert SSEParser(max_event_bytes=100).feed(
        b"data: " + b"y" * 49 + b"\ndata: " + b"z" * 50 + b"\n\n"
    )


def exact_event(size: int) -> bytes:
    """A content chunk whose `data:` is exactly `size` bytes."""
    bare = len(orjson.dumps(chunk({"content": ""})))
    return sse(chunk({"content": "a" * (size - bare)}))


@pytest.mark.parametrize(("size", "outcome"), [(4096, "completed"), (4097, "failed")])
async def test_an_upstream_event_of_max_event_bytes_passes_and_one_byte_more_fails(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, size: int, outcome: str
) -> None:
    config = bridge_config(fake_upstream.url, upstream="max_retries = 0\nmax_event_bytes = 4096")
    client = await aiohttp_client(create_app(config))
    event = exact_event(size)
    assert len(event) == len(b"data: ") + size + 2
    fake_upstream.script(Reply([event, sse(chunk(finish_reason="stop")), sse(usage_chunk()), DONE]))
    response = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "x", "stream": True}
    )
    final = assert_ends(await read_events(response), f"response.{outcome}")
    if outcome == "failed":
        assert "larger than 4096 bytes" in final["response"]["error"]["message"]
