"""A scripted, strict Chat Completions server that streams like a thinking model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

DEEPSEEK_MISSING_REASONING = (
    "The `reasoning_content` in the thinking mode must be passed back to the API."
)
KIMI_MISSING_REASONING = (
    "thinking is enabled but reasoning_content is missing in assistant tool call message at "
    "index {index}"
)


@dataclass
class Reply:
    """One scripted answer: SSE frames streamed, or an HTTP error."""

    frames: list[bytes] = field(default_factory=list)
    status: int = 200
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_before: float = 0.0
    # Pause between frames (seconds), to exercise idle handling.
    frame_delay: float = 0.0
    # Pause after the last frame before the body ends (a terminator in its own packet).
    eof_delay: float = 0.0
    # A whole JSON answer with status 200, as servers that ignore `stream: true` send.
    json_body: Any = None
    # Cut the connection after this many frames, without ending the body (a dropped stream).
    drop_after: int | None = None
    # A body sent as these exact parts (with `status`, `headers`, `content_type`), a short
    # pause between them: error bodies in two writes, other charsets, redirects.
    raw_parts: list[bytes] | None = None
    content_type: str = "application/json"
    # Seconds of silence before the frame at that index (a model thinking mid-answer).
    pauses: dict[int, float] = field(default_factory=dict)
    # The answer to a request with `stream` false (a chat.completion); None: made from
    # `frames`, as the provider's non-streamed answer says what its stream did.
    whole: Any = None


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "fake-thinker",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}],
    }


def usage_chunk(
    prompt: int = 11, completion: int = 7, cached: int = 3, reasoning: int = 2
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


# OpenAI's answer to stream_options on a request that does not stream.
STREAM_OPTIONS_REFUSED = "The 'stream_options' parameter is only allowed when 'stream' is enabled."


def completion_of(frames: list[bytes]) -> dict[str, Any]:
    """The chat.completion a provider answers `stream: false` with, for the answer these
    SSE frames stream: the message whole (its reasoning_content or reasoning, content,
    refusal and tool calls in index order), the last finish_reason and the usage."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: list[dict[str, Any]] = []
    finish: str | None = None
    usage: Any = None
    details: list[dict[str, Any]] = []
    for frame in frames:
        for event in frame.split(b"\n\n"):
            lines = [line for line in event.splitlines() if line.startswith(b"data:")]
            data = b"\n".join(line.removeprefix(b"data:").strip() for line in lines)
            if not data or data == b"[DONE]":
                continue
            payload = orjson.loads(data)
            usage = payload.get("usage") or usage
            for choice in payload.get("choices") or ():
                usage = choice.get("usage") or usage
                finish = choice.get("finish_reason") or finish
                delta = choice.get("delta") or {}
                for name in ("content", "reasoning_content", "reasoning", "refusal"):
                    if delta.get(name) is not None:
                        message[name] = (message.get(name) or "") + delta[name]
                for call in delta.get("tool_calls") or ():
                    _add_call(calls, call)
                for entry in delta.get("reasoning_details") or ():
                    _add_detail(details, entry)
    if calls:
        message["tool_calls"] = calls
    if details:
        message["reasoning_details"] = details
    completion: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-thinker",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if usage is not None:
        completion["usage"] = usage
    return completion


def _add_detail(details: list[dict[str, Any]], fragment: dict[str, Any]) -> None:
    """A streamed reasoning_details fragment into the whole entries (OpenRouter's shape):
    fragments of one `index` make one entry, their texts joined."""
    entry = next((d for d in details if d.get("index") == fragment.get("index")), None)
    if entry is None:
        details.append(dict(fragment))
        return
    for key, value in fragment.items():
        if key in ("text", "summary", "data") and isinstance(value, str):
            entry[key] = (entry.get(key) or "") + value
        elif value is not None:
            entry.setdefault(key, value)


