"""The running service against the fake upstream: streams, replays, errors, timing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from tests.conftest import MODEL, assert_ends, bridge_config, read_events
from tests.fake_upstream import (
    DEEPSEEK_MISSING_REASONING,
    DONE,
    FakeUpstream,
    Reply,
    chunk,
    sse,
    thinking_text_reply,
    tool_call_reply,
    usage_chunk,
)

TOOLS = [
    {
        "type": "function",
        "name": "exec_command",
        "description": "Run a shell command.",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    }
]
ClientFactory = Callable[..., Awaitable[TestClient]]


async def post(
    bridge: TestClient, headers: dict[str, str] | None = None, **body: Any
) -> ClientResponse:
    return await bridge.post("/v1/responses", json={"model": MODEL, **body}, headers=headers)


async def test_streams_reasoning_and_text(bridge: TestClient, fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(thinking_text_reply(["Let me ", "think."], ["Hello", ", world"]))
    events = await read_events(await post(bridge, input="hi", stream=True))
    assert_ends(events)
    types = [e["type"] for e in events]
    assert types[0] == "response.created"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Hello, world"
    reasoning = [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"]
    assert "".join(reasoning) == "Let me think."
    sent = fake_upstream.requests[0]
    assert sent["model"] == "fake-thinker"
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert events[-1]["response"]["model"] == MODEL


async def test_non_streaming_returns_the_completed_response(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply(["hmm"], ["Answer"]))
    response = await post(bridge, input="hi")
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["output"][1]["content"][0]["text"] == "Answer"
    assert body["usage"]["total_tokens"] == 18


async def test_tool_call_round_trip_replays_reasoning(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """The thinking-model rule: a replayed tool-call turn must carry its reasoning."""
    fake_upstream.script(
        tool_call_reply(
            "I should list files.", [("call_1", "exec_command", ['{"cmd"', ': "ls"}'])]
        ),
        thinking_text_reply(["Done."], ["There is one file."]),
    )
    first = await read_events(
        await post(
            bridge,
            input=[{"role": "user", "content": "list files"}],
            tools=TOOLS,
            stream=True,
            include=["reasoning.encrypted_content"],
        )
    )
    output = first[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "function_call"]
    call = output[1]
    assert (call["call_id"], call["name"], call["arguments"]) == (
        "call_1",
        "exec_command",
        '{"cmd": "ls"}',
    )
    # Replay as Codex does: the items verbatim, plus the tool's output.
    replay = [
        {"role": "user", "content": "list files"},
        *output,
        {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
    ]
    second = await read_events(await post(bridge, input=replay, tools=TOOLS, stream=True))
    assert_ends(second)
    assistant = fake_upstream.requests[1]["messages"][1]
    assert assistant["reasoning_content"] == "I should list files."
    assert assistant["tool_calls"][0]["id"] == "call_1"


async def test_replay_with_only_encrypted_content_still_carries_reasoning(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        tool_call_reply("secret steps", [("call_9", "exec_command", ["{}"])]),
        thinking_text_reply(["ok"], ["fine"]),
    )
    first = await (
        await post(bridge, input="go", tools=TOOLS, include=["reasoning.encrypted_content"])
    ).json()
    reasoning, call = first["output"]
    reasoning.pop("content")  # older Codex builds drop content on replay
    replay = [
        {"role": "user", "content": "go"},
        reasoning,
        call,
        {"type": "function_call_output", "call_id": "call_9", "output": "x"},
    ]
    response = await post(bridge, input=replay, tools=TOOLS)
    assert response.status == 200, await response.text()
    assert fake_upstream.requests[1]["messages"][1]["reasoning_content"] == "secret steps"


async def test_missing_reasoning_surfaces_the_providers_error(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    replay = [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "x"},
    ]
    events = await read_events(await post(bridge, input=replay, tools=TOOLS, stream=True))
    assert_ends(events, "response.failed")
    assert DEEPSEEK_MISSING_REASONING in events[-1]["response"]["error"]["message"]
    response = await post(bridge, input=replay, tools=TOOLS)
    assert response.status == 400
    assert DEEPSEEK_MISSING_REASONING in (await response.json())["error"]["message"]


async def test_headers_and_created_go_out_before_the_upstream_answers(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    reply = thinking_text_reply(["slow"], ["ok"])
    reply.delay_before = 1.5
    fake_upstream.script(reply)
    response = await asyncio.wait_for(post(bridge, input="hi", stream=True), timeout=1.0)
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=1.0)
    assert b'"type":"response.created"' in first
    rest = await read_events(response)
    assert_ends(rest)


async def test_silence_is_bridged_with_in_progress_events(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.2")
    client = await aiohttp_client(create_app(config))
    reply = thinking_text_reply(["a"], ["b"])
    reply.delay_before = 1.0
    fake_upstream.script(reply)
    events = await read_events(await post(client, input="hi", stream=True))
    before_output = []
    for event in events:
        if event["type"] == "response.output_item.added":
            break
        before_output.append(event["type"])
    assert before_output.count("response.in_progress") >= 3
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert_ends(events)


async def test_idle_upstream_fails_within_the_idle_timeout(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, upstream="idle_timeout = 0.5")
    client = await aiohttp_client(create_app(config))
    reply = thinking_text_reply(["a"], ["b"])
    reply.frame_delay = 3.0
    fake_upstream.script(reply)
    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await read_events(await post(client, input="hi", stream=True))
    assert loop.time() - started < 2.5
    assert_ends(events, "response.failed")
    assert "sent nothing for 0.5 seconds" in events[-1]["response"]["error"]["message"]


def _frames(*payloads: Any) -> list[bytes]:
    return [sse(p) for p in payloads]


@pytest.mark.parametrize(
    ("frames", "final", "code"),
    [
        # finish_reason but no [DONE]: a known quirk, still complete.
        (_frames(chunk({"content": "x"}), chunk(None, "stop"), usage_chunk()), "completed", None),
        # [DONE] without its trailing newline.
        (
            [*_frames(chunk({"content": "x"}), chunk(None, "stop")), b"data: [DONE]"],
            "completed",
            None,
        ),
        # No finish_reason at all: never a completed response with partial output.
        ([*_frames(chunk({"content": "x"})), DONE], "failed", "server_error"),
        (_frames(chunk({"content": "x"})), "failed", "server_error"),
        # A malformed chunk.
        (
            [*_frames(chunk({"content": "x"})), b"data: {not json\n\n", DONE],
            "failed",
            "server_error",
        ),
        # An error object inside the stream.
        (
            _frames(
                chunk({"content": "x"}), {"error": {"message": "overloaded", "code": "overloaded"}}
            ),
            "failed",
            "server_error",  # Codex retries it; server_is_overloaded would end the turn
        ),
        (
            _frames({"error": {"message": "This model's maximum context length is 8192 tokens"}}),
            "failed",
            "context_length_exceeded",
        ),
        (_frames(chunk({"content": "x"}), chunk(None, "length")), "incomplete", None),
    ],
)
async def test_stream_endings(
    bridge: TestClient,
    fake_upstream: FakeUpstream,
    frames: list[bytes],
    final: str,
    code: str | None,
) -> None:
    fake_upstream.script(Reply(frames))
    events = await read_events(await post(bridge, input="hi", stream=True))
    assert events[-1]["type"] == f"response.{final}"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    if code is not None:
        assert events[-1]["response"]["error"]["code"] == code
    if final != "completed":
        assert not any(e["type"] == "response.completed" for e in events)


@pytest.mark.parametrize(
    ("status", "body", "headers", "want_status", "want_code", "want_text"),
    [
        (
            429,
            {"error": {"message": "Rate limit reached"}},
            {"Retry-After": "7"},
            429,
            "rate_limit_exceeded",
            "try again in 7 seconds",
        ),
        (
            400,
            {"error": {"message": "This model's maximum context length is 65536 tokens."}},
            {},
            400,
            "context_length_exceeded",
            "maximum context length",
        ),
        (402, {"error": {"message": "Insufficient Balance"}}, {}, 402, "insufficient_quota", ""),
        # A per-minute quota is a rate limit (Codex waits), not an empty account (fatal).
        (
            429,
            {
                "error": {
                    "message": "Quota exceeded for quota metric 'Generate Content API requests "
                    "per minute' and limit 'GenerateContent request limit per minute'",
                    "status": "RESOURCE_EXHAUSTED",
                }
            },
            {},
            429,
            "rate_limit_exceeded",
            "try again in 1 seconds",
        ),
        # Gemini's OpenAI-compatible endpoint: a list of error envelopes, the wait in the text.
        (
            429,
            [
                {
                    "error": {
                        "code": 429,
                        "message": "You exceeded your current quota, please check your plan "
                        "and billing details.\n* Quota exceeded for metric: generate_content_"
                        "free_tier_requests, limit: 20\nPlease retry in 28.926488533s.",
                        "status": "RESOURCE_EXHAUSTED",
                    }
                }
            ],
            {},
            429,
            "rate_limit_exceeded",
            "try again in 29 seconds",
        ),
        (
            400,
            [{"error": {"code": 400, "message": "Function call is missing a thought_signature"}}],
            {},
            400,
            "invalid_prompt",
            "upstream: Function call is missing a thought_signature (HTTP 400)",
        ),
        (
            429,
            {"error": {"message": "You exceeded your current quota", "code": "insufficient_quota"}},
            {},
            402,
            "insufficient_quota",
            "current quota",
        ),
        # Codex retries server_error (6 tries in about 7 s); server_is_overloaded it does not.
        (503, {"error": {"message": "busy"}}, {}, 503, "server_error", "busy (HTTP 503)"),
        (500, {"detail": "boom"}, {}, 502, "server_error", "boom"),
        # invalid_prompt: Codex shows the message as it is and does not retry.
        (401, {"error": {"message": "bad key"}}, {}, 502, "invalid_prompt", "API key"),
        (404, {"error": {"message": "no route"}}, {}, 502, "invalid_prompt", "base_url"),
        (400, {"error": {"message": "bad field x"}}, {}, 400, "invalid_prompt", "(HTTP 400)"),
        (422, {"detail": "unprocessable"}, {}, 400, "invalid_prompt", "unprocessable"),
    ],
)
async def test_upstream_http_errors(
    bridge: TestClient,
    fake_upstream: FakeUpstream,
    status: int,
    body: Any,
    headers: dict[str, str],
    want_status: int,
    want_code: str,
    want_text: str,
) -> None:
    fake_upstream.script(Reply(status=status, error_body=body, headers=headers))
    response = await post(bridge, input="hi")
    assert response.status == want_status
    error = (await response.json())["error"]
    assert error["code"] == want_code
    assert want_text in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    if "Retry-After" in headers:
        assert response.headers["Retry-After"] == headers["Retry-After"]
    elif "retry in 28.9" in json.dumps(body):
        assert response.headers["Retry-After"] == "29"
    # The same failure while streaming: response.failed with the same code.
    fake_upstream.script(Reply(status=status, error_body=body, headers=headers))
    events = await read_events(await post(bridge, input="hi", stream=True))
    assert_ends(events, "response.failed")
    assert events[-1]["response"]["error"]["code"] == want_code
    assert want_text in events[-1]["response"]["error"]["message"]


async def test_unreachable_upstream(aiohttp_client: ClientFactory, unused_tcp_port: int) -> None:
    client = await aiohttp_client(create_app(bridge_config(f"http://127.0.0.1:{unused_tcp_port}")))
    response = await post(client, input="hi")
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "server_error"
    events = await read_events(await post(client, input="hi", stream=True))
    assert_ends(events, "response.failed")
    assert "unreachable" in events[-1]["response"]["error"]["message"]


async def test_models_and_health(bridge: TestClient) -> None:
    health = await bridge.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "ok"
    models = await (await bridge.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [MODEL]
    assert models["data"][0]["object"] == "model"


async def test_no_authorization_header_without_a_key(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply([], ["x"]))
    await (
        await bridge.post(
            "/v1/responses",
            json={"model": MODEL, "input": "hi"},
            headers={"Authorization": "Bearer client-secret"},
        )
    ).read()
    assert "Authorization" not in fake_upstream.headers[0]


async def test_provider_key_is_sent_as_bearer(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, provider='api_key_env = "FAKE_KEY"')
    client = await aiohttp_client(create_app(config, {"fake": "sk-test-123"}))
    fake_upstream.script(thinking_text_reply([], ["x"]))
    await (await post(client, input="hi")).read()
    assert fake_upstream.headers[0]["Authorization"] == "Bearer sk-test-123"


async def test_client_disconnect_closes_the_upstream_stream(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    frames = [sse(chunk({"content": f"t{i} "})) for i in range(200)]
    fake_upstream.script(Reply([*frames, sse(chunk(None, "stop")), DONE], frame_delay=0.02))
    response = await post(bridge, input="hi", stream=True)
    await response.content.readuntil(b"response.output_text.delta")
    response.close()
    await asyncio.wait_for(fake_upstream.stream_abandoned.wait(), timeout=3.0)


async def test_client_leaving_during_a_silence_is_noticed(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.1")
    client = await aiohttp_client(create_app(config))
    reply = thinking_text_reply(["a"], ["b"])
    reply.frame_delay = 0.5
    fake_upstream.script(reply)
    response = await post(client, input="hi", stream=True)
    await response.content.readuntil(b"response.in_progress")
    # Leave once the upstream has the request (the in_progress event may come before).
    await asyncio.wait_for(fake_upstream.arrived.wait(), timeout=3.0)
    response.close()
    await asyncio.wait_for(fake_upstream.stream_abandoned.wait(), timeout=3.0)


async def test_one_access_log_line_per_request(
    bridge: TestClient, fake_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake_upstream.script(thinking_text_reply(["a"], ["b"]))
    with caplog.at_level("INFO", logger="bridge.access"):
        response = await post(bridge, input="hi", stream=True, headers=None)
        events = await read_events(response)
        # Codex sends its session id as x-client-request-id: the same on every request.
        session = {"x-client-request-id": "019a-session"}
        others = [await bridge.get("/v1/nothing", headers=session) for _ in range(2)]
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.access"]
    response_id = events[-1]["response"]["id"]
    request_id = response.headers["x-request-id"]
    assert request_id.startswith("req_")
    assert len(lines) == 3
    assert lines[0].startswith("POST /v1/responses 200 ")
    assert lines[0].endswith(
        f"model={MODEL} provider=fake tokens=11+7 response={response_id} outcome=completed "
        f"request={request_id} client_request=-"
    )
    ids = [other.headers["x-request-id"] for other in others]
    assert len(set(ids)) == 2 and all(i.startswith("req_") for i in ids)
    for line, own in zip(lines[1:], ids, strict=True):
        assert line.startswith("GET /v1/nothing 404 ")
        assert line.endswith(f"request={own} client_request=019a-session")


async def test_upstream_connections_are_reused(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    for _ in range(3):
        reply = thinking_text_reply(["a"], ["b"])
        reply.eof_delay = 0.05  # the body's end arrives after [DONE] was read
        fake_upstream.script(reply)
        events = await read_events(await post(bridge, input="hi", stream=True))
        assert_ends(events)
    assert len(set(fake_upstream.peers)) == 1, fake_upstream.peers


async def test_server_ignoring_stream_true_is_translated_whole(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    completion = {
        "id": "c",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Calling.",
                    "reasoning_content": "need a tool",
                    "tool_calls": [
                        {
                            "id": "call_z",
                            "type": "function",
                            "function": {"name": "exec_command", "arguments": '{"cmd": "ls"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
    fake_upstream.script(Reply(json_body=completion))
    events = await read_events(await post(bridge, input="hi", tools=TOOLS, stream=True))
    final = events[-1]["response"]
    assert_ends(events)
    assert [o["type"] for o in final["output"]] == ["reasoning", "message", "function_call"]
    assert final["output"][2]["arguments"] == '{"cmd": "ls"}'
    assert final["usage"]["total_tokens"] == 8


@pytest.mark.parametrize(
    ("setting", "asked", "mirrored"),
    [
        ("auto", {"summary": "auto"}, True),
        ("auto", {"effort": "high"}, False),
        ("auto", None, False),
        ("always", None, True),
        ("never", {"summary": "detailed"}, False),
    ],
)
async def test_reasoning_summary_setting(
    fake_upstream: FakeUpstream,
    aiohttp_client: ClientFactory,
    setting: str,
    asked: dict[str, str] | None,
    mirrored: bool,
) -> None:
    config = bridge_config(fake_upstream.url, model=f'reasoning_summary = "{setting}"')
    client = await aiohttp_client(create_app(config))
    fake_upstream.script(thinking_text_reply(["deep thought"], ["ok"]))
    body: dict[str, Any] = {"input": "hi", "stream": True}
    if asked is not None:
        body["reasoning"] = asked
    events = await read_events(await post(client, **body))
    kinds = {e["type"] for e in events}
    assert ("response.reasoning_summary_text.delta" in kinds) is mirrored
    summary = events[-1]["response"]["output"][0]["summary"]
    assert summary == ([{"type": "summary_text", "text": "deep thought"}] if mirrored else [])


async def test_errors_name_what_to_fix(bridge: TestClient) -> None:
    response = await bridge.post("/v1/responses", json={"input": "hi"})
    body = await response.json()
    assert response.status == 400
    assert body["error"]["param"] == "model"
    for method, path in (("POST", "/responses"), ("GET", "/models"), ("GET", "/responses/r1")):
        response = await bridge.request(method, path)
        message = (await response.json())["error"]["message"]
        assert response.status == 404
        assert f"{method} /v1{path}" in message, message
    response = await bridge.get("/nothing")
    assert "/v1" not in (await response.json())["error"]["message"]
