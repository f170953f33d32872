"""Bounded work per step of the event loop: a fast upstream's reads hold hundreds of
events, and one stream translating them all at once would keep every other stream waiting
(issue 25)."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from bridge.body import UpstreamBody
from bridge.relay import STEP_EVENTS, pump
from bridge.upstream import UpstreamClient
from bridge.wire.events import OutputTextDelta, ResponseEvent
from tests.conftest import bridge_config
from tests.fake_upstream import DONE, FakeUpstream, Reply, chunk, sse
from tests.translator_runs import translator

TOKENS = 5000


async def test_other_tasks_run_at_least_every_step_of_upstream_events(
    fake_upstream: FakeUpstream,
) -> None:
    # The whole answer in one write: the reads the bridge gets are as full as they can be.
    frames = [sse(chunk({"content": "tok "})) for _ in range(TOKENS)]
    fake_upstream.script(Reply([b"".join([*frames, sse(chunk(finish_reason="stop")), DONE])]))
    config = bridge_config(fake_upstream.url)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    # Upstream chunks translated in each pass of the loop (each tick of the other task).
    per_tick: dict[int, int] = {}

    async def send(produce: object) -> None:
        assert callable(produce)
        events: list[ResponseEvent] = produce()
        for event in events:
            if isinstance(event, OutputTextDelta):
                per_tick[ticks] = per_tick.get(ticks, 0) + event.delta.count("tok ")

    turn = translator()
    turn.start()
    body = UpstreamBody.of(orjson.dumps({"model": "m", "messages": [], "stream": True}))
    ticker = asyncio.create_task(tick())
    try:
        async with aiohttp.ClientSession() as session:
            upstream = UpstreamClient(
                session, "fake", config.providers["fake"], None, config.upstream
            )
            assert await pump(upstream, body, turn, send) is None
    finally:
        ticker.cancel()
    assert sum(per_tick.values()) == TOKENS
    assert max(per_tick.values()) <= STEP_EVENTS, per_tick
