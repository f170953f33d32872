"""A fast Chat Completions server for benchmarks: pre-encoded chunks, many per write.

    python bench/fake_upstream.py PORT TOKENS [REASONING_TOKENS]

Every POST /v1/chat/completions gets the same streamed answer of TOKENS content chunks,
after REASONING_TOKENS reasoning_content chunks (none by default);
the bytes are built once at startup, so the server costs next to nothing per token.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web

EVENTS_PER_WRITE = 64


def frame(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def answer(tokens: int, reasoning: int = 0) -> list[bytes]:
    """The stream, split into writes of EVENTS_PER_WRITE events each."""
    head = {"id": "bench", "object": "chat.completion.chunk", "model": "bench"}
    events = [frame({**head, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    thought = {"reasoning_content": "hmm "}
    events += [frame({**head, "choices": [{"index": 0, "delta": thought}]})] * reasoning
    events += [frame({**head, "choices": [{"index": 0, "delta": {"content": "tok "}}]})] * tokens
    events.append(frame({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": tokens + 20}
    events.append(frame({**head, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return [
        b"".join(events[i : i + EVENTS_PER_WRITE]) for i in range(0, len(events), EVENTS_PER_WRITE)
    ]


def make_app(tokens: int, reasoning: int = 0) -> web.Application:
    writes = answer(tokens, reasoning)

    async def completions(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for data in writes:
            await response.write(data)
        await response.write_eof()
        return response

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "bench", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


if __name__ == "__main__":
    reasoning = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    web.run_app(
        make_app(int(sys.argv[2]), reasoning), host="127.0.0.1", port=int(sys.argv[1]), print=None
    )
