"""Memory and time stay bounded whatever a client or an upstream sends: a streamed answer's
size, request bodies in flight, shares of the shared limits per client key, log lines per
request, and sockets that stop reading. (How much memory and loop time the large inputs
cost is measured by bench/large_inputs.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from bridge import background
from bridge.app import create_app
from bridge.sse import SSEParser
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply

ClientFactory = Callable[..., Awaitable[TestClient]]
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
    heartbeat carried the whole output so far. Followers now get keep-alive comments."""
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.05")
    client = await aiohttp_client(create_app(config))
    reply = thinking_text_reply(["thinking " * 2000] * 40, ["done"])
    reply.pauses = {5: 0.3, 20: 0.3}  # silences the heartbeats filled
    fake_upstream.script(reply)
    body = {"model": MODEL, "input": "x", "background": True, "stream": True}
    live = await asyncio.wait_for(client.post("/v1/responses", json=body), TIMEOUT)
    raw = await asyncio.wait_for(live.read(), TIMEOUT)
    assert b": keep-alive\n\n" in raw  # the silences were filled
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
