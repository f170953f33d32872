"""The WebSocket mode of /v1/responses, spoken by an aiohttp WebSocket client.

Codex's sequence: a warm-up (`generate: false`), a first turn with the whole input, then
turns carrying only their new items and the previous response's id. What the strict fake
upstream receives is the test of the incremental path: the same messages a full replay over
HTTP produces, reasoning included.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.config import Config
from tests.conftest import MODEL, assert_ends, bridge_config
from tests.fake_upstream import (
    OVERFLOW,
    FakeUpstream,
    Reply,
    huge_stream,
    thinking_text_reply,
    tool_call_reply,
)
from tests.websocket_client import TIMEOUT, receive_json, turn, user

# The store's behaviour is the same on SQLite and PostgreSQL (tests/conftest.py).
STORE_BACKENDS = ["sqlite", "postgres"]

ClientFactory = Callable[..., Awaitable[TestClient]]
TOOLS = [
    {
        "type": "function",
        "name": "shell",
        "description": "Run a command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    }
]
DEVELOPER = {"type": "message", "role": "developer", "content": "You are a careful agent."}


def output_of(call_id: str, text: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": text}


async def bridge_with(config: Config, aiohttp_client: ClientFactory) -> TestClient:
    return await aiohttp_client(create_app(config))


CODEX_FIELDS: dict[str, Any] = {
    "tools": TOOLS,
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "instructions": "Be brief.",
}


async def test_warm_up_answers_without_the_upstream(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    async with bridge.ws_connect("/v1/responses") as ws:
        events = await turn(ws, input=[DEVELOPER], generate=False, **CODEX_FIELDS)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    assert_ends(events)
    assert events[-1]["response"]["status"] == "completed"
    assert events[-1]["response"]["output"] == []
    assert fake_upstream.requests == []


async def codex_session(ws: aiohttp.ClientWebSocketResponse, fake: FakeUpstream) -> list[str]:
    """Warm-up, a first turn with a tool call, its output alone, then a user message alone."""
    fake.script(
        tool_call_reply("I should list files.", [("call_1", "shell", ['{"cmd":', '"ls"}'])]),
        tool_call_reply("Now read it.", [("call_2", "shell", ['{"cmd":"cat a"}'])]),
        thinking_text_reply(["Summing up."], ["The file says hi."]),
        thinking_text_reply(["Again."], ["Done."]),
    )
    warm = await turn(ws, input=[DEVELOPER], generate=False, **CODEX_FIELDS)
    ids = [warm[-1]["response"]["id"]]
    first = await turn(ws, input=[user("list files")], previous_response_id=ids[-1], **CODEX_FIELDS)
    ids.append(first[-1]["response"]["id"])
    for items in ([output_of("call_1", "a")], [output_of("call_2", "hi")], [user("thanks")]):
        events = await turn(ws, input=items, previous_response_id=ids[-1], **CODEX_FIELDS)
        assert_ends(events)
        ids.append(events[-1]["response"]["id"])
    return ids


async def test_turns_send_only_new_items_and_the_upstream_gets_the_whole_conversation(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    async with bridge.ws_connect("/v1/responses") as ws:
        await codex_session(ws, fake_upstream)
    assert len(fake_upstream.requests) == 4  # the warm-up asked nothing
    last = fake_upstream.requests[-1]["messages"]
    assert [m["role"] for m in last] == [
        "system",  # instructions
        "system",  # the developer message (developer_role off)
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    # Every replayed turn carries its exact reasoning (the strict upstream demands it of
    # tool-call turns, and answered).
    assert [m.get("reasoning_content") for m in last if m["role"] == "assistant"] == [
        "I should list files.",
        "Now read it.",
        "Summing up.",
    ]
    assert last[3]["tool_calls"][0]["function"]["arguments"] == '{"cmd":"ls"}'


async def test_the_incremental_body_equals_a_full_replay_over_http(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """The same conversation sent whole over HTTP gives the same upstream messages."""
    async with bridge.ws_connect("/v1/responses") as ws:
        ids = await codex_session(ws, fake_upstream)
    over_socket = [request["messages"] for request in fake_upstream.requests]
    # A client replaying everything: every input so far, and every output as it came.
    replay: list[Any] = [DEVELOPER]
    fake_upstream.requests.clear()
    fake_upstream.script(
        tool_call_reply("I should list files.", [("call_1", "shell", ['{"cmd":', '"ls"}'])]),
        tool_call_reply("Now read it.", [("call_2", "shell", ['{"cmd":"cat a"}'])]),
        thinking_text_reply(["Summing up."], ["The file says hi."]),
        thinking_text_reply(["Again."], ["Done."]),
    )
    for items in (
        [user("list files")],
        [output_of("call_1", "a")],
        [output_of("call_2", "hi")],
        [user("thanks")],
    ):
        replay += items
        response = await bridge.post(
            "/v1/responses", json={"model": MODEL, "input": replay, **CODEX_FIELDS, "stream": False}
        )
        body = await response.json()
        assert response.status == 200, body
        replay += body["output"]
    over_http = [request["messages"] for request in fake_upstream.requests]
    assert over_socket == over_http
    assert len(ids) == 5


async def test_a_stored_turn_on_a_socket_is_a_stored_response_like_any_other(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        tool_call_reply("Plan.", [("call_9", "shell", ['{"cmd":"pwd"}'])]),
        thinking_text_reply(["Read."], ["You are in /src."]),
        thinking_text_reply(["Over HTTP."], ["Still /src."]),
        thinking_text_reply(["New socket."], ["Yes."]),
    )
    fields = {**CODEX_FIELDS, "store": True}
    async with bridge.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input=[user("where am I")], **fields)
        second = await turn(
            ws,
            input=[output_of("call_9", "/src")],
            previous_response_id=first[-1]["response"]["id"],
            **fields,
        )
    second_id = second[-1]["response"]["id"]
    got = await bridge.get(f"/v1/responses/{second_id}")
    assert (await got.json())["output"][0]["type"] == "reasoning"
    items = await (await bridge.get(f"/v1/responses/{second_id}/input_items")).json()
    assert [item["type"] for item in items["data"]] == ["function_call_output"]
    # The chain continues over HTTP, and on a new socket (both from the store).
    answer = await bridge.post(
        "/v1/responses",
        json={"model": MODEL, "input": "and now?", "previous_response_id": second_id},
    )
    assert answer.status == 200, await answer.text()
    async with bridge.ws_connect("/v1/responses") as ws:
        events = await turn(ws, input=[user("sure?")], previous_response_id=second_id, **fields)
    assert_ends(events)
    roles = [m["role"] for m in fake_upstream.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert fake_upstream.requests[-1]["messages"][2]["reasoning_content"] == "Plan."


async def test_an_unknown_previous_response_asks_for_the_whole_input_and_the_socket_stays(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply(["ok"], ["Hello."]))
    async with bridge.ws_connect("/v1/responses") as ws:
        events = await turn(ws, input=[output_of("call_1", "x")], previous_response_id="resp_gone")
        assert events == [
            {
                "type": "error",
                "status": 404,
                "error": {
                    "message": "Previous response with id 'resp_gone' not found.",
                    "type": "invalid_request_error",
                    "param": "previous_response_id",
                    "code": "previous_response_not_found",
                },
            }
        ]
        again = await turn(ws, input=[user("hello")])
    assert_ends(again)
    assert fake_upstream.requests[0]["messages"] == [{"role": "user", "content": "hello"}]


async def test_a_conversation_over_cache_bytes_is_not_kept(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(
        fake_upstream.url, websocket="cache_bytes = 200  # below any conversation"
    )
    client = await bridge_with(config, aiohttp_client)
    fake_upstream.script(tool_call_reply("Plan.", [("call_1", "shell", ['{"cmd":"ls"}'])]))
    async with client.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input=[user("x" * 300)], **CODEX_FIELDS)
        events = await turn(
            ws,
            input=[output_of("call_1", "a")],
            previous_response_id=first[-1]["response"]["id"],
            **CODEX_FIELDS,
        )
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "previous_response_not_found"


async def test_one_response_at_a_time(bridge: TestClient, fake_upstream: FakeUpstream) -> None:
    slow = thinking_text_reply(["hmm"], ["first"])
    slow.delay_before = 0.5
    fake_upstream.script(slow, thinking_text_reply(["ok"], ["second"]))
    async with bridge.ws_connect("/v1/responses") as ws:
        body = {"type": "response.create", "model": MODEL, "input": "one"}
        await ws.send_str(json.dumps(body))
        await ws.send_str(json.dumps({**body, "input": "two"}))
        events = []
        while not events or events[-1]["type"] != "response.completed":
            events.append(await receive_json(ws))
        refused = [e for e in events if e["type"] == "error"]
        assert len(refused) == 1 and refused[0]["error"]["code"] == "response_in_progress"
        assert refused[0]["status"] == 400
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == "first"
        # The socket goes on.
        again = await turn(ws, input="three")
    assert again[-1]["response"]["output"][-1]["content"][0]["text"] == "second"
    assert len(fake_upstream.requests) == 2


async def test_bad_messages_get_error_events_and_the_socket_stays(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply([], ["fine"]))
    async with bridge.ws_connect("/v1/responses") as ws:
        await ws.send_str("{not json")
        assert (await receive_json(ws))["error"]["code"] == "invalid_json"
        await ws.send_bytes(b'{"type":"response.create"}')
        assert (await receive_json(ws))["error"]["code"] == "invalid_message"
        await ws.send_str(json.dumps({"type": "response.cancel"}))
        unknown = await receive_json(ws)
        assert unknown["error"]["code"] == "unknown_event" and unknown["status"] == 400
        await ws.send_str(json.dumps({"type": "response.create", "input": "no model"}))
        missing = await receive_json(ws)
        assert missing["status"] == 400 and "`model`" in missing["error"]["message"]
        await ws.send_bytes(b"")  # an empty binary frame
        assert (await receive_json(ws))["error"]["code"] == "invalid_message"
        events = await turn(ws, model="nope", input="x")
        assert events[-1]["status"] == 404 and events[-1]["error"]["code"] == "model_not_found"
        events = await turn(ws, input="x")
    assert_ends(events)


async def test_an_oversize_message_closes_the_socket_with_1009(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, websocket="max_message_bytes = 4096")
    client = await bridge_with(config, aiohttp_client)
    async with client.ws_connect("/v1/responses") as ws:
        await ws.send_str(
            json.dumps({"type": "response.create", "model": MODEL, "input": "x" * 5000})
        )
        message = await ws.receive(timeout=TIMEOUT)
        assert message.type == WSMsgType.CLOSE
        assert ws.close_code == 1009
    assert fake_upstream.requests == []


async def test_client_keys_and_origins_are_checked_before_the_upgrade(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(
        fake_upstream.url, server='allowed_origins = ["https://allowed.example"]'
    )
    client = await aiohttp_client(create_app(config, client_keys=("sekrit",)))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/responses")
    assert refused.value.status == 401
    good = {"Authorization": "Bearer sekrit"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/responses", headers={**good, "Origin": "https://evil.example"})
    assert refused.value.status == 403
    async with client.ws_connect(
        "/v1/responses", headers={**good, "Origin": "https://allowed.example"}
    ) as ws:
        events = await turn(ws, input=[DEVELOPER], generate=False)
    assert_ends(events)
    plain = await client.get("/v1/responses", headers=good)
    assert plain.status == 405
    assert (await plain.json())["error"]["code"] == "method_not_allowed"


async def test_sockets_are_bounded_in_number(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, websocket="max_connections = 2")
    client = await bridge_with(config, aiohttp_client)
    first = await client.ws_connect("/v1/responses")
    second = await client.ws_connect("/v1/responses")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/responses")
    assert refused.value.status == 426  # what makes Codex use HTTP at once
    await first.close()
    third = await asyncio.wait_for(client.ws_connect("/v1/responses"), TIMEOUT)
    await second.close()
    await third.close()


async def test_websockets_can_be_turned_off(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, websocket="enabled = false")
    client = await bridge_with(config, aiohttp_client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/responses")
    assert refused.value.status == 426  # what makes Codex use HTTP at once


async def test_a_client_leaving_mid_turn_cancels_the_upstream_request(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    reply = thinking_text_reply(["a"] * 3, ["b"] * 50)
    reply.frame_delay = 0.05
    fake_upstream.script(reply)
    ws = await bridge.ws_connect("/v1/responses")
    await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "x"}))
    while (await receive_json(ws))["type"] != "response.output_text.delta":
        pass
    await ws.close()
    await asyncio.wait_for(fake_upstream.stream_abandoned.wait(), TIMEOUT)


async def test_heartbeats_fill_a_long_upstream_silence(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.1")
    client = await bridge_with(config, aiohttp_client)
    reply = thinking_text_reply(["thinking"], ["done"])
    reply.pauses = {2: 0.5}
    fake_upstream.script(reply)
    async with client.ws_connect("/v1/responses") as ws:
        events = await turn(ws, input="x")
    kinds = [e["type"] for e in events]
    first_item = kinds.index("response.output_item.added")
    assert kinds[first_item:].count("response.in_progress") >= 2
    assert_ends(events)


async def test_shutdown_lets_the_turn_finish_then_closes_with_1001(
    fake_upstream: FakeUpstream, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    reply = thinking_text_reply(["r"], ["finished before closing"])
    reply.delay_before = 0.5
    fake_upstream.script(reply)
    server = await aiohttp_server(create_app(bridge_config(fake_upstream.url)))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.make_url("/v1/responses"))
        await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, "input": "x"}))
        assert (await receive_json(ws))["type"] == "response.created"
        closing = asyncio.ensure_future(server.close())
        events = []
        while True:
            message = await ws.receive(timeout=TIMEOUT)
            if message.type != WSMsgType.TEXT:
                break
            events.append(json.loads(message.data))
        await closing
    assert_ends(events)
    assert message.type == WSMsgType.CLOSE and ws.close_code == 1001


async def test_a_model_switch_mid_socket_starts_the_conversation_over(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """Kept messages are shaped for one provider; another model asks for everything."""
    other = '[models.other]\nprovider = "fake"\nupstream_model = "fake-thinker"'
    config = bridge_config(fake_upstream.url, extra=other)
    client = await bridge_with(config, aiohttp_client)
    fake_upstream.script(thinking_text_reply(["r"], ["one"]))
    async with client.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input="x", store=False)
        events = await turn(
            ws, model="other", input="y", previous_response_id=first[-1]["response"]["id"]
        )
    assert events[-1]["error"]["code"] == "previous_response_not_found"


@pytest.mark.parametrize("status", [500, 400])
async def test_upstream_failures_end_the_turn_as_over_sse(
    bridge: TestClient, fake_upstream: FakeUpstream, status: int
) -> None:
    fake_upstream.script(
        Reply(status=status, error_body={"error": {"message": "nope"}}),
        thinking_text_reply([], ["recovered"]),
    )
    async with bridge.ws_connect("/v1/responses") as ws:
        failed = await turn(ws, input="x")
        assert_ends(failed, "response.failed")
        assert failed[-1]["response"]["error"]["code"] == (
            "server_error" if status == 500 else "invalid_prompt"
        )
        events = await turn(ws, input="y")
    assert_ends(events)


# Continuations whose first new items touch the end of what the socket kept: a tool call
# joining the last assistant turn, reasoning that waits for the turn it belongs to, a tool
# output with an image. Each must reach the upstream exactly as a full replay does.
SHAPES: dict[str, list[Any]] = {
    "a call joins the answer": [
        {"type": "function_call", "call_id": "call_j", "name": "shell", "arguments": "{}"},
        output_of("call_j", "joined"),
    ],
    "reasoning then a call": [
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "hm"}]},
        {"type": "function_call", "call_id": "call_r", "name": "shell", "arguments": "{}"},
        output_of("call_r", "ok"),
    ],
    "a user message": [user("next")],
    "an assistant message then a user message": [
        {"type": "message", "role": "assistant", "content": "(edited)"},
        user("go on"),
    ],
}


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_continuations_of_any_shape_equal_a_full_replay(
    bridge: TestClient, fake_upstream: FakeUpstream, shape: str
) -> None:
    new_items = SHAPES[shape]
    first_input = [DEVELOPER, user("hello")]
    replies = [thinking_text_reply(["Greeting."], ["Hi!"]), thinking_text_reply(["x"], ["y"])]
    fake_upstream.script(*replies)
    async with bridge.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input=first_input, **CODEX_FIELDS)
        second = await turn(
            ws, input=new_items, previous_response_id=first[-1]["response"]["id"], **CODEX_FIELDS
        )
    assert_ends(second)
    over_socket = fake_upstream.requests[-1]["messages"]
    fake_upstream.script(thinking_text_reply(["x"], ["y"]))
    replay = [*first_input, *first[-1]["response"]["output"], *new_items]
    answer = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": replay, **CODEX_FIELDS, "stream": False}
    )
    assert answer.status == 200, await answer.text()
    assert over_socket == fake_upstream.requests[-1]["messages"]


def test_a_socket_keeps_its_conversations_within_its_bounds() -> None:
    from bridge.conversation import Prefix
    from bridge.scope import Scope
    from bridge.socket_state import SocketConversations
    from bridge.translate.messages import Continuation

    def prefix(response_id: str, root: str, size: int) -> Prefix:
        return Prefix(
            response_id=response_id,
            pieces=(b"x" * size,),
            continuation=Continuation(1, frozenset()),
            scope=Scope("c", None),
            shaped_for=(MODEL, "openai"),
            root=root,
            size=size,
        )

    kept = SocketConversations(max_bytes=1000, max_responses=4)
    kept.add(prefix("a1", "a", 300))
    kept.add(prefix("a2", "a", 400))  # the same conversation: counted once, by its largest
    kept.add(prefix("b1", "b", 500))
    assert kept.size == 900 and len(kept) == 3
    assert kept.get("a1") is not None  # now the most recently used
    kept.add(prefix("c1", "c", 200))  # over 1,000: the least recently used conversation goes
    assert kept.get("b1") is None and kept.get("a2") is not None and kept.size == 600
    for number in range(5):
        kept.add(prefix(f"d{number}", "d", 10))
    assert len(kept) == 4  # at most max_responses, oldest first
    kept.add(prefix("huge", "h", 5000))  # larger than the bound on its own: not kept
    assert kept.get("huge") is None and kept.size <= 1000


def masked_text_frame(payload: bytes) -> bytes:
    """One client text frame (clients mask theirs; the mask here is zero bytes)."""
    length = len(payload)
    if length < 126:
        header = bytes([0x81, 0x80 | length])
    elif length < 65536:
        header = bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


async def test_a_client_that_stops_reading_ends_its_turn_and_frees_the_provider(
    fake_upstream: FakeUpstream,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    state_directory: Any,
) -> None:
    import socket
    import sqlite3

    config = bridge_config(
        fake_upstream.url,
        server="client_stall_timeout = 0.5",
        upstream="max_retries = 0\nmax_connections = 1",
    )
    server = await aiohttp_server(create_app(config))
    fake_upstream.script(huge_stream(3000, 4096), thinking_text_reply([], ["next one"]))
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    try:
        await loop.sock_sendall(
            sock,
            b"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n",
        )
        handshake = await asyncio.wait_for(loop.sock_recv(sock, 1024), TIMEOUT)
        assert handshake.startswith(b"HTTP/1.1 101")
        body = json.dumps({"type": "response.create", "model": MODEL, "input": "talk"})
        await loop.sock_sendall(sock, masked_text_frame(body.encode()))
        # It never reads again. Within a few seconds its turn is over, the provider free.
        await asyncio.wait_for(fake_upstream.stream_abandoned.wait(), TIMEOUT)
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                str(server.make_url("/v1/responses")), json={"model": MODEL, "input": "x"}
            ) as response,
        ):
            answer = await response.json()
        assert answer["output"][0]["content"][0]["text"] == "next one"
    finally:
        sock.close()
    with sqlite3.connect(state_directory / "bridge.db") as db:
        rows = db.execute("SELECT status FROM responses ORDER BY created_at").fetchall()
    assert ("failed",) in rows  # the stalled turn is recorded as failed


async def test_the_next_turn_may_come_as_soon_as_the_final_event_has(
    bridge: TestClient, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The socket keeps a turn's conversation after its final event (here in a thread, as
    for a long conversation); a client answering at once is served, and continues it."""
    import time

    from bridge import ws_transport

    keep = ws_transport.conversation_after

    def slow_keep(*args: Any) -> Any:
        time.sleep(0.3)  # as long as keeping a very long conversation takes
        return keep(*args)

    monkeypatch.setattr(ws_transport, "KEEP_IN_THREAD", 0)
    monkeypatch.setattr(ws_transport, "conversation_after", slow_keep)
    fake_upstream.script(
        tool_call_reply("Plan.", [("call_1", "shell", ['{"cmd":"ls"}'])]),
        thinking_text_reply(["Read."], ["Done."]),
    )
    async with bridge.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input=[user("go")], **CODEX_FIELDS)
        events = await turn(
            ws,
            input=[output_of("call_1", "a")],
            previous_response_id=first[-1]["response"]["id"],
            **CODEX_FIELDS,
        )
    assert_ends(events)
    roles = [m["role"] for m in fake_upstream.requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "tool"]  # continued from what was kept


