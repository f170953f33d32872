"""Conversation state: reasoning restored only within its scope, storage that grows with
content, reads that never wait, and a damaged database that is never written to."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.app_keys import STORE
from bridge.exit_codes import Exit
from bridge.migrate import load_migrations
from bridge.records import record_turn
from bridge.scope import Scope
from bridge.store.sqlite import SQLiteStore
from bridge.wire.events import MessageOutput, OutputTextPart, ResponseObject
from bridge.wire.responses import ResponsesRequest
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import (
    KIMI_MISSING_REASONING,
    FakeUpstream,
    Reply,
    thinking_text_reply,
    tool_call_reply,
)
from tests.processes import REPO

# The store's behaviour is the same on SQLite and PostgreSQL (tests/conftest.py).
STORE_BACKENDS = ["sqlite", "postgres"]

ClientFactory = Callable[..., Awaitable[TestClient]]
ServerFactory = Callable[..., Awaitable[TestServer]]
KEY_A, KEY_B = "client-key-a", "client-key-b"
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
KIMI_CALL = "functions.get_weather:0"


@pytest.fixture
async def kimi(aiohttp_server: ServerFactory) -> FakeUpstream:
    """A strict thinking upstream: a tool-call turn without its reasoning is a 400."""
    fake = FakeUpstream(missing_reasoning=KIMI_MISSING_REASONING)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def keyed(kimi: FakeUpstream, aiohttp_client: ClientFactory, store: str) -> TestClient:
    """The bridge with two client keys."""
    app = create_app(bridge_config(kimi.url, store=store), client_keys=(KEY_A, KEY_B))
    return await aiohttp_client(app)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def weather_turn(question: str) -> list[dict[str, Any]]:
    """A conversation with one get_weather call (Kimi's id), replayed without reasoning."""
    return [
        {"role": "user", "content": question},
        {
            "type": "function_call",
            "call_id": KIMI_CALL,
            "name": "get_weather",
            "arguments": '{"city": "Oslo"}',
        },
        {"type": "function_call_output", "call_id": KIMI_CALL, "output": "cold"},
    ]


def weather_reply(reasoning: str) -> Reply:
    return tool_call_reply(reasoning, [(KIMI_CALL, "get_weather", ['{"city": "Oslo"}'])])


async def post(client: TestClient, body: dict[str, Any], headers: dict[str, str]) -> Any:
    response = await client.post("/v1/responses", json={"model": MODEL, **body}, headers=headers)
    return response.status, await response.json()


# ---- scoped reasoning ------------------------------------------------------------------


@pytest.mark.parametrize(
    "conversation",
    [{}, {"session-id": "shared-session", "thread-id": "shared-session"}],
    ids=["no-headers", "same-session-header"],
)
async def test_another_client_key_never_gets_the_reasoning(
    keyed: TestClient, kimi: FakeUpstream, conversation: dict[str, str]
) -> None:
    kimi.script(weather_reply("A's private reasoning"))
    status, _ = await post(
        keyed,
        {"input": "Weather in Oslo?", "tools": TOOLS, "store": False},
        {**bearer(KEY_A), **conversation},
    )
    assert status == 200
    # B replays the very same conversation without reasoning items: nothing of A's is sent.
    kimi.script(thinking_text_reply([], ["unused"]))
    status, error = await post(
        keyed,
        {"input": weather_turn("Weather in Oslo?"), "tools": TOOLS, "store": False},
        {**bearer(KEY_B), **conversation},
    )
    assert status == 400, error
    assert "reasoning_content is missing" in error["error"]["message"]
    assert "reasoning_content" not in kimi.requests[-1]["messages"][1]
    # A's own replay gets it back.
    status, _ = await post(
        keyed,
        {"input": weather_turn("Weather in Oslo?"), "tools": TOOLS, "store": False},
        {**bearer(KEY_A), **conversation},
    )
    assert status == 200
    assert kimi.requests[-1]["messages"][1]["reasoning_content"] == "A's private reasoning"


@pytest.mark.parametrize("with_headers", [False, True], ids=["no-headers", "session-headers"])
async def test_the_same_answer_text_in_two_conversations_keeps_its_own_reasoning(
    bridge: TestClient, fake_upstream: FakeUpstream, with_headers: bool
) -> None:
    def headers(name: str) -> dict[str, str]:
        return {"session-id": name, "thread-id": name} if with_headers else {}

    questions = {"one": "Clean up the temp files.", "two": "Rotate the logs."}
    for name, question in questions.items():
        fake_upstream.script(thinking_text_reply([f"conversation {name} reasoning"], ["Done."]))
        status, _ = await post(bridge, {"input": question, "store": False}, headers(name))
        assert status == 200
    for name in ("two", "one"):
        fake_upstream.script(thinking_text_reply([], ["You are welcome."]))
        replay = [
            {"role": "user", "content": questions[name]},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "Thanks."},
        ]
        status, _ = await post(bridge, {"input": replay, "store": False}, headers(name))
        assert status == 200
        assistant = fake_upstream.requests[-1]["messages"][1]
        assert assistant["reasoning_content"] == f"conversation {name} reasoning"
    # A conversation that never had this answer gets no reasoning for it.
    fake_upstream.script(thinking_text_reply([], ["ok"]))
    stranger = [
        {"role": "user", "content": "Something else."},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "Thanks."},
    ]
    status, _ = await post(bridge, {"input": stranger, "store": False}, headers("three"))
    assert status == 200
    assert "reasoning_content" not in fake_upstream.requests[-1]["messages"][1]