def _add_call(calls: list[dict[str, Any]], delta: dict[str, Any]) -> None:
    """One streamed tool-call delta into the whole calls: by index, else by id, else the
    last call."""
    index = delta.get("index")
    known = [c for c in calls if delta.get("id") and c["id"] == delta.get("id")]
    if index is not None:
        while len(calls) <= index:
            calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
    elif known:
        call = known[0]
    elif delta.get("id") or not calls:
        call = {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
        calls.append(call)
    else:
        call = calls[-1]
    call["id"] = delta.get("id") or call["id"]
    function = delta.get("function") or {}
    call["function"]["name"] = function.get("name") or call["function"]["name"]
    call["function"]["arguments"] += function.get("arguments") or ""
    if delta.get("extra_content"):
        call["extra_content"] = delta["extra_content"]


def thinking_text_reply(reasoning: list[str], text: list[str], prompt_tokens: int = 11) -> Reply:
    """Reasoning deltas, then content deltas, then finish and a usage chunk."""
    frames = [sse(chunk({"role": "assistant", "content": None, "reasoning_content": ""}))]
    frames += [sse(chunk({"reasoning_content": part})) for part in reasoning]
    frames += [sse(chunk({"content": part})) for part in text]
    frames += [sse(chunk(finish_reason="stop")), sse(usage_chunk(prompt=prompt_tokens)), DONE]
    return Reply(frames)


def tool_call_reply(
    reasoning: str,
    calls: list[tuple[str, str, list[str]]],
    text: str | None = None,
    prompt_tokens: int = 11,
) -> Reply:
    """Reasoning, optional text, then tool calls keyed by index: id and name only first."""
    frames = [sse(chunk({"role": "assistant", "reasoning_content": reasoning}))]
    if text:
        frames.append(sse(chunk({"content": text})))
    for index, (call_id, name, argument_parts) in enumerate(calls):
        frames.append(
            sse(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
        )
        for part in argument_parts:
            frames.append(
                sse(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": index,
                                    "function": {"arguments": part},
                                }
                            ]
                        }
                    )
                )
            )
    frames += [sse(chunk(finish_reason="tool_calls")), sse(usage_chunk(prompt=prompt_tokens)), DONE]
    return Reply(frames)


# A provider that refuses the input's length, in the words OpenAI-compatible servers use.
OVERFLOW = Reply(
    status=400,
    error_body={
        "error": {
            "message": "This model's maximum context length is 1000 tokens. However, you "
            "requested 4000 tokens (3900 in the messages, 100 in the completion).",
            "type": "invalid_request_error",
            "code": "invalid_request_error",
        }
    },
)


def huge_stream(frames: int, size: int) -> Reply:
    """`frames` content deltas of `size` bytes each: an answer a client cannot keep up with."""
    text = "x" * size
    body = [sse(chunk({"content": text})) for _ in range(frames)]
    return Reply([*body, sse(chunk(finish_reason="stop")), DONE])


