"""Memory and time stay bounded whatever a client or an upstream sends: a streamed answer's
size, request bodies in flight, shares of the shared limits per client key, log lines per
request, and sockets that stop reading. (How much memory and loop time the large inputs
cost is measured by bench/large_inputs.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import socket
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from bridge import background
from bridge.app import create_app
from bridge.sse import SSEParser
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply
from tests.processes import raw_post

ClientFactory = Callable[..., Awaitable[TestClient]]
ServerFactory = Callable[..., Awaitable[TestServer]]
TIMEOUT = 20.0


async def read_events(response: ClientResponse) -> list[dict[str, Any]]:
    parser = SSEParser()
    events = parser.feed(await response.read()) + parser.finish()
    return [orjson.loads(event.data) for event in events if event.data != b"[DONE]"]


async def test_an_endless_streamed_answer_is_cut_off_and_the_upstream_closed(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """Tool-call arguments that never end took RSS to 3.2 GB, kept after the turn:
    max_answer_bytes covered JSON answers only."""
    config = bridge_config(fake_upstream.url, upstream="max_retries = 0\nmax_answer_bytes = 65536")
    client = await aiohttp_client(create_app(config))
    reply = tool_call_reply("", [("call_1", "write_file", ['{"text": "' + "x" * 1024] * 5000)])
    reply.frame_delay = 0.001
    fake_upstream.script(reply)
    response = await asyncio.wait_for(
        client.post("/v1/responses", json={"model": MODEL, "input": "go", "stream": True}),
        TIMEOUT,
    )
    events = await asyncio.wait_for(read_events(response), TIMEOUT)
    assert events[-1]["type"] == "response.failed", events[-1]
    error = events[-1]["response"]["error"]
    assert "max_answer_bytes" in error["message"]
    await asyncio.wait_for(fake_upstream.stream_abandoned.wait(), TIMEOUT)


async def test_a_background_log_keeps_no_heartbeats_and_is_stored_compressed(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, state_directory: Path
) -> None:
    """52 MB of reasoning became a 262-367 MB stored log (and 1.3-1.8 GB of memory): every
    heartbeat carried the whole output so far. Followers now get the stream's ping comments."""
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.05")
    client = await aiohttp_client(create_app(config))
    reply = thinking_text_reply(["thinking " * 2000] * 40, ["done"])
    reply.pauses = {5: 0.3, 20: 0.3}  # silences the heartbeats filled
    fake_upstream.script(reply)
    body = {"model": MODEL, "input": "x", "background": True, "stream": True}
    live = await asyncio.wait_for(client.post("/v1/responses", json=body), TIMEOUT)
    raw = await asyncio.wait_for(live.read(), TIMEOUT)
    assert b": ping\n\n" in raw  # the silences were filled
    parser = SSEParser()
    events = [orjson.loads(e.data) for e in parser.feed(raw) if e.data != b"[DONE]"]
    kinds = [event["type"] for event in events]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.in_progress") == 1  # no heartbeat among them
    response_id = events[0]["response"]["id"]
    replay = await client.get(f"/v1/responses/{response_id}?stream=true&starting_after=3")
    replayed = await read_events(replay)
    assert replayed == events[4:]
    with sqlite3.connect(state_directory / "bridge.db") as db:
        (stored,) = db.execute(
            "SELECT frames FROM response_events WHERE response_id = ?", (response_id,)
        ).fetchone()
    assert stored.startswith(b"\x1f\x8b")  # gzip
    assert len(stored) < len(raw) // 10


