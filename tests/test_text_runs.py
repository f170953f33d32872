"""The relay takes consecutive chunks that hold only text in as one
(bridge.relay_steps.translate): whatever the chunks were cut like, the answer is the one the
translator gives chunk by chunk, <think> blocks and DSML tool-call markup included, and an
error after a run of text still comes after that text."""

from __future__ import annotations

import random
from typing import Any

import aiohttp
import msgspec
import orjson

from bridge.body import UpstreamBody
from bridge.relay import pump
from bridge.upstream import UpstreamClient
from bridge.wire.chat import CHUNK_DECODER
from bridge.wire.events import OutputTextDelta
from tests.conftest import bridge_config
from tests.fake_upstream import DONE, FakeUpstream, Reply, chunk, sse
from tests.translator_runs import translator

DSML = (
    "Let me check.\n"
    "<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="exec_command">\n'
    '<｜DSML｜parameter name="cmd" string="true">ls -la</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>"
)
ANSWER = "<think>First the files, then the size.</think>Here goes: " + "word " * 300 + DSML


def pieces(text: str, seed: int) -> list[str]:
    """`text` cut into runs of 1 to 7 characters."""
    rng = random.Random(seed)
    cut, out = 0, []
    while cut < len(text):
        size = rng.randint(1, 7)
        out.append(text[cut : cut + size])
        cut += size
    return out


def stream_of(texts: list[str]) -> list[dict[str, Any]]:
    """Chat chunks: a role chunk, the text, a reasoning_content chunk amid it, the finish
    and the usage."""
    middle = len(texts) // 2
    chunks: list[dict[str, Any]] = [{"choices": [{"delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{"choices": [{"delta": {"content": t}}]} for t in texts[:middle]]
    chunks.append({"choices": [{"delta": {"reasoning_content": "(a late thought)"}}]})
    chunks += [{"choices": [{"delta": {"content": t}}]} for t in texts[middle:]]
    chunks.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}})
    return chunks


def without_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k not in ("id", "call_id")}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


async def relayed(fake_upstream: FakeUpstream, frames: list[bytes], *, paced: bool = False) -> Any:
    """What the relay makes of `frames` sent in one write (or, `paced`, one at a time): the
    error it ended with, the response's output, and the text of the deltas it sent."""
    fake_upstream.script(Reply(frames, frame_delay=0.001) if paced else Reply([b"".join(frames)]))
    config = bridge_config(fake_upstream.url)
    turn = translator()
    turn.start()
    sent: list[str] = []

    async def send(produce: Any) -> None:
        sent.extend(e.delta for e in produce() if isinstance(e, OutputTextDelta))

    body = UpstreamBody.of(orjson.dumps({"model": "m", "messages": [], "stream": True}))
    async with aiohttp.ClientSession() as session:
        upstream = UpstreamClient(session, "fake", config.providers["fake"], None, config.upstream)
        error = await pump(upstream, body, turn, send)
    if error is None:
        turn.take()
        turn.finish()
    return error, without_ids(msgspec.to_builtins(turn.response.output)), "".join(sent)


def chunk_by_chunk(chunks: list[dict[str, Any]]) -> Any:
    turn = translator()
    turn.start()
    for payload in chunks:
        turn.add(CHUNK_DECODER.decode(orjson.dumps(payload)))
    turn.take()
    turn.finish()
    return without_ids(msgspec.to_builtins(turn.response.output))


async def assert_answer_as_chunk_by_chunk(
    fake_upstream: FakeUpstream, seed: int, *, paced: bool = False
) -> None:
    """ANSWER cut the seed's way, relayed: the output the translator gives chunk by chunk,
    with its reasoning, text and the call the DSML markup held."""
    chunks = stream_of(pieces(ANSWER, seed))
    frames = [sse(payload) for payload in chunks] + [DONE]
    error, output, _ = await relayed(fake_upstream, frames, paced=paced)
    assert error is None
    assert output == chunk_by_chunk(chunks)
    kinds = [item["type"] for item in output]
    assert kinds == ["reasoning", "message", "reasoning", "message", "function_call"], kinds


async def test_text_runs_give_the_answer_chunk_by_chunk_gives(
    fake_upstream: FakeUpstream,
) -> None:
    for seed in range(5):
        await assert_answer_as_chunk_by_chunk(fake_upstream, seed)


async def test_text_read_chunk_by_chunk_gives_the_answer_chunk_by_chunk_gives(
    fake_upstream: FakeUpstream,
) -> None:
    """Read one chunk at a time, most reads are plain text for an open message, made into
    their delta at once (StreamTranslator.text_now); the <think> block and the DSML markup
    must still be found when they come that way."""
    await assert_answer_as_chunk_by_chunk(fake_upstream, 7, paced=True)


async def test_an_error_after_a_run_of_text_comes_after_that_text(
    fake_upstream: FakeUpstream,
) -> None:
    texts = ["one ", "two ", "three"]
    frames = [sse(chunk({"content": t})) for t in texts] + [b"data: {not json\n\n", DONE]
    # The first text leaves alone (time to first token); the rest is a run.
    error, _, text = await relayed(fake_upstream, frames)
    assert error is not None and "malformed" in error.message
    assert text == "one two three"
