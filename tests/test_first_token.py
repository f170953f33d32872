"""A turn's request goes upstream before the client's stream opens (bridge.turn.Turn.run; the
time it saves is bench/run.py's "added first text delta"): a request started that early
never keeps one of the provider's connections once its turn is gone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import orjson
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.body import UpstreamBody
from bridge.upstream import UpstreamClient
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, Reply, thinking_text_reply
from tests.processes import raw_post

ClientFactory = Callable[..., Awaitable[TestClient]]
ServerFactory = Callable[..., Awaitable[TestServer]]


async def test_a_client_gone_at_once_leaves_the_provider_its_connection(
    fake_upstream: FakeUpstream, aiohttp_server: ServerFactory
) -> None:
    """With one connection to the provider, a client that hangs up while its early request
    waits for the provider must not keep that connection from the next turn."""
    config = bridge_config(fake_upstream.url, upstream="max_retries = 0\nmax_connections = 1")
    server = await aiohttp_server(create_app(config))
    fake_upstream.script(
        Reply(thinking_text_reply([], ["never read"]).frames, delay_before=0.5),
        thinking_text_reply([], ["next one"]),
    )
    payload = json.dumps({"model": MODEL, "input": "talk", "stream": True}).encode()
    sock = await raw_post(server.port, "/v1/responses", payload)
    await asyncio.wait_for(fake_upstream.arrived.wait(), 10)
    sock.close()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            str(server.make_url("/v1/responses")), json={"model": MODEL, "input": "x"}
        ) as response,
    ):
        answer = await asyncio.wait_for(response.json(), 10)
    assert answer["output"][0]["content"][0]["text"] == "next one"


async def test_a_request_started_early_and_never_taken_gives_its_connection_back(
    fake_upstream: FakeUpstream,
) -> None:
    """A turn that ends before its first attempt (its client gone, the bridge stopping)
    abandons the request it started: cancelled while it waits, or its answer closed."""
    config = bridge_config(fake_upstream.url, upstream="max_connections = 1")
    fake_upstream.responder = lambda body: thinking_text_reply([], ["ok"])
    body = UpstreamBody.of(orjson.dumps({"model": "m", "messages": [], "stream": True}))
    async with aiohttp.ClientSession() as session:
        upstream = UpstreamClient(session, "fake", config.providers["fake"], None, config.upstream)
        waiting = upstream.send(body)
        waiting.abandon()  # still waiting for its connection: cancelled
        answered = upstream.send(body)
        await asyncio.wait_for(fake_upstream.arrived.wait(), 10)
        await asyncio.sleep(0.1)  # its answer's head is in
        answered.abandon()  # answered and never read: closed
        async with asyncio.timeout(10), upstream.stream(body) as response:
            assert b"ok" in await response.read()
    assert len(fake_upstream.requests) == 2