def session_reply(body: dict[str, Any]) -> Reply:
    """Two parallel calls per turn with Kimi's counter ids, the same in every session."""
    last = body["messages"][-1]
    session, _, turn = str(last["content"]).partition(":")
    if last["role"] == "user":
        session, turn = session.removeprefix("start "), "-1"
    next_turn = int(turn) + 1
    if next_turn == 20:
        return thinking_text_reply([f"{session} wraps up"], ["All done."])
    calls = [
        (f"functions.exec:{2 * next_turn + i}", "exec", [json.dumps({"step": next_turn})])
        for i in range(2)
    ]
    return tool_call_reply(f"{session} turn {next_turn} reasoning", calls)


async def play_codex_session(client: TestClient, session: str) -> None:
    """20 tool turns, replayed each time without reasoning items (the store restores it)."""
    headers = {"session-id": session, "thread-id": session}
    history: list[dict[str, Any]] = [{"role": "user", "content": f"start {session}"}]
    for _ in range(21):
        body = {"input": history, "tools": [{"type": "function", "name": "exec"}], "store": False}
        status, response = await post(client, body, headers)
        assert status == 200, response
        calls = [item for item in response["output"] if item["type"] == "function_call"]
        if not calls:
            return
        history += [{k: v for k, v in call.items() if k != "id"} for call in calls]
        turn = json.loads(calls[0]["arguments"])["step"]
        history += [
            {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": f"{session}:{turn}",
            }
            for call in calls
        ]
        await asyncio.sleep(0)  # let the other session interleave
    raise AssertionError("the session did not end")


async def test_parallel_codex_sessions_with_the_same_call_ids_never_mix(
    kimi: FakeUpstream, aiohttp_client: ClientFactory, store: str
) -> None:
    client = await aiohttp_client(create_app(bridge_config(kimi.url, store=store)))
    kimi.responder = session_reply
    await asyncio.wait_for(
        asyncio.gather(play_codex_session(client, "A"), play_codex_session(client, "B")), 60
    )
    checked = 0
    for body in kimi.requests:
        session = body["messages"][0]["content"].removeprefix("start ")
        for message in body["messages"]:
            for call in message.get("tool_calls") or ():
                turn = int(call["id"].rpartition(":")[2]) // 2
                assert message["reasoning_content"] == f"{session} turn {turn} reasoning"
                checked += 1
    assert checked == 2 * 2 * sum(range(1, 21))  # every replayed call of both sessions