async def test_a_peer_that_answers_no_ping_is_dropped(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, websocket="ping_interval = 0.2")
    client = await bridge_with(config, aiohttp_client)
    # autoping off: the client takes the server's pings and never answers them.
    async with client.ws_connect("/v1/responses", autoping=False) as ws:
        kinds = []
        for _ in range(10):  # bounded: pings, then the close
            message = await ws.receive(timeout=TIMEOUT)
            kinds.append(message.type)
            if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                break
    assert WSMsgType.PING in kinds
    assert kinds[-1] in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)


async def test_truncation_auto_shortens_a_conversation_kept_on_the_socket(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """A continued turn names the socket's conversation; on the provider's length refusal
    the whole of it (kept part included) loses its oldest turns, the instructions stay."""
    fake_upstream.script(
        thinking_text_reply(["First."], ["one"]),
        thinking_text_reply(["Second."], ["two"]),
        OVERFLOW,
        thinking_text_reply(["Third."], ["three, shorter"]),
    )
    fields = {"instructions": "Be brief.", "store": False, "stream": True}
    async with bridge.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input=[user("question one " + "x" * 400)], **fields)
        second = await turn(
            ws,
            input=[user("question two " + "y" * 400)],
            previous_response_id=first[-1]["response"]["id"],
            **fields,
        )
        third = await turn(
            ws,
            input=[user("question three")],
            previous_response_id=second[-1]["response"]["id"],
            truncation="auto",
            **fields,
        )
    assert_ends(third)
    assert third[-1]["response"]["truncation"] == "auto"
    refused, retried = fake_upstream.requests[2], fake_upstream.requests[3]
    assert [m["content"] for m in refused["messages"]][-1] == "question three"
    assert len(retried["messages"]) < len(refused["messages"])
    assert retried["messages"][0] == {"role": "system", "content": "Be brief."}
    assert retried["messages"][-1]["content"] == "question three"
    assert "question one" not in str(retried["messages"])


