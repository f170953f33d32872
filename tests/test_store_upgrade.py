"""A database written by the previous release (schema 2), upgraded and served.

tests/fixtures/store-v2-d47e249.db was produced by the code at commit d47e249 (the release
before conversation state v2) from these turns, through its real HTTP service:
- a stored chain: CHAIN_1 (a get_weather call, reasoning "legacy chain reasoning"), then
  CHAIN_2 (previous_response_id CHAIN_1, the call's output, text "It is sunny in Paris.");
- two Codex-like store: false turns in sessions SESSION_1 and SESSION_2, both calling
  `functions.get_weather:0` (Kimi's id format), reasoning "session N reasoning";
- a stored header-less text turn TEXT ("Done.", reasoning "done reasoning").
The old release had indexed the shared call id only for the second session.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.migrate import load_migrations
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import (
    KIMI_MISSING_REASONING,
    FakeUpstream,
    thinking_text_reply,
    tool_call_reply,
)

FIXTURE = Path(__file__).parent / "fixtures" / "store-v2-d47e249.db"
CHAIN_1 = "resp_44f49c31d74b7ae9abfcae7ddaff1842"
CHAIN_2 = "resp_c6f1a28521a99c516cf4cb79b18b7f2e"
TEXT = "resp_3332a2bcd7ed6da75a3f1de17a23f70e"
SESSION_1 = "11111111-aaaa-7000-8000-000000000001"
SESSION_2 = "22222222-bbbb-7000-8000-000000000002"
KIMI_CALL = "functions.get_weather:0"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def read_only(database: Path) -> sqlite3.Connection:
    """The fixture opened without any chance of creating or changing it."""
    assert database.exists(), f"{database} is missing"
    return sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)


def old_rows(database: Path) -> dict[str, dict[str, Any]]:
    """What the old release stored and served, read before the upgrade."""
    with closing(read_only(database)) as connection:
        rows = connection.execute("SELECT id, response, input_items, retrievable FROM responses")
        return {
            rid: {
                "response": json.loads(response),
                "input_items": json.loads(items),
                "retrievable": bool(retrievable),
            }
            for rid, response, items, retrievable in rows
        }


@pytest.fixture
def upgraded(tmp_path: Path) -> Path:
    database = tmp_path / "upgrade" / "bridge.db"
    database.parent.mkdir(mode=0o700)
    shutil.copy(FIXTURE, database)
    database.chmod(0o600)
    return database


@pytest.fixture
async def client(
    upgraded: Path,
    fake_upstream: FakeUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> TestClient:
    return await aiohttp_client(create_app(bridge_config(fake_upstream.url), store_file=upgraded))


def kimi_replay(session: int) -> list[dict[str, Any]]:
    """A store: false turn of the fixture replayed as Codex would, without its reasoning."""
    return [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": f"secret file {session}: cat .env"}],
        },
        {
            "type": "function_call",
            "call_id": KIMI_CALL,
            "name": "get_weather",
            "arguments": '{"city": "Oslo"}',
        },
        {"type": "function_call_output", "call_id": KIMI_CALL, "output": "cold"},
    ]


def test_the_fixture_is_a_version_2_database() -> None:
    with closing(read_only(FIXTURE)) as connection:
        versions = connection.execute("SELECT version FROM schema_migrations").fetchall()
    assert versions == [(1,), (2,)]


def without_added_fields(served: list[Any], old: list[Any]) -> bool:
    """Whether the served items are the old ones plus only what the Open Responses schema
    added since: a `status` on calls and their outputs, `annotations` on output text."""
    assert len(served) == len(old)
    for new_item, old_item in zip(served, old, strict=True):
        if "status" not in old_item:
            assert new_item.pop("status") == "completed"
        for part in new_item.get("content") or ():
            if isinstance(part, dict) and part.get("type") == "output_text":
                part.pop("annotations", None)
    return served == old


async def test_stored_responses_and_their_items_are_served_as_before(
    client: TestClient,
) -> None:
    before = old_rows(FIXTURE)
    for response_id in (CHAIN_1, CHAIN_2, TEXT):
        got = await client.get(f"/v1/responses/{response_id}")
        assert got.status == 200
        served = await got.json()
        old = before[response_id]["response"]
        # Every field as it was, but numbers the old release left null when the request
        # set none (the schema wants numbers now), and nulls the schema does not allow
        # (a reasoning item's encrypted_content, text.verbosity) left out; fields added
        # since come with defaults.
        expected = {k: v for k, v in old.items() if k not in ("temperature", "top_p")}
        expected["output"] = [
            {k: v for k, v in item.items() if not (k == "encrypted_content" and v is None)}
            for item in old["output"]
        ]
        expected["text"] = {k: v for k, v in old["text"].items() if v is not None}
        assert {k: served[k] for k in expected} == expected
        assert (old["temperature"], served["temperature"]) == (None, 1.0)
        assert served["presence_penalty"] == 0.0 and served["background"] is False
        page = await client.get(f"/v1/responses/{response_id}/input_items?order=asc")
        served_items = (await page.json())["data"]
        assert without_added_fields(served_items, before[response_id]["input_items"])
    one = await (await client.get(f"/v1/responses/{CHAIN_1}/input_items?limit=1")).json()
    assert without_added_fields(one["data"], before[CHAIN_1]["input_items"][-1:])
    assert one["has_more"] is True


async def test_a_stored_chain_continues_with_its_reasoning(
    client: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply([], ["Still sunny."]))
    answer = await client.post(
        "/v1/responses",
        json={"model": MODEL, "previous_response_id": CHAIN_2, "input": "And tomorrow?"},
    )
    assert answer.status == 200, await answer.text()
    messages = fake_upstream.requests[-1]["messages"]
    assert [m["role"] for m in messages] == [
        "user",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert messages[2]["reasoning_content"] == "legacy chain reasoning"
    assert messages[4]["content"] == "It is sunny in Paris."


async def test_output_items_of_old_responses_can_be_referenced(
    client: TestClient, fake_upstream: FakeUpstream
) -> None:
    """Migration 4 indexed the output items already stored, for item_reference inputs."""
    old = await (await client.get(f"/v1/responses/{CHAIN_2}")).json()
    message = next(item for item in old["output"] if item["type"] == "message")
    fake_upstream.script(thinking_text_reply([], ["Yes."]))
    answer = await client.post(
        "/v1/responses",
        json={
            "model": MODEL,
            "input": [
                {"type": "item_reference", "id": message["id"]},
                {"type": "message", "role": "user", "content": "Sure?"},
            ],
        },
    )
    assert answer.status == 200, await answer.text()
    sent = fake_upstream.requests[-1]["messages"]
    assert sent[0] == {"role": "assistant", "content": "It is sunny in Paris."}


@pytest.mark.parametrize(
    ("session", "reasoning"), [(1, "session 1 reasoning"), (2, "session 2 reasoning")]
)
async def test_each_legacy_session_gets_its_own_reasoning_back(
    client: TestClient, fake_upstream: FakeUpstream, session: int, reasoning: str
) -> None:
    fake_upstream.script(thinking_text_reply([], ["Wear a coat."]))
    session_id = SESSION_1 if session == 1 else SESSION_2
    answer = await client.post(
        "/v1/responses",
        json={"model": MODEL, "store": False, "tools": TOOLS, "input": kimi_replay(session)},
        headers={"session-id": session_id, "thread-id": session_id},
    )
    assert answer.status == 200, await answer.text()
    assert fake_upstream.requests[-1]["messages"][1]["reasoning_content"] == reasoning


async def test_legacy_reasoning_is_not_offered_outside_its_session(
    upgraded: Path,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    aiohttp_server: Any,
) -> None:
    strict = FakeUpstream(missing_reasoning=KIMI_MISSING_REASONING)
    server = await aiohttp_server(strict.app)
    strict.url = str(server.make_url("")).rstrip("/")
    client = await aiohttp_client(create_app(bridge_config(strict.url), store_file=upgraded))
    for headers in ({}, {"session-id": "someone-else", "thread-id": "someone-else"}):
        answer = await client.post(
            "/v1/responses",
            json={"model": MODEL, "store": False, "tools": TOOLS, "input": kimi_replay(1)},
            headers=headers,
        )
        assert answer.status == 400
        assert strict.requests[-1]["messages"][1].get("reasoning_content") is None


async def test_store_false_content_is_gone_and_the_file_is_sound(
    client: TestClient, upgraded: Path
) -> None:
    assert (await client.get("/readyz")).status == 200
    await client.close()  # checkpoints the WAL into the file
    data = upgraded.read_bytes()
    assert b"secret file 1" not in data and b"secret file 2" not in data
    with closing(sqlite3.connect(upgraded)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        version = connection.execute("SELECT max(version) FROM schema_migrations").fetchone()
        rows = connection.execute("SELECT id, stored FROM responses ORDER BY id").fetchall()
    assert version == (load_migrations()[-1].version,)
    assert sorted(rows) == sorted(
        (rid, int(row["retrievable"])) for rid, row in old_rows(FIXTURE).items()
    )


async def test_legacy_reasoning_never_wins_over_the_clients_own(
    client: TestClient, fake_upstream: FakeUpstream
) -> None:
    """The same call id (Kimi repeats them) in the same session, recorded again by this
    release: the client's own reasoning is restored, not the old release's."""
    headers = {"session-id": SESSION_1, "thread-id": SESSION_1}
    fake_upstream.script(
        tool_call_reply("fresh reasoning", [(KIMI_CALL, "get_weather", ['{"city": "Oslo"}'])])
    )
    first = await client.post(
        "/v1/responses",
        json={"model": MODEL, "store": False, "tools": TOOLS, "input": kimi_replay(1)[:1]},
        headers=headers,
    )
    assert first.status == 200, await first.text()
    fake_upstream.script(thinking_text_reply([], ["Wear a coat."]))
    answer = await client.post(
        "/v1/responses",
        json={"model": MODEL, "store": False, "tools": TOOLS, "input": kimi_replay(1)},
        headers=headers,
    )
    assert answer.status == 200, await answer.text()
    assert fake_upstream.requests[-1]["messages"][1]["reasoning_content"] == "fresh reasoning"
