"""Upstream reads written to the client from the read's own callback (bridge.direct,
bridge.relay._Relay): the same events as the awaited path whenever the client or the
emitter cannot take them at once, the upstream's silence still watched, and the connection
still pooled afterwards (issue 25)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import StreamReader, web
from aiohttp.test_utils import TestClient

from bridge import direct
from bridge.app import create_app
from bridge.body import UpstreamBody
from bridge.emitter import DirectSink, Emitter
from bridge.relay import pump
from bridge.sse import SSEParser
from bridge.upstream import UpstreamClient
from bridge.wire.events import OutputTextDelta, ResponseEvent
from bridge.ws_transport import text_frame
from tests.conftest import MODEL, assert_ends, bridge_config, decode_stream, read_events
from tests.fake_upstream import FakeUpstream, Reply, thinking_text_reply, tool_call_reply
from tests.translator_runs import translator
from tests.websocket_client import turn as ws_turn

ClientFactory = Any

WORDS = [f"w{n} " for n in range(120)]


class Sink(DirectSink):
    """A client's side of the emitter: takes events at once when `ready` says so (`ready`
    asks in a row of every 10, from a point the seed picks), else through the awaited
    write."""

    def __init__(self, ready: int, seed: int) -> None:
        self.events: list[ResponseEvent] = []
        self.at_once = 0
        self.awaited = 0
        self._answers = [True] * ready + [False] * (10 - ready)
        self._asked = random.Random(seed).randrange(10)

    async def __call__(self, events: list[ResponseEvent]) -> None:
        self.awaited += 1
        self.events += events
        await asyncio.sleep(0)

    def ready(self) -> bool:
        self._asked += 1
        return self._answers[self._asked % 10]

    def write_now(self, events: list[ResponseEvent]) -> None:
        self.at_once += 1
        self.events += events


def shape(events: list[ResponseEvent]) -> tuple[list[str], str]:
    """The event types in order (a run of text deltas as one) and the text they carry."""
    kinds: list[str] = []
    for event in events:
        kind = type(event).__name__
        if not (kinds and kinds[-1] == kind == "OutputTextDelta"):
            kinds.append(kind)
    text = "".join(e.delta for e in events if isinstance(e, OutputTextDelta))
    return kinds, text


async def relayed(
    fake_upstream: FakeUpstream, reply: Reply, sink: Sink, *, direct: bool
) -> tuple[Any, Sink]:
    fake_upstream.script(reply)
    config = bridge_config(fake_upstream.url)
    turn = translator()
    emitter = Emitter(sink, turn, None)
    await emitter.send(turn.start)
    body = UpstreamBody.of(orjson.dumps({"model": "m", "messages": [], "stream": True}))
    async with aiohttp.ClientSession() as session:
        upstream = UpstreamClient(session, "fake", config.providers["fake"], None, config.upstream)
        error = await pump(upstream, body, turn, emitter.send, direct=emitter if direct else None)
    if error is None:
        await emitter.send(turn.close)
    return error, sink


def text_of(events: list[dict[str, Any]]) -> str:
    """The text a client's output_text deltas add up to."""
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


async def post_stream(client: TestClient) -> list[dict[str, Any]]:
    """A streamed turn through the bridge; its events."""
    response = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True}
    )
    return await read_events(response)


async def stream_words(
    client: TestClient,
    fake_upstream: FakeUpstream,
    words: list[str],
    *,
    frame_delay: float = 0.002,
    pauses: dict[int, float] | None = None,
) -> list[dict[str, Any]]:
    """A streamed turn whose upstream sends `words` a frame at a time (`frame_delay`
    apart, so the bridge reads them one by one); its events."""
    reply = thinking_text_reply([], words)
    reply.frame_delay = frame_delay
    reply.pauses = pauses or {}
    fake_upstream.script(reply)
    return await post_stream(client)