async def test_stored_responses_are_visible_to_their_own_client_only(
    keyed: TestClient, kimi: FakeUpstream
) -> None:
    kimi.script(thinking_text_reply(["private"], ["A's answer"]))
    status, created = await post(keyed, {"input": "hello"}, bearer(KEY_A))
    assert status == 200
    rid = created["id"]
    for path in (f"/v1/responses/{rid}", f"/v1/responses/{rid}/input_items"):
        assert (await keyed.get(path, headers=bearer(KEY_B))).status == 404
        assert (await keyed.get(path, headers=bearer(KEY_A))).status == 200
    status, error = await post(keyed, {"previous_response_id": rid, "input": "more"}, bearer(KEY_B))
    assert status == 404
    assert error["error"]["code"] == "previous_response_not_found"
    assert (await keyed.delete(f"/v1/responses/{rid}", headers=bearer(KEY_B))).status == 404
    assert (await keyed.delete(f"/v1/responses/{rid}", headers=bearer(KEY_A))).status == 200


# ---- storage -----------------------------------------------------------------------------


def rows(database: Path, query: str) -> list[Any]:
    with closing(sqlite3.connect(database)) as connection:
        return connection.execute(query).fetchall()


async def all_input_items(client: TestClient, response_id: str) -> list[dict[str, Any]]:
    """Every input item through the paged endpoint (ascending, 7 at a time)."""
    items: list[dict[str, Any]] = []
    after = None
    for _ in range(1000):
        query = f"order=asc&limit=7{f'&after={after}' if after else ''}"
        page = await (await client.get(f"/v1/responses/{response_id}/input_items?{query}")).json()
        items += page["data"]
        if not page["has_more"]:
            return items
        after = page["last_id"]
    raise AssertionError("paging did not end")


@pytest.mark.sqlite_only
async def test_a_replaying_client_stores_each_item_once_and_gets_every_response_back(
    bridge: TestClient, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    history: list[dict[str, Any]] = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go."}]}
    ]
    sent: dict[str, list[dict[str, Any]]] = {}
    created: dict[str, Any] = {}
    for turn in range(12):
        call_id = f"call_{turn}"
        fake_upstream.script(
            tool_call_reply(f"step {turn}", [(call_id, "get_weather", ['{"city": "Oslo"}'])])
        )
        status, response = await post(bridge, {"input": history, "tools": TOOLS}, {})
        assert status == 200
        sent[response["id"]] = [dict(item) for item in history]
        created[response["id"]] = response
        history += response["output"]
        history.append({"type": "function_call_output", "call_id": call_id, "output": f"r{turn}"})
    database = state_directory / "bridge.db"
    # 1 question, then per turn: its 2 output items and 1 tool output: each stored once.
    assert rows(database, "SELECT count(*) FROM input_items") == [(1 + 3 * 11,)]
    assert rows(database, "SELECT count(*) FROM blobs") == [(1,)]  # the tool list, once
    for response_id, items in sent.items():
        assert (
            await (await bridge.get(f"/v1/responses/{response_id}")).json() == created[response_id]
        )
        listed = await all_input_items(bridge, response_id)
        assert len(listed) == len(items)
        for given, shown in zip(items, listed, strict=True):
            # Listed as the specification's items are: without null fields.
            given = {k: v for k, v in given.items() if v is not None}
            assert {k: v for k, v in shown.items() if k in given} == given
            assert shown["id"]
        newest = await (await bridge.get(f"/v1/responses/{response_id}/input_items?limit=1")).json()
        assert newest["data"] == listed[-1:]


