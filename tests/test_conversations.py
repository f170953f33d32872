"""The Conversations API, with the clients that use it: openai-python's
`client.conversations` and the Agents SDK's OpenAIConversationsSession."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.store import Store
from tests.conftest import MODEL, bridge_config, change_rows, database_rows
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply

# The store's behaviour is the same on SQLite and PostgreSQL (tests/conftest.py).
STORE_BACKENDS = ["sqlite", "postgres"]

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "read_file",
        "description": "Read a file.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]
REASONING = "The user wants notes.txt; read it first."


async def test_conversation_objects_and_items(sdk: openai.AsyncOpenAI) -> None:
    conversation = await sdk.conversations.create(
        metadata={"topic": "demo"},
        items=[
            {"type": "message", "role": "user", "content": "first"},
            {"type": "message", "role": "assistant", "content": "second"},
        ],
    )
    assert conversation.id.startswith("conv_")
    assert conversation.object == "conversation"
    assert conversation.metadata == {"topic": "demo"}

    fetched = await sdk.conversations.retrieve(conversation.id)
    assert (fetched.id, fetched.created_at) == (conversation.id, conversation.created_at)
    updated = await sdk.conversations.update(conversation.id, metadata={"topic": "other"})
    assert updated.metadata == {"topic": "other"}

    added = await sdk.conversations.items.create(
        conversation.id,
        items=[
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "third"}],
            }
        ],
    )
    assert len(added.data) == 1 and added.data[0].id.startswith("msg_")

    # Newest first by default; pages follow `after`.
    page = await sdk.conversations.items.list(conversation.id, limit=2)
    texts = [item.content[0].text for item in page.data]  # type: ignore[union-attr]
    assert texts == ["third", "second"] and page.has_more
    everything = [
        item async for item in sdk.conversations.items.list(conversation.id, limit=1, order="asc")
    ]
    assert [item.content[0].text for item in everything] == ["first", "second", "third"]  # type: ignore[union-attr]
    assert everything[1].role == "assistant"  # type: ignore[union-attr]
    assert everything[1].content[0].type == "output_text"  # type: ignore[union-attr]

    first = everything[0]
    item = await sdk.conversations.items.retrieve(first.id, conversation_id=conversation.id)
    assert item.id == first.id
    after_delete = await sdk.conversations.items.delete(first.id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id
    remaining = [i async for i in sdk.conversations.items.list(conversation.id, order="asc")]
    assert [i.id for i in remaining] == [i.id for i in everything[1:]]
    with pytest.raises(openai.NotFoundError):
        await sdk.conversations.items.retrieve(first.id, conversation_id=conversation.id)

    deleted = await sdk.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError):
        await sdk.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.conversations.items.list(conversation.id)


async def test_a_response_in_a_conversation_remembers_the_earlier_turns(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        thinking_text_reply(["Greet."], ["Hello Ada."]),
        thinking_text_reply(["Recall."], ["Your name is Ada."]),
    )
    conversation = await sdk.conversations.create()
    first = await sdk.responses.create(model=MODEL, input="I am Ada.", conversation=conversation.id)
    assert first.conversation is not None and first.conversation.id == conversation.id
    second = await sdk.responses.create(
        model=MODEL, input="What is my name?", conversation={"id": conversation.id}
    )
    assert second.output_text == "Your name is Ada."
    sent = fake_upstream.requests[1]["messages"]
    assert [(m["role"], m.get("content")) for m in sent] == [
        ("user", "I am Ada."),
        ("assistant", "Hello Ada."),
        ("user", "What is my name?"),
    ]
    items = [item async for item in sdk.conversations.items.list(conversation.id, order="asc")]
    assert [item.type for item in items] == [
        "message",
        "reasoning",
        "message",
        "message",
        "reasoning",
        "message",
    ]
    # The response's own input items are the turn's input only, under the same ids.
    own = await sdk.responses.input_items.list(second.id)
    assert [i.content[0].text for i in own.data] == ["What is my name?"]  # type: ignore[union-attr]
    assert own.data[0].id == items[3].id


async def test_reasoning_is_restored_inside_a_conversation(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    """A strict thinking upstream gets the tool-call turn's reasoning back, from the
    conversation's reasoning item, and from the index when the client removed that item."""
    fake_upstream.script(
        tool_call_reply(REASONING, [("call_n1", "read_file", ['{"path": "notes.txt"}'])]),
        thinking_text_reply(["Summarize."], ["The notes say hi."]),
        thinking_text_reply(["Again."], ["Still hi."]),
    )
    conversation = await sdk.conversations.create()
    first = await sdk.responses.create(
        model=MODEL, input="Summarize notes.txt", tools=TOOLS, conversation=conversation.id
    )
    call = first.output[-1]
    assert call.type == "function_call"
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "hi"}
    second = await sdk.responses.create(
        model=MODEL,
        input=[output],
        tools=TOOLS,
        conversation=conversation.id,  # type: ignore[list-item]
    )
    assert second.status == "completed", second.error
    assistant = fake_upstream.requests[1]["messages"][1]
    assert assistant["tool_calls"][0]["id"] == "call_n1"
    assert assistant["reasoning_content"] == REASONING

    # The client drops the reasoning items from its conversation: the index still has it.
    items = [item async for item in sdk.conversations.items.list(conversation.id, order="asc")]
    for item in items:
        if item.type == "reasoning":
            await sdk.conversations.items.delete(item.id, conversation_id=conversation.id)
    await sdk.responses.create(
        model=MODEL, input="and again?", tools=TOOLS, conversation=conversation.id
    )
    assistant = fake_upstream.requests[2]["messages"][1]
    assert assistant["tool_calls"][0]["id"] == "call_n1"
    assert assistant["reasoning_content"] == REASONING


