"""Streams that always end cleanly: every failure after the stream started becomes
response.failed and a clean end of the body, recorded as failed; each trigger found by the
hostile-input campaign reproduced."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.errors import parse_retry_after
from bridge.sse import SSEParser
from bridge.store.sqlite import SQLiteStore
from bridge.translate.reasoning import merge_details
from bridge.translate.stream import StreamTranslator
from tests.conftest import MODEL, assert_ends, bridge_config, decode_stream
from tests.fake_upstream import (
    DONE,
    FakeUpstream,
    Reply,
    chunk,
    sse,
    thinking_text_reply,
    tool_call_reply,
    usage_chunk,
)


async def stream_events(client: TestClient, body: dict[str, Any], **kw: Any) -> list[Any]:
    """POST a streamed request; every event, and the body must end cleanly (EOF)."""
    response = await client.post(
        "/v1/responses", json={"model": MODEL, "stream": True, **body}, **kw
    )
    assert response.status == 200, await response.text()
    raw = await response.read()  # raises on a torn chunked body
    assert b"HTTP/1.1" not in raw  # never a second response inside the stream
    parser = SSEParser()
    events = decode_stream([e.data for e in parser.feed(raw) + parser.finish() if e.data])
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(len(numbers)))
    return events


def stored_status(state: Path, response_id: str) -> str | None:
    with sqlite3.connect(state / "bridge.db") as db:
        row = db.execute("SELECT status FROM responses WHERE id = ?", (response_id,)).fetchone()
    return row[0] if row else None


# ---- the stream's error boundary -----------------------------------------------------------


async def test_invalid_utf8_in_an_upstream_chunk_fails_the_stream_cleanly(
    bridge: TestClient, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    fake_upstream.script(
        Reply(
            [
                sse(chunk({"content": "Hel"})),
                b'data: {"choices":[{"delta":{"content":"\xff"}}]}\n\n',
            ]
        )
    )
    events = await stream_events(bridge, {"input": "x"})
    final = events[-1]
    assert_ends(final, "response.failed")
    assert "malformed" in final["response"]["error"]["message"]
    assert stored_status(state_directory, final["response"]["id"]) == "failed"


async def test_the_openai_sdk_reads_a_failed_stream_without_a_transport_error(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(Reply([sse(chunk({"content": "Hel"})), b"data: {\xfe}\n\n"]))
    stream = await sdk.responses.create(model=MODEL, input="x", stream=True)
    events = [event async for event in stream]
    assert_ends(events, "response.failed")


@pytest.mark.parametrize(
    ("body", "charset"),
    [
        ('{"error": {"message": "请求过多，请稍后再试"}}'.encode("gbk"), "gbk"),
        ("服务器错误：上下文太长".encode("gbk"), None),
        (b"\xff\xfe\x00garbage", None),
    ],
    ids=["gbk-json-declared", "gbk-text-undeclared", "binary"],
)
async def test_an_upstream_error_body_in_any_charset_is_a_proper_error(
    bridge: TestClient, fake_upstream: FakeUpstream, body: bytes, charset: str | None
) -> None:
    content_type = f"application/json; charset={charset}" if charset else "text/plain"
    fake_upstream.script(Reply(status=400, raw_parts=[body], content_type=content_type))
    response = await bridge.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["message"].startswith("upstream: ")
    if charset:
        assert "请求过多" in error["message"]


async def test_an_error_body_sent_in_two_writes_is_read_whole(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    message = {"error": {"message": "This model's maximum context length is 8192 tokens."}}
    data = json.dumps(message).encode()
    fake_upstream.script(Reply(status=400, raw_parts=[data[:20], data[20:]]))
    response = await bridge.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert (await response.json())["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-1", "99999999999"])
async def test_a_nonsense_retry_after_is_ignored(
    bridge: TestClient, fake_upstream: FakeUpstream, value: str
) -> None:
    assert parse_retry_after(value) is None
    fake_upstream.script(
        Reply(status=429, error_body={"error": {"message": "slow"}}, headers={"Retry-After": value})
    )
    events = await stream_events(bridge, {"input": "x"})
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


async def test_a_session_header_that_is_not_utf8_is_stored(
    bridge: TestClient, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    fake_upstream.script(thinking_text_reply(["r"], ["ok"]))
    events = await stream_events(
        bridge,
        {"input": "x", "store": False},
        headers={"session-id": b"caf\xe9-\xff".decode("latin-1")},
    )
    assert_ends(events)
    assert events[-1]["response"]["store"] is False
    assert stored_status(state_directory, events[-1]["response"]["id"]) == "completed"


def test_reasoning_details_text_null_then_text_merge() -> None:
    merged = merge_details(
        [[{"index": 0, "type": "reasoning.text", "text": None}], [{"index": 0, "text": "ok"}]]
    )
    assert merged == [{"index": 0, "type": "reasoning.text", "text": "ok"}]


async def test_reasoning_details_text_null_then_text_streams(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        Reply(
            [
                sse(
                    chunk(
                        {
                            "reasoning_details": [
                                {"index": 0, "type": "reasoning.text", "text": None}
                            ]
                        }
                    )
                ),
                sse(chunk({"reasoning_details": [{"index": 0, "text": "thinking"}]})),
                sse(chunk({"content": "done"})),
                sse(chunk(finish_reason="stop")),
                DONE,
            ]
        )
    )
    events = await stream_events(bridge, {"input": "x"})
    assert_ends(events)


STAGES = ["upstream", "parse", "translate", "plan"]


def break_stage(monkeypatch: pytest.MonkeyPatch, stage: str, *, whole: bool = False) -> None:
    """Make one stage of a turn raise an error nobody planned for; `whole`: of a turn the
    provider answers with one JSON answer (its parse stage reads that)."""

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"injected failure in {stage}")

    target = {
        "upstream": "bridge.upstream.UpstreamClient.stream",
        "parse": (
            "bridge.wire.chat.ChatCompletion.as_chunk" if whole else "bridge.sse.SSEParser.feed"
        ),
        "translate": "bridge.translate.stream.StreamTranslator.add",
        "plan": "bridge.turn_plan.plan_turn",
    }[stage]
    monkeypatch.setattr(target, boom)


@pytest.mark.parametrize("stage", STAGES)
async def test_a_failure_at_any_stage_ends_the_stream_failed_and_recorded(
    bridge: TestClient,
    fake_upstream: FakeUpstream,
    state_directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    stage: str,
) -> None:
    fake_upstream.script(thinking_text_reply(["r"], ["a", "b"]))
    break_stage(monkeypatch, stage)
    response = await bridge.post(
        "/v1/responses", json={"model": MODEL, "stream": True, "input": "x"}
    )
    if stage == "plan":  # before the stream: an error in the one shape
        assert response.status == 500
        assert (await response.json())["error"]["type"] == "server_error"
        return
    raw = await response.read()
    # Split by hand: the test may have broken the bridge's own parser.
    datas = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"  # the stream ended cleanly
    final = json.loads(datas[-2])
    assert_ends(final, "response.failed")
    assert f"injected failure in {stage}" in final["response"]["error"]["message"]
    assert stored_status(state_directory, final["response"]["id"]) == "failed"


@pytest.mark.parametrize("stage", ["upstream", "parse", "translate"])
async def test_a_failure_at_any_stage_is_a_proper_error_without_streaming(
    bridge: TestClient, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    fake_upstream.script(thinking_text_reply(["r"], ["a"]))
    break_stage(monkeypatch, stage, whole=True)
    response = await bridge.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert response.status == 500
    error = (await response.json())["error"]
    assert error["type"] == "server_error" and stage in error["message"]


async def test_a_store_that_fails_unexpectedly_still_completes_the_turn(
    bridge: TestClient, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected failure in the store")

    monkeypatch.setattr(SQLiteStore, "save_turn", broken)
    fake_upstream.script(thinking_text_reply(["r"], ["answer"]))
    events = await stream_events(bridge, {"input": "x"})
    assert_ends(events)
    # It could not be kept, and says so: no client holds an id it cannot retrieve.
    assert events[-1]["response"]["store"] is False


# ---- retries and tool calls -------------------------------------------------------------


async def test_a_retry_starts_from_fresh_state(
    fake_upstream: FakeUpstream, aiohttp_client: Any
) -> None:
    config = bridge_config(fake_upstream.url, upstream="max_retries = 1")
    client: TestClient = await aiohttp_client(create_app(config))
    # A held-back `<thi` and a call without a name, then the connection drops.
    broken = Reply(
        [
            sse(chunk({"content": "<thi"})),
            sse(
                chunk(
                    {"tool_calls": [{"index": 0, "id": "call_x", "function": {"arguments": "{"}}]}
                )
            ),
            sse(chunk({"content": "never"})),
        ],
        drop_after=2,
    )
    fake_upstream.script(broken, thinking_text_reply([], ["Hello"]))
    events = await stream_events(client, {"input": "x"})
    final = events[-1]["response"]
    assert_ends(events)
    assert [item["type"] for item in final["output"]] == ["message"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert len(fake_upstream.requests) == 2


def translated(frames: list[dict[str, Any]]) -> Any:
    from bridge.translate.tools import ToolMap
    from bridge.wire.chat import CHUNK_DECODER
    from bridge.wire.events import ResponseObject

    translator = StreamTranslator(ResponseObject(id="resp_t", created_at=0, model="m"), ToolMap())
    translator.start()
    for frame in frames:
        translator.add(CHUNK_DECODER.decode(json.dumps(frame)))
    translator.finish()
    return translator.response


def test_fragments_follow_a_call_moved_by_a_repeated_index() -> None:
    def call(index: int | None, **fields: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    response = translated(
        [
            call(0, id="call_a", function={"name": "f", "arguments": ""}),
            call(0, function={"arguments": '{"a":1}'}),
            call(0, id="call_b", function={"name": "g", "arguments": ""}),
            call(0, function={"arguments": '{"b":2}'}),
            chunk(finish_reason="tool_calls"),
        ]
    )
    calls = {item.call_id: item.arguments for item in response.output}
    assert calls == {"call_a": '{"a":1}', "call_b": '{"b":2}'}


def test_a_null_tool_call_index_is_treated_as_absent() -> None:
    response = translated(
        [
            chunk({"tool_calls": [{"index": None, "id": "call_n", "function": {"name": "f"}}]}),
            chunk({"tool_calls": [{"index": None, "function": {"arguments": '{"x":1}'}}]}),
            chunk({"tool_calls": [{"index": None, "id": "call_m", "function": {"name": "g"}}]}),
            chunk({"tool_calls": [{"index": None, "function": {"arguments": "{}"}}]}),
            chunk(finish_reason="tool_calls"),
        ]
    )
    calls = {item.call_id: (item.name, item.arguments) for item in response.output}
    assert calls == {"call_n": ("f", '{"x":1}'), "call_m": ("g", "{}")}


def test_kimi_usage_inside_the_choice_and_moonshot_cached_tokens() -> None:
    response = translated(
        [
            chunk({"content": "hi"}),
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {},
                        "finish_reason": "stop",
                        "usage": {
                            "prompt_tokens": 40,
                            "completion_tokens": 3,
                            "total_tokens": 43,
                            "cached_tokens": 32,
                        },
                    }
                ]
            },
        ]
    )
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (40, 3, 43)
    assert usage.input_tokens_details.cached_tokens == 32


async def test_usage_in_the_choice_reaches_the_client(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    last = chunk(finish_reason="stop")
    last["choices"][0]["usage"] = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    fake_upstream.script(Reply([sse(chunk({"content": "hi"})), sse(last), DONE]))
    events = await stream_events(bridge, {"input": "x"})
    assert events[-1]["response"]["usage"]["input_tokens"] == 9


__all__ = ["asyncio", "tool_call_reply", "usage_chunk"]


# ---- heartbeats -------------------------------------------------------------------------------


async def test_heartbeats_fill_a_slow_store_write_in_order_and_never_follow_the_end(
    fake_upstream: FakeUpstream, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.1")
    client: TestClient = await aiohttp_client(create_app(config))
    real_save = SQLiteStore.save_turn

    async def slow_save(self: SQLiteStore, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.6)
        await real_save(self, *args, **kwargs)

    monkeypatch.setattr(SQLiteStore, "save_turn", slow_save)
    fake_upstream.script(thinking_text_reply(["r"], ["answer"]))
    events = await stream_events(client, {"input": "x"})  # checks the numbering
    assert_ends(events)
    kinds = [event["type"] for event in events]
    done = kinds.index("response.output_item.done", kinds.index("response.output_text.done"))
    beats_during_write = [k for k in kinds[done + 1 : -1]]
    assert len(beats_during_write) >= 3, kinds
    await asyncio.sleep(0.4)  # nothing may come after the end (the body has ended anyway)