class FakeUpstream:
    """Serves scripted replies in order and records what it was sent.

    Like a thinking-mode provider it rejects an assistant tool-call message without its
    reasoning (in `reasoning_field`), with `missing_reasoning` as the error text ({index} is
    the message's index).
    """

    def __init__(
        self,
        reasoning_field: str = "reasoning_content",
        missing_reasoning: str = DEEPSEEK_MISSING_REASONING,
    ) -> None:
        self.reasoning_field = reasoning_field
        # False: tool-call turns without reasoning are taken (a model that does not think).
        self.require_reasoning = True
        self.missing_reasoning = missing_reasoning
        # A strict fake of a real provider (tests.provider_fakes) deciding what is refused,
        # in place of the checks below.
        self.rules: Any = None
        # Keep every request received (off for soak tests, so the lists do not grow).
        self.record = True
        self.url = ""  # set once the test server is up
        self.replies: list[Reply] = []
        # Answers requests when no scripted reply is left (a client that decides how many
        # requests it makes, like Codex, is easier to serve by what it asks).
        self.responder: Callable[[dict[str, Any]], Reply] | None = None
        self.requests: list[dict[str, Any]] = []
        # Each request's body as it came, byte for byte, when asked for.
        self.record_bytes = False
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        # The bridge's address for each request: equal ports mean a pooled connection.
        self.peers: list[tuple[str, int]] = []
        # When each request arrived (time.monotonic()).
        self.arrivals: list[float] = []
        # Set when the bridge closed a stream before the fake finished writing it.
        self.stream_abandoned = asyncio.Event()
        # Set once a request has come in.
        self.arrived = asyncio.Event()
        self.app = web.Application(client_max_size=256 * 1024 * 1024)
        self.app.router.add_post("/v1/chat/completions", self._handle)

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def _validate(self, body: dict[str, Any]) -> str | None:
        """The strict checks a thinking-mode provider makes; an error message or None."""
        pending: set[str] = set()
        for index, message in enumerate(body.get("messages", [])):
            role = message.get("role")
            if role not in ("system", "user", "assistant", "tool", "developer"):
                return f"invalid role at message index {index}"
            if pending and role != "tool":
                return f"tool_calls without tool messages before message index {index}"
            if role == "assistant" and message.get("tool_calls"):
                if self.require_reasoning and not message.get(self.reasoning_field):
                    return self.missing_reasoning.format(index=index)
                pending = {call["id"] for call in message["tool_calls"]}
            if role == "tool":
                if message.get("tool_call_id") not in pending:
                    return f"tool message at index {index} answers no pending tool call"
                pending.discard(message["tool_call_id"])
        if pending:
            return "tool_calls without tool messages at the end"
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        data = await request.read()
        body = orjson.loads(data)
        self.arrived.set()
        if self.record_bytes:
            self.bodies.append(data)
        if self.record:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            assert request.transport is not None
            self.peers.append(request.transport.get_extra_info("peername"))
            self.arrivals.append(time.monotonic())
        streamed = body.get("stream") is True
        if not streamed and "stream_options" in body:
            return web.json_response(
                {
                    "error": {
                        "message": STREAM_OPTIONS_REFUSED,
                        "type": "invalid_request_error",
                        "param": "stream_options",
                        "code": None,
                    }
                },
                status=400,
            )
        if self.rules is not None:
            refusal = self.rules.refusal(body)
            if refusal is not None:
                status, payload = refusal
                return web.json_response(payload, status=status)
            problem = None
        else:
            problem = self._validate(body)
        if problem is not None:
            return web.json_response(
                {
                    "error": {
                        "message": problem,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_request_error",
                    }
                },
                status=400,
            )
        if self.replies:
            reply = self.replies.pop(0)
        elif self.responder is not None:
            reply = self.responder(body)
        else:
            return web.json_response({"error": {"message": "no scripted reply"}}, status=500)
        if reply.delay_before:
            await asyncio.sleep(reply.delay_before)
        if reply.raw_parts is not None:
            raw = web.StreamResponse(
                status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers}
            )
            await raw.prepare(request)
            for part in reply.raw_parts:
                await raw.write(part)
                await asyncio.sleep(0.05)
            await raw.write_eof()
            return raw
        if reply.json_body is not None:
            return web.json_response(reply.json_body)
        if reply.status != 200:
            return web.json_response(reply.error_body, status=reply.status, headers=reply.headers)
        if not streamed:
            return await self._answer_whole(request, reply)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **reply.headers}
        )
        try:
            await response.prepare(request)
            for sent, frame in enumerate(reply.frames):
                if sent == reply.drop_after and request.transport is not None:
                    request.transport.abort()
                    return response
                if reply.frame_delay:
                    await asyncio.sleep(reply.frame_delay)
                if sent in reply.pauses:
                    await asyncio.sleep(reply.pauses[sent])
                await response.write(frame)
            if reply.eof_delay:
                await asyncio.sleep(reply.eof_delay)
            await response.write_eof()
        except ConnectionResetError:
            self.stream_abandoned.set()
        except asyncio.CancelledError:
            # aiohttp's test server cancels the handler when the peer disconnects.
            self.stream_abandoned.set()
            raise
        return response

    async def _answer_whole(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        """A `stream: false` request's answer: after the time the stream would have taken,
        the whole chat.completion (or nothing, for a stream that would have been cut off)."""
        await asyncio.sleep(reply.frame_delay * len(reply.frames) + sum(reply.pauses.values()))
        if reply.drop_after is not None and request.transport is not None:
            request.transport.abort()
            return web.StreamResponse()
        return web.json_response(reply.whole or completion_of(reply.frames), headers=reply.headers)