async def test_failed_turns_leave_the_conversation_as_it_was(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    conversation = await sdk.conversations.create(
        items=[{"type": "message", "role": "user", "content": "kept"}]
    )
    # No scripted reply: the fake upstream answers 500.
    with pytest.raises(openai.APIStatusError):
        await sdk.responses.create(model=MODEL, input="lost", conversation=conversation.id)
    items = [item async for item in sdk.conversations.items.list(conversation.id)]
    assert [item.content[0].text for item in items] == ["kept"]  # type: ignore[union-attr]


async def test_conversation_requests_that_cannot_be_served(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    async def post(path: str, body: Any) -> tuple[int, dict[str, Any]]:
        response = await bridge.post(path, json=body)
        return response.status, await response.json()

    status, body = await post(
        "/v1/responses", {"model": MODEL, "input": "x", "conversation": "conv_missing"}
    )
    assert (status, body["error"]["param"]) == (404, "conversation")
    _, created = await post("/v1/conversations", {})
    status, body = await post(
        "/v1/responses",
        {
            "model": MODEL,
            "input": "x",
            "conversation": created["id"],
            "previous_response_id": "resp_1",
        },
    )
    assert (status, body["error"]["param"]) == (400, "conversation")
    status, body = await post("/v1/conversations", {"items": [{"role": "robot", "content": "x"}]})
    assert (status, body["error"]["param"]) == (400, "items[0].role")
    status, body = await post(
        "/v1/conversations", {"items": [{"type": "message", "role": "user", "content": "x"}] * 21}
    )
    assert (status, body["error"]["param"]) == (400, "items")
    status, body = await post("/v1/conversations", {"metadata": {"n": 1}})
    assert (status, body["error"]["param"]) == (400, "metadata")
    status, body = await post(f"/v1/conversations/{created['id']}/items", {})
    assert (status, body["error"]["param"]) == (400, "items")
    response = await bridge.get(f"/v1/conversations/{created['id']}/items?after=msg_nope")
    assert response.status == 400
    assert fake_upstream.requests == []


async def test_conversations_are_their_clients_own(
    aiohttp_server: Any, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    monkeypatch.setenv("BRIDGE_KEYS", "key-a key-b")
    config = bridge_config(fake_upstream.url, server='api_keys_env = "BRIDGE_KEYS"', store=store)
    server: TestServer = await aiohttp_server(
        create_app(config, {"fake": "k"}, client_keys=("key-a", "key-b"))
    )
    base = str(server.make_url("/v1"))
    async with (
        openai.AsyncOpenAI(api_key="key-a", base_url=base, max_retries=0) as owner,
        openai.AsyncOpenAI(api_key="key-b", base_url=base, max_retries=0) as other,
    ):
        conversation = await owner.conversations.create(
            items=[{"type": "message", "role": "user", "content": "secret"}]
        )
        with pytest.raises(openai.NotFoundError):
            await other.conversations.retrieve(conversation.id)
        with pytest.raises(openai.NotFoundError):
            await other.conversations.items.list(conversation.id)
        with pytest.raises(openai.NotFoundError):
            await other.conversations.delete(conversation.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(model=MODEL, input="x", conversation=conversation.id)
        assert (await owner.conversations.retrieve(conversation.id)).id == conversation.id
    assert fake_upstream.requests == []


async def test_the_agents_sdk_session_keeps_the_conversation(
    bridge_server: TestServer, fake_upstream: FakeUpstream
) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # no export to OpenAI's servers
    fake_upstream.script(
        tool_call_reply(REASONING, [("call_a1", "read_file", ['{"path": "notes.txt"}'])]),
        thinking_text_reply(["Answer."], ["The notes say hi."]),
        thinking_text_reply(["Recall."], ["You asked about notes.txt."]),
    )
    client = openai.AsyncOpenAI(
        base_url=str(bridge_server.make_url("/v1")), api_key="unused", max_retries=0
    )

    @agents.function_tool
    def read_file(path: str) -> str:
        """Read a file."""
        return "hi"

    agent = agents.Agent(
        name="reader",
        instructions="Be brief.",
        tools=[read_file],
        model=agents.OpenAIResponsesModel(model=MODEL, openai_client=client),
    )
    session = agents.OpenAIConversationsSession(openai_client=client)
    first = await agents.Runner.run(agent, "What is in notes.txt?", session=session)
    assert first.final_output == "The notes say hi."
    second = await agents.Runner.run(agent, "What did I ask?", session=session)
    assert second.final_output == "You asked about notes.txt."

    # The tool round trip reached a strict thinking upstream with its reasoning.
    assistant = fake_upstream.requests[1]["messages"][-2]
    assert assistant["tool_calls"][0]["id"] == "call_a1"
    assert assistant["reasoning_content"] == REASONING
    # The second run was given the whole first run from the conversation.
    sent = fake_upstream.requests[2]["messages"]
    texts = [m.get("content") for m in sent]
    assert "What is in notes.txt?" in texts and "The notes say hi." in texts
    assert sent[-1]["content"] == "What did I ask?"
    stored = await session.get_items()
    assert len(stored) >= 6
    await session.clear_session()
    await client.close()


async def test_idle_conversations_are_pruned_with_their_items(opened_store: Store) -> None:
    items = [(f"msg_{n}", b'{"type":"message","role":"user","content":"x"}') for n in range(5)]
    idle = await opened_store.create_conversation("conv_idle", "", b"{}", items)
    await opened_store.create_conversation("conv_used", "", b"{}", items)
    await change_rows(
        opened_store,
        "UPDATE conversations SET updated_at = updated_at - 40 * 86400 WHERE id = ?",
        idle.id,
    )
    await opened_store.prune(max_age_days=30, max_size_mb=1024)
    assert await opened_store.get_conversation("conv_idle", "") is None
    assert await opened_store.conversation_items("conv_idle", "") is None
    assert len(await opened_store.conversation_items("conv_used", "") or []) == 5
    left = await database_rows(
        opened_store,
        "SELECT count(*) FROM conversation_items WHERE conversation_id = ?",
        "conv_idle",
    )
    assert left == [(0,)]
