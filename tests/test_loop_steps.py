"""Bounded work per step of the event loop: a fast upstream's reads hold hundreds of
events, and one stream translating them all at once would keep every other stream waiting
(issue 25). So would one turn comparing a long replayed conversation with the one it
remembers."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import orjson

from bridge.body import UpstreamBody
from bridge.relay import STEP_EVENTS, pump
from bridge.store.replays import COMPARED_PER_STEP, ReplayCache
from bridge.translate.context import ItemDigests
from bridge.upstream import UpstreamClient
from bridge.wire.events import OutputTextDelta, ResponseEvent
from bridge.wire.responses import encode_items
from tests.conftest import bridge_config
from tests.fake_upstream import DONE, FakeUpstream, Reply, chunk, sse
from tests.translator_runs import translator

TOKENS = 5000


class LoopSteps:
    """Counts the event loop's steps while it is open: a task that adds one and yields,
    over and over."""

    def __init__(self) -> None:
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopSteps:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _tick(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


async def test_other_tasks_run_at_least_every_step_of_upstream_events(
    fake_upstream: FakeUpstream,
) -> None:
    # The whole answer in one write: the reads the bridge gets are as full as they can be.
    frames = [sse(chunk({"content": "tok "})) for _ in range(TOKENS)]
    fake_upstream.script(Reply([b"".join([*frames, sse(chunk(finish_reason="stop")), DONE])]))
    config = bridge_config(fake_upstream.url)
    steps = LoopSteps()

    # Upstream chunks translated in each pass of the loop (each tick of the other task).
    per_tick: dict[int, int] = {}

    async def send(produce: object) -> None:
        assert callable(produce)
        events: list[ResponseEvent] = produce()
        for event in events:
            if isinstance(event, OutputTextDelta):
                per_tick[steps.count] = per_tick.get(steps.count, 0) + event.delta.count("tok ")

    turn = translator()
    turn.start()
    body = UpstreamBody.of(orjson.dumps({"model": "m", "messages": [], "stream": True}))
    async with steps, aiohttp.ClientSession() as session:
        upstream = UpstreamClient(session, "fake", config.providers["fake"], None, config.upstream)
        assert await pump(upstream, body, turn, send) is None
    assert sum(per_tick.values()) == TOKENS
    assert max(per_tick.values()) <= STEP_EVENTS, per_tick


async def test_a_replayed_conversation_is_matched_a_slice_of_items_per_loop_step() -> None:
    # A long conversation remembered, then replayed with one more item: the comparison that
    # finds its base lets other tasks run between slices instead of holding the loop for
    # the whole input (1.6 ms for a 5 MB one).
    cache = ReplayCache()
    history = [
        {"type": "message", "role": "user", "content": f"turn {n} " + "x" * 100}
        for n in range(10 * COMPARED_PER_STEP)
    ]
    digests = ItemDigests().extend(encode_items(history))
    cache.remember("k:a", "conv", "resp_1", history, digests)
    replayed = msgspec.json.decode(
        msgspec.json.encode([*history, {"role": "user", "content": "more"}])
    )
    async with LoopSteps() as loop_steps:
        started = loop_steps.count
        found = await cache.match("k:a", "conv", replayed)
        steps = loop_steps.count - started
    assert found is not None
    assert found.base == ("resp_1", len(history))
    assert found.encoded[: len(history)] == [None] * len(history)
    assert found.digests.digests == ItemDigests().extend(encode_items(replayed)).digests
    assert steps >= 9

    # A difference in the last slice is still found: no base.
    edited = [*replayed[:-2], {**replayed[-2], "content": "changed"}, replayed[-1]]
    assert await cache.match("k:a", "conv", edited) is None


async def test_an_entry_replaced_while_it_is_compared_gives_the_base_first_seen() -> None:
    cache = ReplayCache()
    history = [{"role": "user", "content": f"turn {n}"} for n in range(4 * COMPARED_PER_STEP)]
    cache.remember("k:a", None, "resp_1", history, ItemDigests().extend(encode_items(history)))
    longer = [*history, {"role": "user", "content": "next"}]
    matching = asyncio.create_task(
        cache.match("k:a", None, [*longer, {"role": "user", "content": "x"}])
    )
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not matching.done()  # halfway through its slices
    # Another turn of the conversation is remembered meanwhile.
    cache.remember("k:a", None, "resp_2", longer, ItemDigests().extend(encode_items(longer)))
    found = await matching
    assert found is not None and found.base == ("resp_1", len(history))
    again = await cache.match("k:a", None, [*longer, {"role": "user", "content": "x"}])
    assert again is not None and again.base == ("resp_2", len(longer))
