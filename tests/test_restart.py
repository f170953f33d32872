"""A conversation survives `kill -9` of the bridge: the real process, the real database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import MODEL
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply
from tests.processes import BridgeProcess

REPO = Path(__file__).resolve().parents[1]
REASONING = "The user wants a file; exec_command can create it. Use echo."
TOOLS: list[Any] = [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}]


async def create(session: aiohttp.ClientSession, url: str, **body: Any) -> dict[str, Any]:
    async with session.post(f"{url}/v1/responses", json={"model": MODEL, **body}) as response:
        payload: dict[str, Any] = await response.json()
        assert response.status == 200, payload
        return payload


async def test_conversation_continues_after_kill_9(
    bridge_process: BridgeProcess, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        tool_call_reply(REASONING, [("call_k9", "exec_command", ['{"cmd": "echo hi > a"}'])]),
        thinking_text_reply(["done"], ["Created a."]),
        thinking_text_reply(["done again"], ["Created a, again."]),
    )
    async with aiohttp.ClientSession() as session:
        first = await create(session, bridge_process.url, input="make file a", tools=TOOLS)
        assert first["output"][-1]["call_id"] == "call_k9"

        await bridge_process.kill()
        await bridge_process.start()

        # (a) previous_response_id + the tool's output.
        second = await create(
            session,
            bridge_process.url,
            previous_response_id=first["id"],
            tools=TOOLS,
            input=[{"type": "function_call_output", "call_id": "call_k9", "output": ""}],
        )
        assert second["status"] == "completed", second.get("error")
        assistant = fake_upstream.requests[1]["messages"][1]
        assert assistant["reasoning_content"] == REASONING
        assert assistant["tool_calls"][0]["id"] == "call_k9"

        # (b) a full replay that carries no reasoning item at all.
        call = first["output"][-1]
        replay = [
            {"role": "user", "content": "make file a"},
            {k: call[k] for k in ("type", "call_id", "name", "arguments")},
            {"type": "function_call_output", "call_id": "call_k9", "output": ""},
        ]
        third = await create(session, bridge_process.url, input=replay, tools=TOOLS)
        assert third["status"] == "completed", third.get("error")
        assistant = fake_upstream.requests[2]["messages"][1]
        assert assistant["reasoning_content"] == REASONING


async def test_a_killed_bridge_keeps_every_completed_response(
    bridge_process: BridgeProcess, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(*[thinking_text_reply(["r"], [f"answer {i}"]) for i in range(5)])
    async with aiohttp.ClientSession() as session:
        ids = [(await create(session, bridge_process.url, input=f"q{i}"))["id"] for i in range(5)]
        await bridge_process.kill()
        await bridge_process.start()
        for index, response_id in enumerate(ids):
            async with session.get(f"{bridge_process.url}/v1/responses/{response_id}") as got:
                stored = await got.json()
                assert got.status == 200
                assert stored["output"][-1]["content"][0]["text"] == f"answer {index}"
    assert os.path.exists(bridge_process.config)