@pytest.mark.sqlite_only
async def test_deleting_a_response_that_later_ones_extend_keeps_their_items(
    bridge: TestClient, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    history: list[dict[str, Any]] = [{"role": "user", "content": "Go."}]
    ids = []
    for turn in range(3):
        fake_upstream.script(thinking_text_reply([], [f"answer {turn}"]))
        _, response = await post(bridge, {"input": history}, {})
        ids.append(response["id"])
        history += response["output"] + [{"role": "user", "content": f"more {turn}"}]
    before = await all_input_items(bridge, ids[2])
    for response_id in ids[:2]:
        assert (await bridge.delete(f"/v1/responses/{response_id}")).status == 200
        assert (await bridge.get(f"/v1/responses/{response_id}")).status == 404
    assert await all_input_items(bridge, ids[2]) == before
    assert (await bridge.delete(f"/v1/responses/{ids[2]}")).status == 200
    database = state_directory / "bridge.db"
    assert rows(database, "SELECT count(*) FROM input_items") == [(0,)]
    assert rows(database, "SELECT count(*) FROM responses") == [(0,)]


@pytest.mark.sqlite_only
async def test_store_false_keeps_the_reasoning_and_no_content(
    bridge: TestClient, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    fake_upstream.script(
        tool_call_reply("a thought worth keeping", [("call_env", "get_weather", ['{"city": "X"}'])])
    )
    secret = "OPENAI_API_KEY=sk-do-not-keep-me"
    status, response = await post(
        bridge,
        {"input": f"cat .env gives {secret}", "tools": TOOLS, "store": False},
        {"session-id": "s-1", "thread-id": "s-1"},
    )
    assert status == 200
    await bridge.close()  # checkpoints the WAL into the file
    database = state_directory / "bridge.db"
    data = b"".join(
        path.read_bytes() for path in state_directory.iterdir() if path.name.startswith("bridge")
    )
    assert secret.encode() not in data
    assert b"get_weather" not in data  # neither the tool list nor the call
    assert b"a thought worth keeping" in data
    assert rows(database, "SELECT id, stored, request, response FROM responses") == [
        (response["id"], 0, None, None)
    ]
    assert rows(database, "SELECT count(*) FROM input_items") == [(0,)]


# ---- reads ----------------------------------------------------------------------------------


def big_input_response(count: int) -> tuple[ResponsesRequest, ResponseObject]:
    items = [{"role": "user", "content": f"item {n}"} for n in range(count)]
    request = msgspec.json.decode(
        msgspec.json.encode({"model": MODEL, "input": items}), type=ResponsesRequest
    )
    response = ResponseObject(
        id="resp_" + "b" * 32,
        created_at=int(time.time()),
        model=MODEL,
        status="completed",
        output=[
            MessageOutput(id="msg_big", status="completed", content=[OutputTextPart(text="k")])
        ],
    )
    return request, response


async def test_a_200k_item_response_pages_without_stalling_other_streams(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """A page of a 200,000-item input is found by its index: it takes about as long as a
    page of a 10-item one (read the same way, at the same time, so a loaded machine slows
    both), while another client's stream goes on. Absolute limits here (a 0.25 s loop lag)
    failed on a machine loaded by other work."""
    store = bridge.server.app[STORE]  # type: ignore[union-attr]
    request, response = big_input_response(200_000)
    await store.save_turn(record_turn(request, response, Scope()))
    small_request, small = big_input_response(10)
    small = msgspec.structs.replace(small, id="resp_" + "c" * 32)
    await store.save_turn(record_turn(small_request, small, Scope()))
    # Another client's stream, one event every 20 ms, while 45 clients page each input.
    fake_upstream.script(
        Reply(thinking_text_reply([], [f"w{n} " for n in range(40)]).frames, frame_delay=0.02)
    )
    stream = asyncio.ensure_future(
        bridge.post("/v1/responses", json={"model": MODEL, "input": "talk", "stream": True})
    )

    async def newest(response_id: str, last: str) -> float:
        began = time.monotonic()
        page = await (await bridge.get(f"/v1/responses/{response_id}/input_items?limit=1")).json()
        assert page["data"][0]["content"][0]["text"] == last
        assert page["has_more"] is True
        return time.monotonic() - began

    times = await asyncio.gather(
        *(newest(response.id, "item 199999") for _ in range(45)),
        *(newest(small.id, "item 9") for _ in range(45)),
    )
    big_times, small_times = sorted(times[:45]), sorted(times[45:])
    oldest = await bridge.get(f"/v1/responses/{response.id}/input_items?order=asc&limit=2")
    assert [i["content"][0]["text"] for i in (await oldest.json())["data"]] == ["item 0", "item 1"]
    events = await (await stream).text()
    assert "response.completed" in events
    # Read without the index, the big input's page would take thousands of times longer.
    assert big_times[22] < 5 * small_times[22] + 0.05, (big_times[22], small_times[22])


async def test_reads_do_not_wait_for_a_long_write(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "bridge.db")
    try:
        small_request, small = big_input_response(1)
        small.id = "resp_small"
        await store.save_turn(record_turn(small_request, small, Scope()))
        request, response = big_input_response(50_000)  # about 0.5 s to write here
        writing = asyncio.ensure_future(store.save_turn(record_turn(request, response, Scope())))
        await asyncio.sleep(0.05)  # the write is under way in the writer's thread
        assert not writing.done()
        got = await store.get_response("resp_small")
        assert got is not None and not writing.done()
        await writing
    finally:
        await store.close()


# ---- integrity -------------------------------------------------------------------------------


def corrupt_a_table(database: Path) -> None:
    """Overwrite the root page of input_items with a page type SQLite does not know."""
    with closing(sqlite3.connect(database)) as connection:
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'input_items'"
        ).fetchone()
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    with database.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\x77" * 64)


def run_migrate_check(tmp_path: Path, database: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "check.toml"
    config.write_text(
        f'[store]\npath = "{database}"\n[providers.p]\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "bridge", "migrate", "--check", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def filled_database(tmp_path: Path) -> Path:
    database = tmp_path / "state" / "bridge.db"
    store = await SQLiteStore.open(database)
    try:
        for n in range(20):
            request, response = big_input_response(50)
            response.id = f"resp_{n:032d}"
            await store.save_turn(record_turn(request, response, Scope()))
    finally:
        await store.close()
    return database


async def test_migrate_check_reports_a_sound_database(tmp_path: Path) -> None:
    database = await filled_database(tmp_path)
    before = hashlib.sha256(database.read_bytes()).hexdigest()
    result = run_migrate_check(tmp_path, database)
    assert result.returncode == Exit.OK, result.stderr
    latest = load_migrations()[-1].version
    assert result.stdout == f"{database}: schema version {latest} (up to date); integrity ok\n"
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before


async def test_a_corrupt_page_is_reported_and_never_written_on(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    database = await filled_database(tmp_path)
    corrupt_a_table(database)
    result = run_migrate_check(tmp_path, database)
    assert result.returncode == Exit.STORE
    assert "corrupt" in result.stderr
    before = hashlib.sha256(database.read_bytes()).hexdigest()

    client = await aiohttp_client(create_app(bridge_config(fake_upstream.url), store_file=database))
    for _ in range(100):  # the check runs in the background, soon after start
        ready = await client.get("/readyz")
        if ready.status == 503:
            break
        await asyncio.sleep(0.05)
    assert ready.status == 503
    assert "corrupt" in (await ready.json())["database"]
    fake_upstream.script(thinking_text_reply([], ["answered all the same"]))
    status, response = await post(client, {"input": "hi"}, {})
    assert status == 200
    assert response["output"][0]["content"][0]["text"] == "answered all the same"
    await client.close()
    assert hashlib.sha256(database.read_bytes()).hexdigest() == before
    wal = Path(f"{database}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