def paced(reply: Reply, seed: int) -> Reply:
    """`reply` with short pauses at random frames, so the bridge reads it in many pieces."""
    rng = random.Random(seed)
    reply.pauses = {i: 0.002 for i in range(len(reply.frames)) if rng.random() < 0.4}
    return reply


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ready", [10, 7, 3])
async def test_events_written_at_once_are_the_events_the_awaited_path_writes(
    fake_upstream: FakeUpstream, seed: int, ready: int
) -> None:
    reply = thinking_text_reply(["think ", "more"], WORDS)
    error, awaited = await relayed(fake_upstream, paced(reply, seed), Sink(0, seed), direct=False)
    assert error is None
    reply = thinking_text_reply(["think ", "more"], WORDS)
    error, mixed = await relayed(fake_upstream, paced(reply, seed), Sink(ready, seed), direct=True)
    assert error is None
    assert mixed.at_once > 0  # the callback's path was taken
    if ready < 10:
        assert mixed.awaited > 2  # ... and so was the awaited one, in between
    assert shape(mixed.events) == shape(awaited.events)
    assert shape(mixed.events)[1] == "".join(WORDS)
    # Numbered in the order they left, with no gap.
    assert [e.sequence_number for e in mixed.events] == list(range(len(mixed.events)))


async def test_tool_calls_and_an_error_mid_stream_leave_the_same_way(
    fake_upstream: FakeUpstream,
) -> None:
    reply = tool_call_reply("plan", [("call_1", "exec", ['{"cmd"', ': "ls"}'])], text="Let me")
    error, awaited = await relayed(fake_upstream, paced(reply, 1), Sink(0, 1), direct=False)
    reply = tool_call_reply("plan", [("call_1", "exec", ['{"cmd"', ': "ls"}'])], text="Let me")
    error2, mixed = await relayed(fake_upstream, paced(reply, 1), Sink(6, 1), direct=True)
    assert error is None and error2 is None
    assert shape(mixed.events) == shape(awaited.events)

    broken = Reply([*thinking_text_reply([], WORDS[:20]).frames[:15], b"data: {not json\n\n"])
    error, sink = await relayed(fake_upstream, paced(broken, 2), Sink(10, 2), direct=True)
    assert error is not None and "malformed" in error.message
    assert sink.at_once > 0
    assert shape(sink.events)[1] == "".join(WORDS[:14])  # all of it before the error