@pytest.mark.parametrize("failure", ["an output that answers no call", "the upstream refuses"])
async def test_a_failed_continuation_forgets_the_response_it_continued(
    bridge: TestClient, fake_upstream: FakeUpstream, failure: str
) -> None:
    """The Open Responses specification's MUST: a continuation that fails (4xx or 5xx)
    evicts its previous_response_id from the socket, so a store: false chain cannot go on
    from it (previous_response_not_found); the socket itself goes on."""
    fake_upstream.script(thinking_text_reply(["ok"], ["OK."]))
    if failure == "the upstream refuses":
        fake_upstream.script(Reply(status=400, error_body={"error": {"message": "nope"}}))
    fake_upstream.script(thinking_text_reply([], ["fresh"]))
    async with bridge.ws_connect("/v1/responses") as ws:
        first = await turn(ws, input=[user("Remember: ember.")], store=False)
        previous = first[-1]["response"]["id"]
        if failure == "the upstream refuses":
            failed = await turn(
                ws, input=[user("go on")], previous_response_id=previous, store=False
            )
            assert failed[-1]["type"] == "response.failed"
        else:
            failed = await turn(
                ws,
                input=[output_of("call_missing", "x")],
                previous_response_id=previous,
                store=False,
            )
            assert failed[-1]["type"] == "error"
            assert failed[-1]["status"] == 400
            assert "call_missing" in failed[-1]["error"]["message"]
            assert failed[-1]["error"]["param"] == "input[0].call_id"
        retried = await turn(ws, input=[user("stale?")], previous_response_id=previous, store=False)
        assert retried[-1]["type"] == "error"
        assert retried[-1]["error"]["code"] == "previous_response_not_found"
        fresh = await turn(ws, input=[user("start over")], store=False)
    assert_ends(fresh)
