"""A Chat Completions server for benchmarks, fast or paced like a real provider.

    python bench/fake_upstream.py PORT TOKENS [REASONING_TOKENS]
        [--rate TOKENS_PER_S] [--first-token-delay SECONDS]

An answer has `max_tokens` (or `max_completion_tokens`) content tokens when the request sets
it, else TOKENS. The request's model picks how they are sent:

- "paced": one token per write, at --rate tokens/s per stream (default 75, within the
  50-100 real providers stream at), the first after --first-token-delay. Each token's text
  is `@<time.monotonic_ns() when it was written> `, so a client on this machine (the same
  clock) measures how long the token took to reach it, through whatever lies between.
- any other model: fast, REASONING_TOKENS reasoning_content chunks then the content chunks,
  pre-encoded once per length and written 64 events per write, so the server costs next to
  nothing per token and is never the bottleneck.

`stream: false` (the Chat Completions default) gets the whole chat.completion as JSON: at
once (fast), or after the time the paced stream would have taken.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import orjson
from aiohttp import web

EVENTS_PER_WRITE = 64
# Past this a request's max_tokens is cut: the fast answers are kept in memory per length.
MAX_TOKENS = 100_000
HEAD = {"id": "bench", "object": "chat.completion.chunk", "created": 0}
DONE = b"data: [DONE]\n\n"


class ChatRequest(msgspec.Struct):
    """What the fake reads of a request; the rest is ignored."""

    model: str = ""
    stream: bool = False
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


@dataclass(frozen=True)
class Pace:
    """How a paced answer is sent."""

    rate: float
    first_token_delay: float


def frame(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(model: str, delta: dict[str, str], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return frame({**HEAD, "model": model, "choices": [choice]})


def usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 20, "completion_tokens": tokens, "total_tokens": tokens + 20}


def ending(model: str, tokens: int) -> bytes:
    """The finish chunk, the usage chunk and [DONE]."""
    last = frame({**HEAD, "model": model, "choices": [], "usage": usage(tokens)})
    return chunk(model, {}, "stop") + last + DONE


def fast_stream(tokens: int, reasoning: int) -> list[bytes]:
    """The fast stream, split into writes of EVENTS_PER_WRITE events each."""
    events = [chunk("fast", {"role": "assistant", "content": ""})]
    events += [chunk("fast", {"reasoning_content": "hmm "})] * reasoning
    events += [chunk("fast", {"content": "tok "})] * tokens
    events.append(ending("fast", tokens))
    return [
        b"".join(events[i : i + EVENTS_PER_WRITE]) for i in range(0, len(events), EVENTS_PER_WRITE)
    ]


def completion(model: str, tokens: int, reasoning: int) -> bytes:
    """A whole chat.completion of `tokens` tokens, as a stream: false request gets it."""
    message = {"role": "assistant", "content": "tok " * tokens}
    if reasoning:
        message["reasoning_content"] = "hmm " * reasoning
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    body = {**HEAD, "object": "chat.completion", "model": model, "choices": [choice]}
    return orjson.dumps({**body, "usage": usage(tokens)})


def stamped_token(model: str) -> Callable[[int], bytes]:
    """A paced token's frame for a send time, built from two pre-encoded halves."""
    before, after = chunk(model, {"content": "@0 "}).split(b"@0 ")
    return lambda sent_ns: before + b"@%d " % sent_ns + after


async def paced_stream(response: web.StreamResponse, tokens: int, pace: Pace) -> None:
    """One token per write on a fixed schedule; a late token goes at once, not the next."""
    token = stamped_token("paced")
    interval = 1 / pace.rate
    await asyncio.sleep(pace.first_token_delay)
    start = time.monotonic()
    head = chunk("paced", {"role": "assistant", "content": ""})
    for index in range(tokens):
        wait = start + index * interval - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await response.write(head + token(time.monotonic_ns()))
        head = b""
    await asyncio.sleep(max(0.0, start + tokens * interval - time.monotonic()))
    await response.write(head + ending("paced", tokens))


def make_app(tokens: int, reasoning: int = 0, pace: Pace | None = None) -> web.Application:
    pace = pace or Pace(rate=75.0, first_token_delay=0.05)
    decoder = msgspec.json.Decoder(ChatRequest)
    fast_streams: dict[int, list[bytes]] = {}
    fast_answers: dict[int, bytes] = {}

    async def completions(request: web.Request) -> web.StreamResponse:
        asked = decoder.decode(await request.read())
        length = min(asked.max_completion_tokens or asked.max_tokens or tokens, MAX_TOKENS)
        paced = asked.model == "paced"
        if not asked.stream:
            if paced:
                await asyncio.sleep(pace.first_token_delay + length / pace.rate)
                return web.Response(
                    body=completion("paced", length, 0), content_type="application/json"
                )
            if length not in fast_answers:
                fast_answers[length] = completion("fast", length, reasoning)
            return web.Response(body=fast_answers[length], content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if paced:
            await paced_stream(response, length, pace)
        else:
            if length not in fast_streams:
                fast_streams[length] = fast_stream(length, reasoning)
            for data in fast_streams[length]:
                await response.write(data)
        await response.write_eof()
        return response

    async def models(request: web.Request) -> web.Response:
        listed = [{"id": name, "object": "model"} for name in ("fast", "paced")]
        return web.json_response({"object": "list", "data": listed})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("tokens", type=int, help="answer length when max_tokens is unset")
    parser.add_argument("reasoning", type=int, nargs="?", default=0, help="fast mode only")
    parser.add_argument("--rate", type=float, default=75.0, help="paced tokens/s per stream")
    parser.add_argument("--first-token-delay", type=float, default=0.05, help="paced, seconds")
    args = parser.parse_args()
    pace = Pace(rate=args.rate, first_token_delay=args.first_token_delay)
    app = make_app(args.tokens, args.reasoning, pace)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
