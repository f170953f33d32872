"""Stored responses: previous_response_id, the response endpoints, reasoning recovery."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.sse import SSEParser
from tests.conftest import MODEL, assert_ends
from tests.fake_upstream import FakeUpstream, chunk, sse, thinking_text_reply, tool_call_reply

# The store's behaviour is the same on SQLite and PostgreSQL (tests/conftest.py).
STORE_BACKENDS = ["sqlite", "postgres"]

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "exec_command",
        "description": "Run a shell command.",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
    }
]
REASONING = "I will list the files first, then answer."


def tool_turn(call_id: str = "call_ls") -> Any:
    return tool_call_reply(REASONING, [(call_id, "exec_command", ['{"cmd": "ls"}'])])


async def test_previous_response_id_rebuilds_the_history(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(tool_turn(), thinking_text_reply(["Two files."], ["a.txt and b.txt"]))
    first = await sdk.responses.create(
        model=MODEL, input="What is here?", tools=TOOLS, instructions="Be terse."
    )
    call = first.output[-1]
    assert call.type == "function_call"
    second = await sdk.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "a.txt b.txt"}],
    )
    assert second.output_text == "a.txt and b.txt"
    assert second.previous_response_id == first.id
    messages = fake_upstream.requests[1]["messages"]
    # Instructions are not carried over (as in the Responses API); the chain is.
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[0]["content"] == "What is here?"
    assert messages[1]["reasoning_content"] == REASONING
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "content": "a.txt b.txt", "tool_call_id": call.call_id}


async def test_retrieve_input_items_and_delete(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply(["hm"], ["Hi!"]), thinking_text_reply([], ["Yes."]))
    first = await sdk.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [{"type": "input_text", "text": "Still there?"}]},
        ],
    )
    retrieved = await sdk.responses.retrieve(first.id)
    assert retrieved.model_dump() == first.model_dump()

    items = await sdk.responses.input_items.list(first.id)
    texts = [item.content[0].text for item in items.data]  # type: ignore[union-attr]
    assert texts == ["Still there?", "Hello"]  # newest first by default
    ascending = await sdk.responses.input_items.list(first.id, order="asc", limit=1)
    assert [i.content[0].text for i in ascending.data] == ["Hello"]  # type: ignore[union-attr]
    assert ascending.has_more is True
    rest = await sdk.responses.input_items.list(first.id, order="asc", after=ascending.last_id)
    assert [i.content[0].text for i in rest.data] == ["Still there?"]  # type: ignore[union-attr]
    assert rest.has_more is False

    second = await sdk.responses.create(model=MODEL, previous_response_id=first.id, input="?")
    await sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as broken:
        await sdk.responses.create(model=MODEL, previous_response_id=second.id, input="more")
    assert broken.value.code == "previous_response_not_found"
    assert first.id in broken.value.message


async def test_unknown_previous_response(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.responses.create(model=MODEL, previous_response_id="resp_nope", input="x")
    assert caught.value.code == "previous_response_not_found"


async def test_store_false_is_not_retrievable_but_its_reasoning_is_recovered(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(tool_turn("call_sf"), thinking_text_reply(["ok"], ["done"]))
    first = await sdk.responses.create(model=MODEL, input="go", tools=TOOLS, store=False)
    with pytest.raises(openai.NotFoundError):
        await sdk.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.responses.create(model=MODEL, previous_response_id=first.id, input="x")
    assert caught.value.code == "previous_response_not_found"
    # A replay that dropped the reasoning item: recovered by the tool call id.
    call = first.output[-1]
    replay = [
        {"role": "user", "content": "go"},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": "call_sf", "output": "x"},
    ]
    second = await sdk.responses.create(
        model=MODEL,
        input=replay,
        tools=TOOLS,
        store=False,  # type: ignore[arg-type]
    )
    assert second.output_text == "done"
    assert fake_upstream.requests[-1]["messages"][1]["reasoning_content"] == REASONING


async def test_text_turn_reasoning_is_recovered_by_fingerprint(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        thinking_text_reply(["Greeting ", "back."], ["Hello ", "to you."]),
        thinking_text_reply([], ["Fine."]),
    )
    await sdk.responses.create(model=MODEL, input="Hello", store=False)
    await sdk.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hello to you."},
            {"role": "user", "content": "How are you?"},
        ],
    )
    assistant = fake_upstream.requests[-1]["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": "Hello to you.",
        "reasoning_content": "Greeting back.",
    }


async def test_a_streamed_turn_is_stored_before_completed_is_sent(
    bridge_server: TestServer, fake_upstream: FakeUpstream, aiohttp_client: Any
) -> None:
    client: TestClient = await aiohttp_client(bridge_server)
    fake_upstream.script(tool_turn("call_fast"), thinking_text_reply([], ["next"]))
    response = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "go", "tools": TOOLS, "stream": True}
    )
    parser = SSEParser()
    completed = None
    async for data in response.content.iter_any():
        for event in parser.feed(data):
            if event.data == b"[DONE]":
                continue
            payload = json.loads(event.data)
            if payload["type"] == "response.completed":
                completed = payload["response"]
        if completed:
            break
    assert completed is not None
    # Straight away, while the first stream may still be open.
    follow_up = await client.post(
        "/v1/responses",
        json={
            "model": MODEL,
            "previous_response_id": completed["id"],
            "tools": TOOLS,
            "input": [{"type": "function_call_output", "call_id": "call_fast", "output": "x"}],
        },
    )
    assert follow_up.status == 200, await follow_up.text()
    response.close()
    assert fake_upstream.requests[-1]["messages"][1]["reasoning_content"] == REASONING


async def test_failed_turns_are_stored_as_failed_and_index_no_reasoning(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream, aiohttp_client: Any
) -> None:
    from tests.fake_upstream import Reply

    fake_upstream.script(
        Reply(
            [
                sse(chunk({"reasoning_content": "half a thought"})),
                sse(
                    chunk({"tool_calls": [{"index": 0, "id": "call_x", "function": {"name": "f"}}]})
                ),
            ]
        )
    )
    stream = await sdk.responses.create(model=MODEL, input="go", tools=TOOLS, stream=True)
    events = [event async for event in stream]
    assert_ends(events, "response.failed")
    stored = await sdk.responses.retrieve(events[-1].response.id)
    assert stored.status == "failed"
    assert stored.error is not None and stored.error.code == "server_error"
    # The failed turn's reasoning is not offered to replays.
    replay = [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "call_x", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_x", "output": "x"},
    ]
    with pytest.raises(openai.BadRequestError):
        await sdk.responses.create(model=MODEL, input=replay, tools=TOOLS)  # type: ignore[arg-type]


async def test_fifty_concurrent_streams_are_all_stored(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    count = 50
    fake_upstream.script(*[thinking_text_reply([f"r{i}"], [f"answer {i}"]) for i in range(count)])

    async def one(i: int) -> tuple[str, str]:
        async with sdk.responses.stream(model=MODEL, input=f"q{i}") as stream:
            final = await stream.get_final_response()
        return final.id, final.output_text

    results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), 60)
    assert len({rid for rid, _ in results}) == count
    for response_id, text in results:
        stored = await sdk.responses.retrieve(response_id)
        assert stored.status == "completed", stored.error
        assert stored.output_text == text


@pytest.mark.sqlite_only
async def test_store_files_are_private(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    fake_upstream.script(thinking_text_reply([], ["x"]))
    await sdk.responses.create(model=MODEL, input="x")
    assert state_directory.stat().st_mode & 0o777 == 0o700
    for path in state_directory.rglob("*"):
        private = 0o700 if path.is_dir() else 0o600  # the spool is a directory
        assert path.stat().st_mode & 0o777 == private, path
