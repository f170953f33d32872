"""The least a Python relay can do per token: raw asyncio protocols on uvloop, no HTTP library.

    python bench/protocol_floor.py PORT UPSTREAM_PORT

Serves only what bench/turn_costs.py sends: a streamed Responses request with a string input,
asked of bench/fake_upstream.py (on 127.0.0.1) as a Chat Completions stream over kept-alive
connections, each text chunk answered as one `response.output_text.delta` event, then
`response.completed`. HTTP is parsed by hand for exactly those messages (a Content-Length
request, a chunked response); nothing is checked, stored or retried. It is the floor beneath
the pass-through (bench/passthrough.py, aiohttp on both sides): the difference between the two
is what the HTTP library costs, the rest is the kernel's and the interpreter's.
"""

from __future__ import annotations

import asyncio
import sys
import time

import msgspec
import uvloop


class Req(msgspec.Struct):
    model: str
    input: str = ""
    stream: bool = False
    max_output_tokens: int | None = None


class Delta(msgspec.Struct):
    content: str | None = None


class Choice(msgspec.Struct):
    delta: Delta | None = None
    finish_reason: str | None = None


class Chunk(msgspec.Struct):
    choices: list[Choice] = []


class TextDelta(msgspec.Struct, tag="response.output_text.delta", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    sequence_number: int


REQ = msgspec.json.Decoder(Req)
CHUNK = msgspec.json.Decoder(Chunk)
ENC = msgspec.json.Encoder()
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
DELTA_PREFIX = b"event: response.output_text.delta\ndata: "
CREATED = b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
UPSTREAM_PORT = 0
POOL: list[Upstream] = []


def framed(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the Chat upstream, one stream at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.buf = b""
        self.head_done = False
        self.sse = b""
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in POOL:
            POOL.remove(self)

    def start(self, client: Client, body: bytes) -> None:
        self.client, self.buf, self.head_done, self.sse = client, b"", False, b""
        assert self.transport is not None
        self.transport.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.head_done = True
            buf = buf[end + 4 :]
        pos = 0
        n = len(buf)
        while pos < n:
            line = buf.find(b"\r\n", pos)
            if line < 0:
                break
            size = int(buf[pos:line], 16)
            start = line + 2
            if start + size + 2 > n:
                break
            if size == 0:
                pos = start + 2
                self.finish()
                break
            self.events(buf[start : start + size])
            pos = start + size + 2
        self.buf = buf[pos:]

    def events(self, data: bytes) -> None:
        sse = self.sse + data if self.sse else data
        client = self.client
        assert client is not None
        out = []
        pos = 0
        while True:
            end = sse.find(b"\n\n", pos)
            if end < 0:
                break
            payload = sse[pos + 6 : end]
            pos = end + 2
            if payload == b"[DONE]":
                continue
            chunk = CHUNK.decode(payload)
            for choice in chunk.choices:
                if choice.delta is not None and choice.delta.content:
                    client.seq += 1
                    event = TextDelta("msg_1", 0, 0, choice.delta.content, client.seq)
                    out.append(DELTA_PREFIX + ENC.encode(event) + b"\n\n")
        self.sse = sse[pos:]
        if out:
            client.write(b"".join(out))

    def finish(self) -> None:
        client, self.client = self.client, None
        POOL.append(self)
        if client is not None:
            client.end()


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in self.buf[:end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buf) < end + 4 + length:
            return
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        asyncio.get_running_loop().create_task(self.serve(REQ.decode(body)))

    async def serve(self, req: Req) -> None:
        self.seq = 0
        body = ENC.encode(
            {
                "model": req.model,
                "stream": True,
                "max_tokens": req.max_output_tokens,
                "messages": [{"role": "user", "content": req.input}],
            }
        )
        if POOL:
            upstream = POOL.pop()
        else:
            loop = asyncio.get_running_loop()
            _, upstream = await loop.create_connection(Upstream, "127.0.0.1", UPSTREAM_PORT)
            await upstream.ready
        assert self.transport is not None
        self.transport.write(HEAD)
        created = (
            b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
        )
        self.transport.write(framed(created))
        upstream.start(self, body)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(framed(data))

    def end(self) -> None:
        assert self.transport is not None
        done = (
            b'event: response.completed\ndata: {"type":"response.completed","sequence_number":%d,'
            b'"response":{"id":"resp_1","status":"completed","created_at":%d}}\n\n'
            % (self.seq + 1, int(time.time()))
        )
        self.transport.write(framed(done) + b"0\r\n\r\n")


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Client, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    UPSTREAM_PORT = int(sys.argv[2])
    uvloop.run(main(int(sys.argv[1])))
