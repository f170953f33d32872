"""Real clients read the bridge's streams, heartbeats in the middle of an item included.

A thinking model may pause for minutes in the middle of its answer; the bridge then sends
heartbeats, which no client may mistake for state: openai-python (raw and its stream
helper), the Agents SDK, openai-node (raw and `responses.stream()`) and the AI SDK.
Codex's idle timer is in test_codex.py. The JavaScript clients come from npm
(`npm install --no-save openai@7 openai6@npm:openai@6.46.0 ai@7 @ai-sdk/openai@4`, as
.ci/run does); without them
those tests skip, unless REQUIRE_JS_CLIENTS=1 makes that a failure.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer

from bridge.app import create_app
from tests.conftest import JS, MODEL, bridge_config, node
from tests.fake_upstream import (
    DONE,
    FakeUpstream,
    Reply,
    chunk,
    sse,
    thinking_text_reply,
    tool_call_reply,
)
from tests.processes import REPO, output_of

PAUSE = 0.6  # seconds of upstream silence mid-item: about six heartbeats
TEXT = "The quick brown fox jumps."
ARGUMENTS = '{"city": "Paris"}'
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def paused(frames: list[bytes], at: int) -> Reply:
    return Reply(frames, pauses={at: PAUSE})


def scenario(name: str) -> Reply:
    """An answer with a long pause in the middle of its text, reasoning or call."""
    head = [sse(chunk({"role": "assistant", "reasoning_content": "Let me "}))]
    if name == "text":
        frames = [
            *head,
            sse(chunk({"reasoning_content": "think."})),
            sse(chunk({"content": "The quick "})),
            sse(chunk({"content": "brown fox jumps."})),
            sse(chunk(finish_reason="stop")),
            DONE,
        ]
        return paused(frames, 3)  # after "The quick "
    if name == "reasoning":
        frames = [
            *head,
            sse(chunk({"reasoning_content": "think."})),
            sse(chunk({"content": TEXT})),
            sse(chunk(finish_reason="stop")),
            DONE,
        ]
        return paused(frames, 1)  # after "Let me "
    call = {"index": 0, "id": "call_w", "type": "function"}
    frames = [
        *head,
        sse(
            chunk(
                {"tool_calls": [{**call, "function": {"name": "get_weather", "arguments": '{"ci'}}]}
            )
        ),
        sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]})),
        sse(chunk(finish_reason="tool_calls")),
        DONE,
    ]
    return paused(frames, 2)  # in the middle of the arguments


def expected(name: str) -> dict[str, Any]:
    if name == "tool":
        return {"model": MODEL, "arguments": ARGUMENTS, "tools": TOOLS}
    return {"model": MODEL, "text": TEXT}


@pytest.fixture
async def beating_bridge(
    fake_upstream: FakeUpstream, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> TestServer:
    """The bridge with a heartbeat every 0.1 s."""
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.1")
    return await aiohttp_server(create_app(config))


def base_url(server: TestServer) -> str:
    return str(server.make_url("/v1"))


SCENARIOS = ["text", "reasoning", "tool"]


@pytest.mark.parametrize("name", SCENARIOS)
async def test_openai_python_raw_events_and_helper(
    beating_bridge: TestServer, fake_upstream: FakeUpstream, name: str
) -> None:
    fake_upstream.script(scenario(name), scenario(name))
    tools: Any = TOOLS if name == "tool" else openai.omit
    async with openai.AsyncOpenAI(
        base_url=base_url(beating_bridge), api_key="unused", max_retries=0
    ) as client:
        stream = await client.responses.create(model=MODEL, input="hi", tools=tools, stream=True)
        events = [event async for event in stream]
        async with client.responses.stream(model=MODEL, input="hi", tools=tools) as helper:
            final = await helper.get_final_response()
    # The pause really put heartbeats inside an open item.
    first_item = next(i for i, e in enumerate(events) if e.type == "response.output_item.added")
    beats = [e for e in events[first_item:] if e.type == "response.in_progress"]
    assert len(beats) >= 2
    for response in (events[-1].response, final):
        assert response.status == "completed", response.error
        if name == "tool":
            call = next(item for item in response.output if item.type == "function_call")
            assert call.arguments == ARGUMENTS
        else:
            assert response.output_text == TEXT


@pytest.mark.parametrize("name", ["text", "reasoning"])
async def test_the_agents_sdk(
    beating_bridge: TestServer, fake_upstream: FakeUpstream, name: str
) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    fake_upstream.script(scenario(name), scenario(name))
    client = openai.AsyncOpenAI(base_url=base_url(beating_bridge), api_key="unused", max_retries=0)
    try:
        agent = agents.Agent(
            name="bridge",
            instructions="Answer.",
            model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
        )
        result = await agents.Runner.run(agent, "hi")
        assert result.final_output == TEXT
        streamed = agents.Runner.run_streamed(agent, "hi")
        async for _ in streamed.stream_events():
            pass
        assert streamed.final_output == TEXT
    finally:
        await client.close()


async def run_node(script: str, server: TestServer, name: str, *extra: str) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        node(),
        str(JS / script),
        base_url(server),
        json.dumps(expected(name)),
        *extra,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await output_of(process, 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    results = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert process.returncode == 0, f"{results} {err.decode()[-2000:]}"
    return results


# openai-node 6.x (up to 6.46) replaced its snapshot with response.in_progress's response:
# a heartbeat with an empty output broke its next delta; 7.x is the version users install now.
@pytest.mark.parametrize(
    "package", ["openai", "openai6"], ids=["openai-node-7", "openai-node-6.46"]
)
@pytest.mark.parametrize("name", SCENARIOS)
async def test_openai_node_raw_events_and_stream_helper(
    beating_bridge: TestServer, fake_upstream: FakeUpstream, name: str, package: str
) -> None:
    if not (REPO / "node_modules" / package).exists():
        node()  # skips, or fails under REQUIRE_JS_CLIENTS=1
        pytest.fail(f"npm package {package} is missing")
    fake_upstream.script(scenario(name), scenario(name))
    results = await run_node("openai_node.mjs", beating_bridge, name, package)
    assert [r["mode"] for r in results] == ["raw", "helper"]
    assert all(r["ok"] for r in results)


@pytest.mark.parametrize("name", SCENARIOS)
async def test_the_ai_sdk(
    beating_bridge: TestServer, fake_upstream: FakeUpstream, name: str
) -> None:
    fake_upstream.script(scenario(name))
    results = await run_node("ai_sdk.mjs", beating_bridge, name)
    assert results and results[0]["ok"], results


async def test_the_agents_sdk_sends_no_orphaned_tool_output(
    bridge_server: TestServer, fake_upstream: FakeUpstream
) -> None:
    """A session whose history is cut between a tool call and its output (a limit of two
    items): the SDK drops the output whose call was cut, so the bridge's 400 for a tool
    output that answers no call never meets it."""
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    fake_upstream.require_reasoning = False
    fake_upstream.script(
        tool_call_reply("Look it up.", [("call_w", "get_weather", ['{"city":"Oslo"}'])]),
        thinking_text_reply([], ["Sunny in Oslo."]),
        thinking_text_reply([], ["Still sunny."]),
    )

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"Sunny in {city}"

    client = openai.AsyncOpenAI(base_url=base_url(bridge_server), api_key="unused", max_retries=0)
    session = agents.SQLiteSession("orphans")
    try:
        agent = agents.Agent(
            name="bridge",
            instructions="Answer.",
            tools=[get_weather],
            model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
        )
        first = await agents.Runner.run(agent, "Weather in Oslo?", session=session)
        assert first.final_output == "Sunny in Oslo."
        kinds = [item.get("type") for item in await session.get_items()]
        assert "function_call" in kinds and "function_call_output" in kinds
        config = agents.RunConfig(session_settings=agents.SessionSettings(limit=2))
        second = await agents.Runner.run(agent, "And now?", session=session, run_config=config)
        assert second.final_output == "Still sunny."
    finally:
        session.close()
        await client.close()
    sent = fake_upstream.requests[-1]["messages"]
    assert all(message["role"] != "tool" for message in sent), sent
