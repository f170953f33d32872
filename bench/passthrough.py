"""The floor: a minimal Responses-to-Chat pass-through on aiohttp and msgspec.

    python bench/passthrough.py PORT UPSTREAM_BASE_URL

Takes a Responses request with a string input, asks the Chat Completions upstream, and
answers with the Responses events a client needs (created, the message item, one text delta
per upstream chunk, the done events, completed), one write per upstream read; or, for
`stream: false`, one JSON response from the upstream's JSON answer. Nothing is stored,
checked or retried: bench/run.py measures it beside the bridge as what the least work in
Python costs on this machine. Not a server for anything but the benchmark.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from aiohttp import web


class ResponsesRequest(msgspec.Struct):
    model: str
    input: str
    stream: bool = False
    max_output_tokens: int | None = None


class ChatDelta(msgspec.Struct):
    content: str | None = None


class ChatChoice(msgspec.Struct):
    delta: ChatDelta = msgspec.field(default_factory=ChatDelta)


class ChatUsage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatChunk(msgspec.Struct):
    choices: list[ChatChoice] = []
    usage: ChatUsage | None = None


class ChatMessage(msgspec.Struct):
    content: str | None = None


class ChatAnswer(msgspec.Struct):
    message: ChatMessage


class ChatCompletion(msgspec.Struct):
    choices: list[ChatAnswer]
    usage: ChatUsage | None = None


class OutputText(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[str] = []


class Message(msgspec.Struct, tag="message", tag_field="type"):
    id: str
    status: str
    content: list[OutputText]
    role: str = "assistant"


class Usage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int


class Response(msgspec.Struct):
    id: str
    created_at: int
    status: str
    model: str
    output: list[Message]
    usage: Usage | None = None
    object: str = "response"


class Created(msgspec.Struct, tag="response.created", tag_field="type"):
    response: Response
    sequence_number: int


class ItemAdded(msgspec.Struct, tag="response.output_item.added", tag_field="type"):
    item: Message
    output_index: int
    sequence_number: int


class TextDelta(msgspec.Struct, tag="response.output_text.delta", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    sequence_number: int


class TextDone(msgspec.Struct, tag="response.output_text.done", tag_field="type"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    sequence_number: int


class ItemDone(msgspec.Struct, tag="response.output_item.done", tag_field="type"):
    item: Message
    output_index: int
    sequence_number: int


class Completed(msgspec.Struct, tag="response.completed", tag_field="type"):
    response: Response
    sequence_number: int


Event = Created | ItemAdded | TextDelta | TextDone | ItemDone | Completed

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
REQUEST = msgspec.json.Decoder(ResponsesRequest)
CHUNK = msgspec.json.Decoder(ChatChunk)
COMPLETION = msgspec.json.Decoder(ChatCompletion)
ENCODER = msgspec.json.Encoder()
JSON = {"Content-Type": "application/json"}


# Each event's first bytes, encoded once: "event: <its type>" and the start of its data line.
PREFIX = {
    kind: b"event: %s\ndata: " % str(kind.__struct_config__.tag).encode()
    for kind in (Created, ItemAdded, TextDelta, TextDone, ItemDone, Completed)
}


def sse(event: Event) -> bytes:
    return PREFIX[type(event)] + ENCODER.encode(event) + b"\n\n"


def usage(chat: ChatUsage | None) -> Usage | None:
    if chat is None:
        return None
    total = chat.prompt_tokens + chat.completion_tokens
    return Usage(chat.prompt_tokens, chat.completion_tokens, total)


class Translation:
    """One streamed answer: upstream SSE bytes in, Responses SSE bytes out."""

    def __init__(self, model: str) -> None:
        self.response = Response(
            id=f"resp_{uuid.uuid4().hex}",
            created_at=int(time.time()),
            status="in_progress",
            model=model,
            output=[],
        )
        self.item_id = f"msg_{uuid.uuid4().hex}"
        self.texts: list[str] = []
        self.usage: ChatUsage | None = None
        self.sequence = 0

    def next_number(self) -> int:
        self.sequence += 1
        return self.sequence - 1

    def start(self) -> bytes:
        item = Message(id=self.item_id, status="in_progress", content=[])
        return sse(Created(self.response, self.next_number())) + sse(
            ItemAdded(item, 0, self.next_number())
        )

    def feed(self, events: bytes) -> bytes:
        """The text deltas of the complete upstream events in one read."""
        out: list[bytes] = []
        for event in events.split(b"\n\n"):
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            chunk = CHUNK.decode(event[6:])
            self.usage = chunk.usage or self.usage
            for choice in chunk.choices:
                if text := choice.delta.content:
                    self.texts.append(text)
                    delta = TextDelta(self.item_id, 0, 0, text, self.next_number())
                    out.append(sse(delta))
        return b"".join(out)

    def finish(self) -> bytes:
        text = "".join(self.texts)
        item = Message(id=self.item_id, status="completed", content=[OutputText(text)])
        self.response.status = "completed"
        self.response.output = [item]
        self.response.usage = usage(self.usage)
        return (
            sse(TextDone(self.item_id, 0, 0, text, self.next_number()))
            + sse(ItemDone(item, 0, self.next_number()))
            + sse(Completed(self.response, self.next_number()))
        )


async def complete_events(reads: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Each read's complete SSE events (a read may end inside an event)."""
    tail = b""
    async for data in reads:
        window = tail + data
        cut = window.rfind(b"\n\n")
        if cut < 0:
            tail = window
            continue
        tail = window[cut + 2 :]
        yield window[:cut]