async def test_a_silence_mid_stream_fails_within_the_idle_timeout(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """While reads are taken in their callback, aiohttp's per-read timer is off and the
    relay's own watch (one timer) stands in for it."""
    config = bridge_config(fake_upstream.url, upstream="idle_timeout = 0.5\nmax_retries = 0")
    client: TestClient = await aiohttp_client(create_app(config))
    loop = asyncio.get_running_loop()
    started = loop.time()
    # Read one by one, in the callback; then silent.
    events = await stream_words(
        client, fake_upstream, WORDS[:10], frame_delay=0.01, pauses={6: 5.0}
    )
    assert loop.time() - started < 2.0
    final = assert_ends(events, "response.failed")
    assert "sent nothing for 0.5 seconds" in final["response"]["error"]["message"]
    assert text_of(events) == "".join(WORDS[:5])


async def test_a_streamed_answers_connection_is_pooled_past_the_idle_timeout(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """The relay gives aiohttp its read timer back when it stops taking reads; at the end
    of the body aiohttp has already stopped it, and a timer re-armed there would fire on
    the idle pooled connection and have it closed."""
    config = bridge_config(fake_upstream.url, upstream="idle_timeout = 0.3\nmax_connections = 1")
    client: TestClient = await aiohttp_client(create_app(config))
    for turn in range(2):
        assert_ends(await stream_words(client, fake_upstream, WORDS[:30]))
        if turn == 0:
            await asyncio.sleep(0.8)  # past the idle timeout, within aiohttp's keep-alive
    assert len(fake_upstream.peers) == 2
    assert fake_upstream.peers[0] == fake_upstream.peers[1]  # one connection, reused


async def test_an_http_1_0_client_gets_the_stream_unchunked(
    fake_upstream: FakeUpstream, aiohttp_server: Any
) -> None:
    """Written at once, events are framed as aiohttp frames the rest of the body: in
    chunks for HTTP/1.1, as they are for HTTP/1.0 (the body ends when the connection
    closes)."""
    server = await aiohttp_server(create_app(bridge_config(fake_upstream.url)))
    reply = thinking_text_reply([], WORDS[:40])
    reply.frame_delay = 0.002
    fake_upstream.script(reply)
    body = orjson.dumps({"model": MODEL, "input": "hi", "stream": True})
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(
            b"POST /v1/responses HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, stream = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head.lower()
    assert stream.startswith(b"event: ") and b"\r\n" not in stream  # no chunk sizes
    parser = SSEParser()
    events = decode_stream([e.data for e in parser.feed(stream) + parser.finish()])
    assert_ends(events)
    assert text_of(events) == "".join(WORDS[:40])


@pytest.mark.parametrize("size", [10, 100, 1_000, 70_000])
async def test_a_socket_gets_every_event_written_at_once_as_its_own_text_message(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, size: int
) -> None:
    """On a WebSocket the relay frames the messages itself: each event one text message,
    whatever its length (a frame's length takes 1, 2 or 8 bytes from 126 and 65,536 on)."""
    client: TestClient = await aiohttp_client(create_app(bridge_config(fake_upstream.url)))
    texts = [f"{n}:" + "x" * size for n in range(6)]
    reply = thinking_text_reply(["a thought"], texts)
    reply.frame_delay = 0.003  # one read each, taken in the read's callback
    fake_upstream.script(reply)
    async with client.ws_connect("/v1/responses") as ws:
        events = await ws_turn(ws, input="hi")
    assert_ends(events)
    assert text_of(events) == "".join(texts)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def read_frame(frame: bytes) -> tuple[int, bytes]:
    """A server frame read as RFC 6455 (5.2) says: FIN and opcode, no mask, the length in
    7 bits, or 126 then 16 bits, or 127 then 64 bits; the payload."""
    first, second = frame[0], frame[1]
    assert second & 0x80 == 0  # a server never masks
    size, at = second & 0x7F, 2
    if size == 126:
        size, at = int.from_bytes(frame[2:4], "big"), 4
    elif size == 127:
        size, at = int.from_bytes(frame[2:10], "big"), 10
    assert len(frame) == at + size
    return first, frame[at:]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 200_000])
def test_a_text_frame_is_one_final_text_message_of_its_payload(size: int) -> None:
    payload = bytes(random.Random(size).randrange(256) for _ in range(min(size, 64))) * (
        size // 64 + 1
    )
    payload = payload[:size]
    first, read = read_frame(text_frame(payload))
    assert first == 0x81  # FIN, no RSV bits, opcode 1 (text)
    assert read == payload


async def test_a_compressed_event_stream_is_taken_in_its_callback_as_it_is_decompressed(
    aiohttp_server: Any, aiohttp_client: ClientFactory
) -> None:
    """A provider behind a CDN may gzip its stream: aiohttp decompresses each read before
    the relay's callback sees it, and the answer is whole."""
    frames = thinking_text_reply([], WORDS[:60]).frames

    async def gzipped(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        for frame in frames:
            await response.write(frame)
            await asyncio.sleep(0.002)
        await response.write_eof()
        return response

    upstream = web.Application()
    upstream.router.add_post("/v1/chat/completions", gzipped)
    provider = await aiohttp_server(upstream)
    config = bridge_config(str(provider.make_url("")).rstrip("/"))
    client: TestClient = await aiohttp_client(create_app(config))
    events = await post_stream(client)
    assert_ends(events)
    assert text_of(events) == "".join(WORDS[:60])


async def test_a_reader_that_cannot_be_attached_leaves_every_stream_to_aiohttps_buffer(
    fake_upstream: FakeUpstream,
    aiohttp_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An aiohttp whose StreamReader no longer has the layout bridge.direct swaps in: the
    swap fails, is said once in the log, and the streams read as before."""

    class Other(StreamReader):
        __slots__ = ("more",)  # another layout: __class__ cannot change to it

    monkeypatch.setattr(direct, "_Attached", Other)
    monkeypatch.setattr(direct, "_usable", None)  # checked again at the first attach
    client: TestClient = await aiohttp_client(create_app(bridge_config(fake_upstream.url)))
    for _ in range(2):
        events = await stream_words(client, fake_upstream, WORDS[:20])
        assert_ends(events)
        assert text_of(events) == "".join(WORDS[:20])
    assert direct._usable is False
    warnings = [r for r in caplog.records if "aiohttp's buffer" in r.getMessage()]
    assert len(warnings) == 1


async def test_the_first_attach_checks_that_aiohttp_hands_a_body_to_its_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once a process, one response goes through aiohttp's own parser to an attached
    reader: an aiohttp that gave the body to its reader some other way would otherwise
    leave each stream waiting for reads that never come."""
    assert direct._works()

    class Deaf(direct._Attached):
        __slots__ = ()

        def feed_data(self, data: bytes, size: int = 0) -> bool:
            return False  # as if the parser called something else

    monkeypatch.setattr(direct, "_Attached", Deaf)
    assert not direct._works()
    assert not direct._CONSUMERS  # the probe's reader let go either way
