"""The official openai SDK as a client of the running bridge."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pydantic
import pytest
from aiohttp.test_utils import TestServer
from openai.types.responses import Response, ResponseStreamEvent

from bridge.app import create_app
from bridge.sse import SSEParser
from tests.conftest import MODEL, bridge_config, decode_stream
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply

STRICT_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


async def test_stream_text(sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(thinking_text_reply(["Consider ", "this."], ["Hello", " SDK"]))
    seen: list[str] = []
    async with sdk.responses.stream(model=MODEL, input="hi", instructions="Be kind.") as stream:
        async for event in stream:
            seen.append(event.type)
        final = await stream.get_final_response()
    assert seen[0] == "response.created"
    assert seen[-1] == "response.completed", final.error
    assert "response.reasoning_text.delta" in seen
    assert final.output_text == "Hello SDK"
    assert final.status == "completed", final.error
    assert final.usage is not None and final.usage.total_tokens == 18
    reasoning = final.output[0]
    assert reasoning.type == "reasoning"
    assert reasoning.content is not None and reasoning.content[0].text == "Consider this."
    assert fake_upstream.requests[0]["messages"][0] == {"role": "system", "content": "Be kind."}


async def test_stream_tool_call(sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(
        tool_call_reply("Need weather.", [("call_w", "get_weather", ['{"city":', ' "Oslo"}'])])
    )
    deltas: list[str] = []
    async with sdk.responses.stream(model=MODEL, input="weather in Oslo?", tools=TOOLS) as stream:
        async for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert deltas == ['{"city":', ' "Oslo"}']
    call = final.output[-1]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == (
        "call_w",
        "get_weather",
        '{"city": "Oslo"}',
    )
    # The SDK parses strict tools' arguments itself.
    assert call.parsed_arguments == {"city": "Oslo"}  # type: ignore[union-attr]


async def test_create_non_streaming_and_follow_up(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        tool_call_reply("plan", [("call_1", "get_weather", ['{"city": "Rome"}'])]),
        thinking_text_reply(["ok"], ["Sunny in Rome."]),
    )
    first = await sdk.responses.create(
        model=MODEL, input="weather?", tools=TOOLS, include=["reasoning.encrypted_content"]
    )
    assert isinstance(first, Response)
    assert first.status == "completed", first.error
    call = first.output[-1]
    assert call.type == "function_call"
    second = await sdk.responses.create(
        model=MODEL,
        tools=TOOLS,
        input=[
            {"role": "user", "content": "weather?"},
            *[item.model_dump(exclude_none=True) for item in first.output],  # type: ignore[misc]
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == "Sunny in Rome."
    assert fake_upstream.requests[1]["messages"][1]["reasoning_content"] == "plan"


async def test_create_streaming_events_validate_strictly(
    bridge_server: TestServer, fake_upstream: FakeUpstream
) -> None:
    """Every event on the wire validates against the SDK's strict event union."""
    fake_upstream.script(
        tool_call_reply("r", [("c", "get_weather", ['{"city": "X"}'])], text="Checking.")
    )
    async with openai.AsyncOpenAI(
        base_url=str(bridge_server.make_url("/v1")), api_key="unused", max_retries=0
    ) as sdk:
        raw = await sdk.responses.with_raw_response.create(
            model=MODEL,
            input="x",
            tools=TOOLS,
            stream=True,
            include=["reasoning.encrypted_content"],
            reasoning={"summary": "auto"},
        )
        body = await raw.http_response.aread()
    parser = SSEParser()
    events = decode_stream([e.data for e in parser.feed(body) + parser.finish()])
    assert len(events) > 10
    assert "response.reasoning_summary_text.delta" in {e["type"] for e in events}
    for event in events:
        STRICT_EVENT.validate_python(event)
    Response.model_validate(events[-1]["response"], strict=False)


async def test_sdk_errors_are_typed(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.responses.create(model="no-such-model", input="x")
    assert caught.value.code == "model_not_found"
    assert MODEL in caught.value.message


async def test_models_list_and_retrieve(sdk: openai.AsyncOpenAI) -> None:
    page = await sdk.models.list()
    assert [m.id for m in page.data] == [MODEL]
    model = await sdk.models.retrieve(MODEL)
    assert (model.id, model.owned_by) == (MODEL, "fake")
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("nope")


async def test_heartbeats_between_items_keep_the_sdk_state_intact(
    fake_upstream: FakeUpstream, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.1")
    server = await aiohttp_server(create_app(config))
    reply = thinking_text_reply(["think"], ["Hello", " there"])
    reply.frame_delay = 0.25
    fake_upstream.script(reply)
    async with openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0
    ) as sdk:
        kinds: list[str] = []
        async with sdk.responses.stream(model=MODEL, input="hi") as stream:
            async for event in stream:
                kinds.append(event.type)
            final = await stream.get_final_response()
    first_item = kinds.index("response.output_item.added")
    assert "response.in_progress" in kinds[first_item:], "a heartbeat came mid-stream"
    assert final.output_text == "Hello there"
    assert [item.type for item in final.output] == ["reasoning", "message"]
