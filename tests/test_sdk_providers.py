"""The official openai SDK and the Agents SDK against strict fakes of the thinking providers:
tool loops whose replays each provider checks, and structured output on a provider that
has only a JSON mode."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import openai
import pydantic
import pytest
from aiohttp.test_utils import TestServer

from bridge.app import create_app
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream
from tests.provider_fakes import Call, DeepSeek, Gemini, MiniMax

ServerFactory = Callable[..., Awaitable[TestServer]]
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]


class Weather(pydantic.BaseModel):
    city: str
    celsius: float


@pytest.fixture
async def client_for(
    fake_upstream: FakeUpstream, aiohttp_server: ServerFactory
) -> AsyncIterator[Callable[[str], Awaitable[openai.AsyncOpenAI]]]:
    clients: list[openai.AsyncOpenAI] = []

    async def make(profile: str) -> openai.AsyncOpenAI:
        config = bridge_config(fake_upstream.url, provider=f'profile = "{profile}"')
        server = await aiohttp_server(create_app(config))
        client = openai.AsyncOpenAI(
            base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def call_of(response: Any) -> Any:
    return next(item for item in response.output if item.type == "function_call")


async def test_deepseek_tool_loop_with_a_reasoning_less_turn(
    fake_upstream: FakeUpstream, client_for: Callable[[str], Awaitable[openai.AsyncOpenAI]]
) -> None:
    rules = DeepSeek()
    fake_upstream.rules = rules
    client = await client_for("deepseek")
    fake_upstream.script(rules.turn(calls=[Call("d1", "read_file", '{"path": "a"}')]))
    first = await client.responses.create(model=MODEL, input="read a", tools=TOOLS)
    call = call_of(first)
    fake_upstream.script(rules.turn(reasoning="Read.", calls=[Call("d2", "read_file", "{}")]))
    second = await client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "alpha"}],
    )
    fake_upstream.script(rules.turn(reasoning="Both.", text="Alpha and beta."))
    third = await client.responses.create(
        model=MODEL,
        previous_response_id=second.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": "d2", "output": "beta"}],
    )
    assert third.output_text == "Alpha and beta."
    assert rules.refused == []


async def test_deepseek_structured_output_through_parse_and_the_agents_sdk(
    fake_upstream: FakeUpstream, client_for: Callable[[str], Awaitable[openai.AsyncOpenAI]]
) -> None:
    rules = DeepSeek()
    fake_upstream.rules = rules
    client = await client_for("deepseek")
    fake_upstream.script(rules.turn(reasoning="Cold.", text='{"city": "Oslo", "celsius": -3}'))
    parsed = await client.responses.parse(model=MODEL, input="Oslo?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Oslo", celsius=-3)
    # The schema reached the model, whose provider could not have been held to it.
    system = fake_upstream.requests[-1]["messages"][0]["content"]
    assert '"celsius"' in system and "Weather" in system
    # An answer that does not match is a clear error, not a parse failure in the client.
    fake_upstream.script(rules.turn(text='{"city": "Oslo"}'))
    with pytest.raises(openai.InternalServerError) as refused:
        await client.responses.parse(model=MODEL, input="Oslo?", text_format=Weather)
    assert "celsius" in str(refused.value) and "json_schema" in str(refused.value)

    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    agent = agents.Agent(
        name="forecaster",
        instructions="Give the weather.",
        output_type=Weather,
        model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
    )
    fake_upstream.script(rules.turn(text='{"city": "Bergen", "celsius": 7.5}'))
    result = await agents.Runner.run(agent, "Bergen?")
    assert result.final_output == Weather(city="Bergen", celsius=7.5)
    assert rules.refused == []


async def test_gemini_stateless_tool_loop(
    fake_upstream: FakeUpstream, client_for: Callable[[str], Awaitable[openai.AsyncOpenAI]]
) -> None:
    rules = Gemini()
    fake_upstream.rules = rules
    client = await client_for("gemini")
    history: list[Any] = [{"role": "user", "content": "read a"}]
    fake_upstream.script(rules.turn(thought="Read it.", calls=[Call("g1", "read_file", "{}")]))
    first = await client.responses.create(
        model=MODEL,
        input=history,
        tools=TOOLS,
        store=False,
        include=["reasoning.encrypted_content"],
    )
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": "g1", "output": "alpha"})
    fake_upstream.script(rules.turn(text="Alpha."))
    second = await client.responses.create(model=MODEL, input=history, tools=TOOLS, store=False)
    assert second.output_text == "Alpha."
    assert rules.refused == []


async def test_minimax_streamed_tool_loop(
    fake_upstream: FakeUpstream, client_for: Callable[[str], Awaitable[openai.AsyncOpenAI]]
) -> None:
    rules = MiniMax(cumulative=True)
    fake_upstream.rules = rules
    client = await client_for("minimax")
    fake_upstream.responder = lambda body: rules.turn(
        body, reasoning="I should read a first.", calls=[Call("m1", "read_file", "{}")]
    )
    async with client.responses.stream(model=MODEL, input="read a", tools=TOOLS) as stream:
        deltas = [
            event.delta async for event in stream if event.type.endswith("reasoning_text.delta")
        ]
        first = await stream.get_final_response()
    assert "".join(deltas) == "I should read a first."
    fake_upstream.responder = lambda body: rules.turn(body, reasoning="Done.", text="Alpha.")
    second = await client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": "m1", "output": "alpha"}],
    )
    assert second.output_text == "Alpha."
    assert json.dumps(fake_upstream.requests[-1]).count("reasoning_details") == 1
    assert rules.refused == []