def error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "server_error", "code": None}}
    return web.Response(status=status, body=ENCODER.encode(body), headers=JSON)


async def responses(request: web.Request) -> web.StreamResponse:
    try:
        asked = REQUEST.decode(await request.read())
    except msgspec.ValidationError as invalid:
        return error(400, str(invalid))
    chat: dict[str, object] = {
        "model": asked.model,
        "messages": [{"role": "user", "content": asked.input}],
        "stream": asked.stream,
    }
    if asked.max_output_tokens is not None:
        chat["max_tokens"] = asked.max_output_tokens
    if asked.stream:
        chat["stream_options"] = {"include_usage": True}
    url = request.app[UPSTREAM] + "/chat/completions"
    try:
        async with request.app[SESSION].post(url, data=ENCODER.encode(chat), headers=JSON) as up:
            if up.status != 200:
                return error(502, f"upstream answered HTTP {up.status}")
            if not asked.stream:
                return answer(asked.model, COMPLETION.decode(await up.read()))
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            translation = Translation(asked.model)
            await response.write(translation.start())
            async for events in complete_events(up.content.iter_any()):
                if out := translation.feed(events):
                    await response.write(out)
            await response.write(translation.finish())
            await response.write_eof()
            return response
    except aiohttp.ClientError as failed:
        return error(502, f"upstream: {failed}")


def answer(model: str, completion: ChatCompletion) -> web.Response:
    """A whole Response from a whole chat.completion."""
    text = (completion.choices[0].message.content or "") if completion.choices else ""
    item = Message(id=f"msg_{uuid.uuid4().hex}", status="completed", content=[OutputText(text)])
    whole = Response(
        id=f"resp_{uuid.uuid4().hex}",
        created_at=int(time.time()),
        status="completed",
        model=model,
        output=[item],
        usage=usage(completion.usage),
    )
    return web.Response(body=ENCODER.encode(whole), headers=JSON)


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    """One client session for the process, closed on shutdown."""
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        app[SESSION] = session
        yield


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(upstream_session)
    app.router.add_post("/v1/responses", responses)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument(
        "upstream", help="the Chat Completions base URL, e.g. http://127.0.0.1:9/v1"
    )
    args = parser.parse_args()
    web.run_app(make_app(args.upstream), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