async def test_a_background_run_whose_events_outgrow_the_log_ends_failed(
    fake_upstream: FakeUpstream,
    aiohttp_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An answer in very many tiny pieces makes one event each: the log is bounded too (the
    limit is 256 MiB; lowered here to keep the test small)."""
    monkeypatch.setattr(background, "MAX_LOG_BYTES", 40_000)
    client = await aiohttp_client(create_app(bridge_config(fake_upstream.url)))
    reply = thinking_text_reply([], ["a"] * 5000)
    reply.frame_delay = 0.0005  # one upstream read, so one event, per piece
    fake_upstream.script(reply)
    body = {"model": MODEL, "input": "x", "background": True, "stream": True}
    response = await asyncio.wait_for(client.post("/v1/responses", json=body), TIMEOUT)
    events = await asyncio.wait_for(read_events(response), TIMEOUT)
    assert events[-1]["type"] == "response.failed"
    assert "events passed" in events[-1]["response"]["error"]["message"]
    await asyncio.wait_for(fake_upstream.stream_abandoned.wait(), TIMEOUT)
    stored = await client.get(f"/v1/responses/{events[0]['response']['id']}")
    assert (await stored.json())["status"] == "failed"


async def _start_post(port: int, path: str, declared: int) -> socket.socket:
    """A POST whose headers promise `declared` bytes of JSON body, and only a part sent."""
    return await raw_post(port, path, b"{", declared=declared)


async def test_request_bodies_in_flight_share_one_budget(
    fake_upstream: FakeUpstream, aiohttp_server: ServerFactory
) -> None:
    """Twelve 63 MB bodies at once peaked at 1.2 GB: nothing bounded the bodies in flight."""
    config = bridge_config(
        fake_upstream.url,
        server="max_request_bytes = 1048576\nmax_request_bytes_in_flight = 2097152",
    )
    server = await aiohttp_server(create_app(config))
    url = str(server.make_url("/v1/responses"))
    half = {"model": MODEL, "input": "x" * 500_000}
    held = [await _start_post(server.port, "/v1/responses", 900_000) for _ in range(2)]
    try:
        async with aiohttp.ClientSession() as session:
            conversations = str(server.make_url("/v1/conversations"))
            items = {"items": [{"role": "user", "content": "y" * 500_000}]}
            for _ in range(50):  # until the bridge has taken both requests' headers
                async with session.post(conversations, json=items) as refused:
                    if refused.status == 503:
                        break
                await asyncio.sleep(0.05)
            async with session.post(url, json=half) as refused:
                assert refused.status == 503
                error = (await refused.json())["error"]
                assert refused.headers["Retry-After"] == "1"
            assert error["code"] == "server_is_overloaded"
            assert "max_request_bytes_in_flight" in error["message"]
            for sock in held:
                sock.close()
            fake_upstream.script(thinking_text_reply([], ["room again"]))
            for _ in range(50):  # until the bridge has seen them go
                async with session.post(url, json=half) as answered:
                    if answered.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert answered.status == 200
    finally:
        for sock in held:
            sock.close()
    assert len(fake_upstream.requests) == 1


async def test_a_conversation_body_is_read_within_the_timeout_and_the_size_limit(
    fake_upstream: FakeUpstream, aiohttp_server: ServerFactory
) -> None:
    """The Conversations endpoints read bodies without a timeout: a client trickling one
    held its request open for ever."""
    config = bridge_config(
        fake_upstream.url, server="body_timeout = 0.3\nmax_request_bytes = 1048576"
    )
    server = await aiohttp_server(create_app(config))
    loop = asyncio.get_running_loop()
    for path in ("/v1/conversations", "/v1/conversations/conv_x/items"):
        sock = await _start_post(server.port, path, 1000)
        try:
            answer = await asyncio.wait_for(loop.sock_recv(sock, 4096), TIMEOUT)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer
    async with aiohttp.ClientSession() as session:
        too_big = await session.post(
            str(server.make_url("/v1/conversations")),
            data=io.BytesIO(
                orjson.dumps({"items": [{"role": "user", "content": "z" * 1_100_000}]})
            ),
            headers={"Content-Type": "application/json"},
        )
    assert too_big.status == 413
    assert (await too_big.json())["error"]["code"] == "request_too_large"


KEY_A = {"Authorization": "Bearer key-a"}
KEY_B = {"Authorization": "Bearer key-b"}


async def test_each_client_key_gets_its_share_of_background_runs_and_sockets(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """One key could fill max_background and every WebSocket slot: the others got 429 and
    426 until it was done."""
    config = bridge_config(
        fake_upstream.url,
        server="max_background = 2",
        websocket="max_connections = 2",
    )
    client = await aiohttp_client(create_app(config, client_keys=("key-a", "key-b")))
    slow = thinking_text_reply([], ["late"])
    slow.delay_before = 30.0  # running until cancelled
    fake_upstream.responder = lambda body: slow
    body = {"model": MODEL, "input": "x", "background": True}
    first = await (await client.post("/v1/responses", json=body, headers=KEY_A)).json()
    second = await client.post("/v1/responses", json=body, headers=KEY_A)
    assert second.status == 429
    assert "share" in (await second.json())["error"]["message"]
    other = await client.post("/v1/responses", json=body, headers=KEY_B)
    assert other.status == 200, await other.text()
    for started, headers in ((first, KEY_A), (await other.json(), KEY_B)):
        await client.post(f"/v1/responses/{started['id']}/cancel", headers=headers)

    async with client.ws_connect("/v1/responses", headers=KEY_A):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect("/v1/responses", headers=KEY_A)
        assert refused.value.status == 426
        async with client.ws_connect("/v1/responses", headers=KEY_B):
            pass


async def test_a_client_key_cannot_push_the_others_turns_out_of_the_trace_ring(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, debug="keep_turns = 4")
    client = await aiohttp_client(create_app(config, client_keys=("key-a", "key-b")))
    fake_upstream.responder = lambda body: thinking_text_reply([], ["ok"])
    body = {"model": MODEL, "input": "x"}
    mine = await (await client.post("/v1/responses", json=body, headers=KEY_B)).json()
    for _ in range(6):
        await (await client.post("/v1/responses", json=body, headers=KEY_A)).read()
    kept_b = (await (await client.get("/debug/turns", headers=KEY_B)).json())["data"]
    assert [turn["id"] for turn in kept_b] == [mine["id"]]
    kept_a = (await (await client.get("/debug/turns", headers=KEY_A)).json())["data"]
    assert len(kept_a) == 3


def _client_text_frame(payload: bytes) -> bytes:
    """One masked client text frame (a zero mask)."""
    length = len(payload)
    if length < 126:
        header = bytes([0x81, 0x80 | length])
    elif length < 65536:
        header = bytes([0x81, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


async def test_a_socket_that_floods_invalid_messages_and_never_reads_is_reclaimed(
    fake_upstream: FakeUpstream, aiohttp_server: ServerFactory
) -> None:
    """Error replies outside a turn had no write timeout: the bridge waited for ever to
    send one, and the socket's slot stayed taken."""
    config = bridge_config(
        fake_upstream.url,
        server="client_stall_timeout = 0.3",
        websocket="max_connections = 1",
    )
    server = await aiohttp_server(create_app(config))
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", server.port))
    await loop.sock_sendall(
        sock,
        b"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n",
    )
    assert (await asyncio.wait_for(loop.sock_recv(sock, 1024), TIMEOUT)).startswith(b"HTTP/1.1 101")
    # Each reply names the unknown event type: 30 KB of error back per message.
    flood = _client_text_frame(orjson.dumps({"type": "x" * 30_000}))

    async def send_forever() -> None:
        with contextlib.suppress(OSError):
            for _ in range(2000):
                await loop.sock_sendall(sock, flood)

    sender = asyncio.create_task(send_forever())
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.ws_connect(server.make_url("/v1/responses")):
                        break
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 426
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the flooding socket kept its slot")
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        sock.close()


async def test_one_request_writes_one_warning_per_kind_of_item_it_leaves_out(
    bridge: TestClient, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    """One WARNING line per item left out (a stored tool output answering no call, a
    compaction item from elsewhere): a request of 100,000 of them wrote 100,000 lines."""
    conversation = await (await bridge.post("/v1/conversations", json={})).json()
    for batch in range(3):
        orphans = [
            {"type": "function_call_output", "call_id": f"call_{batch}_{n}", "output": "x"}
            for n in range(20)
        ]
        added = await bridge.post(
            f"/v1/conversations/{conversation['id']}/items", json={"items": orphans}
        )
        assert added.status == 200, await added.text()
    foreign = [{"type": "compaction", "encrypted_content": f"gAAAA{n}"} for n in range(500)]
    fake_upstream.script(thinking_text_reply([], ["ok"]))
    with caplog.at_level(logging.WARNING):
        response = await bridge.post(
            "/v1/responses",
            json={
                "model": MODEL,
                "conversation": conversation["id"],
                "input": [*foreign, {"role": "user", "content": "hi"}],
            },
        )
        assert response.status == 200, await response.text()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2, warnings[:3]
    assert "60 stored tool output(s)" in warnings[0]
    assert "call_0_0, call_0_1, call_0_2, call_0_3, call_0_4 and 55 more" in warnings[0]
    assert "500 compaction item(s)" in warnings[1]
