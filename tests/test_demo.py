"""The built-in demo model: the shipped config.toml serves it when no provider key is set."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from bridge.app import create_app
from bridge.config import ConfigError
from bridge.config_load import parse_config
from bridge.demo import LABEL, DemoRequest, demo_mode, script, serving_keys
from bridge.errors import ApiError
from bridge.wire.chat import ChatFunctionCall, ChatMessage, ChatToolCall
from tests.codex_cli import CodexHome
from tests.conftest import assert_ends
from tests.processes import REPO, BridgeProcess, free_port, output_of

SHIPPED = REPO / "config.toml"
DEMO_CONFIG = """
[providers.demo]
profile = "demo"

[models.demo]
provider = "demo"
"""
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


async def sse_events(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    events = []
    async for line in response.content:
        if line.startswith(b"data: {"):
            events.append(json.loads(line[6:]))
    return events


async def test_the_shipped_config_serves_the_demo_without_a_key(tmp_path: Path) -> None:
    """The README's first command with no key set: the bridge starts, the demo streams
    reasoning and labelled text, the DeepSeek models say which variable to set."""
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(
        SHIPPED,
        free_port(),
        env={"DEEPSEEK_API_KEY": None, "STATE_DIRECTORY": str(tmp_path / "state")},
        log=log,
        log_level="info",
    )
    await bridge.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{bridge.url}/v1/responses",
                json={"model": "demo", "input": "Say hello.", "stream": True},
            ) as response:
                assert response.status == 200
                events = await sse_events(response)
            async with session.post(
                f"{bridge.url}/v1/responses",
                json={"model": "deepseek-v4-pro", "input": "Say hello."},
            ) as refused:
                assert refused.status == 404
                error = (await refused.json())["error"]
    finally:
        await bridge.stop()
    kinds = [event["type"] for event in events]
    assert "response.reasoning_text.delta" in kinds
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.output_text.delta")
    final = events[-1]
    assert_ends(final)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text.startswith(LABEL) and "Say hello." in text
    assert "DEEPSEEK_API_KEY" in error["message"] and error["param"] == "model"
    said = log.read_text()
    assert "demo mode: no provider key is set (DEEPSEEK_API_KEY)" in said
    assert "model deepseek-v4-pro -> provider deepseek" in said and "unusable" in said
    assert "model demo -> the built-in demo model" in said


def test_the_demo_mode_is_only_for_a_config_with_no_key_at_all() -> None:
    """An operator's config that lacks one of several keys still refuses to start."""
    config = parse_config(SHIPPED.read_text(), "config.toml")
    assert demo_mode(config, {})
    keys, missing = serving_keys(config, {})
    assert keys == {} and missing == {"deepseek"}
    assert serving_keys(config, {"DEEPSEEK_API_KEY": "sk-x"}) == ({"deepseek": "sk-x"}, set())
    two = parse_config(
        SHIPPED.read_text() + '\n[providers.kimi]\nbase_url = "https://api.moonshot.ai/v1"\n'
        'api_key_env = "MOONSHOT_API_KEY"\n[models.kimi]\nprovider = "kimi"\n',
        "config.toml",
    )
    assert not demo_mode(two, {"DEEPSEEK_API_KEY": "sk-x"})
    with pytest.raises(ConfigError, match="MOONSHOT_API_KEY"):
        serving_keys(two, {"DEEPSEEK_API_KEY": "sk-x"})
    without_demo = parse_config(
        SHIPPED.read_text().split("[providers.demo]")[0].rsplit("# The built-in demo", 1)[0],
        "config.toml",
    )
    assert not demo_mode(without_demo, {})
    with pytest.raises(ConfigError, match="DEEPSEEK_API_KEY"):
        serving_keys(without_demo, {})


def test_a_demo_provider_needs_no_base_url_but_others_do() -> None:
    assert parse_config(DEMO_CONFIG).providers["demo"].base_url == ""
    with pytest.raises(ConfigError, match=r"providers\.x\.base_url`: required"):
        parse_config('[providers.x]\napi_key_env = "K"\n')


@pytest.fixture
async def demo_sdk(aiohttp_server: Any) -> Any:
    server: TestServer = await aiohttp_server(create_app(parse_config(DEMO_CONFIG)))
    async with openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0
    ) as client:
        yield client


async def test_a_tool_loop_with_the_demo_replays_its_reasoning(demo_sdk: Any) -> None:
    """The demo calls the offered tool with arguments its schema asks for, then reports the
    tool's output; the second turn passes the demo's replay check only because the bridge
    restored the first turn's reasoning."""
    first = await demo_sdk.responses.create(
        model="demo", input="What is the weather in Paris?", tools=[WEATHER_TOOL]
    )
    assert first.status == "completed", first.error
    kinds = [item.type for item in first.output]
    assert kinds == ["reasoning", "message", "function_call"]
    call = first.output[-1]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "demo", "days": 1}
    second = await demo_sdk.responses.create(
        model="demo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21"}],
        tools=[WEATHER_TOOL],
    )
    assert second.status == "completed", second.error
    assert "The tool `get_weather` returned:\nsunny, 21" in second.output_text
    assert second.output_text.startswith(LABEL)


def test_the_demo_refuses_a_tool_call_turn_without_its_reasoning() -> None:
    call = ChatToolCall(id="call_1", function=ChatFunctionCall(name="f", arguments="{}"))
    messages = [
        ChatMessage(role="user", content="hi"),
        ChatMessage(role="assistant", content=None, tool_calls=[call]),
        ChatMessage(role="tool", content="ok", tool_call_id="call_1"),
    ]
    with pytest.raises(ApiError, match="no reasoning_content") as info:
        script(DemoRequest(messages=messages))
    assert info.value.status == 400
    messages[1].reasoning_content = "I call f."
    assert script(DemoRequest(messages=messages))


async def test_codex_runs_a_tool_through_the_demo(codex: str, tmp_path: Path) -> None:
    """No account anywhere: `codex-config --write` then the real Codex against the shipped
    config's demo model, which has Codex run a shell command and reports its output."""
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(SHIPPED.read_text().replace("port = 8787", f"port = {port}"))
    bridge = BridgeProcess(
        config,
        port,
        env={"DEEPSEEK_API_KEY": None, "STATE_DIRECTORY": str(tmp_path / "state")},
        log=tmp_path / "bridge.log",
    )
    home = CodexHome(codex, tmp_path, bridge.url)
    (home.home / "config.toml").unlink()
    env = {k: v for k, v in os.environ.items() if k != "DEEPSEEK_API_KEY"}
    env.update(CODEX_HOME=str(home.home), PATH=f"{Path(codex).parent}:{env['PATH']}")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "codex-config", "--config", str(config), "--write"),
        cwd=REPO,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await output_of(process, 120)
    assert process.returncode == 0, stderr.decode()
    assert "Codex gets the demo model" in stderr.decode()
    assert tomllib.loads((home.home / "config.toml").read_text())["model"] == "demo"
    await bridge.start()
    try:
        result = await home.run("Show me a tool call.")
    finally:
        await bridge.stop()
    assert result.returncode == 0, result.output[-3000:]
    assert "The tool `exec_command` returned:" in result.stdout, result.output[-3000:]
    assert "hello from the responses-bridge demo model" in result.stdout
