"""The spool (bridge.store.spool): what it keeps is what the store would have written, it
survives the bridge's death, it is bounded, and bridges sharing it take turns."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.records import TurnRecord, record_turn
from bridge.scope import Scope
from bridge.store.spool import (
    FORMAT,
    REJECTED,
    Spool,
    SpooledTurn,
    spooled_turn,
    turn_record,
)
from bridge.store.sqlite import SQLiteStore
from bridge.wire.events import (
    FunctionCallOutput,
    MessageOutput,
    OutputTextPart,
    ReasoningOutput,
    ReasoningTextPart,
    ResponseObject,
)
from bridge.wire.responses import ResponsesRequest
from tests.conftest import MODEL, bridge_config, locked, ready_again
from tests.fake_upstream import FakeUpstream, thinking_text_reply
from tests.processes import BridgeProcess, free_port

TABLES = ("responses", "input_items", "output_items", "reasoning", "reasoning_keys", "blobs")


def a_turn() -> TurnRecord:
    """A stored turn with everything a turn can carry: tools, input items with and without
    ids, reasoning keyed by its scope, a call and a message."""
    request = msgspec.json.decode(
        msgspec.json.encode(
            {
                "model": MODEL,
                "input": [
                    {"type": "message", "role": "user", "content": "first", "id": "msg_in"},
                    {"role": "user", "content": "sent without an id"},
                ],
                "tools": [{"type": "function", "name": "lookup", "parameters": {}}],
            }
        ),
        type=ResponsesRequest,
    )
    response = ResponseObject(
        id="resp_" + "5f" * 16,
        created_at=1_800_000_000,
        model=MODEL,
        status="completed",
        output=[
            ReasoningOutput(
                id="rs_1", content=[ReasoningTextPart(text="kept thought")], status="completed"
            ),
            FunctionCallOutput(
                id="fc_1", call_id="call_1", name="lookup", arguments="{}", status="completed"
            ),
            MessageOutput(id="msg_out", content=[OutputTextPart(text="done")], status="completed"),
        ],
    )
    return record_turn(
        request, response, Scope("client", "c:conversation"), session_id="s", thread_id="t"
    )


def rows(database: Path) -> dict[str, list[Any]]:
    with closing(sqlite3.connect(database)) as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in TABLES
        }


async def test_a_spooled_turn_is_written_as_the_turn_itself(tmp_path: Path) -> None:
    record = a_turn()
    spool = Spool(tmp_path / "spool", 1024 * 1024)
    await spool.open()
    entry = spooled_turn(record)
    assert await spool.keep(entry)
    found = [kept async for _, kept in spool.entries()]
    assert found == [entry]
    assert isinstance(found[0], SpooledTurn)
    again = turn_record(found[0])
    assert entry.content is not None
    unnamed_id = entry.content.item_ids[1]  # given once, when it was spooled

    written = {}
    for name, turn in (("direct", record), ("spooled", again)):
        database = tmp_path / f"{name}.db"
        store = await SQLiteStore.open(database, check=False)
        try:
            await store.save_turn(turn)
        finally:
            await store.close()
        written[name] = rows(database)
    direct, spooled = written["direct"], written["spooled"]
    # The direct write named the item without an id itself; all else is the same.
    direct_items = [row[:2] + row[3:] for row in direct.pop("input_items")]
    spooled_items = spooled.pop("input_items")
    assert direct_items == [row[:2] + row[3:] for row in spooled_items]
    assert spooled_items[1][2] == unnamed_id
    assert direct == spooled


async def test_the_spool_is_bounded_and_says_so(tmp_path: Path, caplog: Any) -> None:
    entry = spooled_turn(a_turn())
    size = len(msgspec.msgpack.encode(entry)) + 16
    spool = Spool(tmp_path / "spool", int(size * 1.5))
    await spool.open()
    assert await spool.keep(entry)
    assert not await spool.keep(entry)  # a second would not fit
    assert "is full" in caplog.text
    assert len(spool) == 1


async def test_bridges_sharing_a_spool_take_turns_and_foreign_entries_are_left(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "spool"
    one, other = Spool(directory, 1 << 20), Spool(directory, 1 << 20)
    await one.open()
    await other.open()
    assert await one.keep(spooled_turn(a_turn()))
    await other.scan()
    assert len(other) == 1 and other.holds(a_turn().id)
    async with one.claim() as first, other.claim() as second:
        assert (first, second) == (True, False)
    # A newer bridge's format is left for it; a damaged file is set aside, never deleted.
    (directory / "0-1-000000.entry").write_bytes(msgspec.msgpack.encode({"format": FORMAT + 1}))
    (directory / "0-2-000000.entry").write_bytes(b"\xc1 not msgpack")
    await one.scan()
    assert len(one) == 1
    assert (directory / "0-1-000000.entry").exists()
    assert (directory / REJECTED / "0-2-000000.entry").exists()


def spooling_config(path: Path, database: Path, upstream: str) -> Path:
    """A bridge config at `path` whose writes give up after 0.5 s (then spool)."""
    path.write_text(
        f'[store]\npath = "{database}"\nwrite_timeout = 0.5\n'
        f'[providers.fake]\nbase_url = "{upstream}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\n'
    )
    return path


async def spooled_answer(
    session: aiohttp.ClientSession, url: str, fake_upstream: FakeUpstream, thought: str
) -> dict[str, Any]:
    """A turn answered while its database is locked: its final object, saying it waits."""
    fake_upstream.script(thinking_text_reply([thought], ["answered"]))
    async with session.post(f"{url}/v1/responses", json={"model": MODEL, "input": "x"}) as answer:
        final: dict[str, Any] = await answer.json()
    assert final["store_pending"] == ["response", "input_items", "reasoning"]
    return final


async def test_a_turn_spooled_before_the_bridge_died_is_written_by_the_next_start(
    tmp_path: Path, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    """Durable: the entry is on disk before the final event, so kill -9 right after it
    loses nothing; the next start writes it."""
    database = state_directory / "bridge.db"
    config = spooling_config(tmp_path / "bridge.toml", database, fake_upstream.url)
    bridge = BridgeProcess(config, free_port(), log=tmp_path / "bridge.log", log_level="info")
    await bridge.start()
    blocker = await locked(database)
    try:
        async with aiohttp.ClientSession() as session:
            final = await spooled_answer(session, bridge.url, fake_upstream, "durable thought")
            await bridge.kill()
            blocker.execute("ROLLBACK")
            await bridge.start()
            await ready_again(lambda path: session.get(f"{bridge.url}{path}"))
            async with session.get(f"{bridge.url}/v1/responses/{final['id']}") as got:
                assert got.status == 200
                stored = await got.json()
        assert stored["output"][0]["content"][0]["text"] == "durable thought"
        assert list((state_directory / "spool").rglob("*.entry")) == []
    finally:
        blocker.close()
        await bridge.stop()


async def test_without_a_spool_a_turn_the_database_cannot_take_says_store_false(
    fake_upstream: FakeUpstream, aiohttp_client: Any, state_directory: Path
) -> None:
    config = bridge_config(fake_upstream.url, store="write_timeout = 0.3\nspool_max_mb = 0")
    client: TestClient = await aiohttp_client(create_app(config))
    blocker = await locked(state_directory / "bridge.db")
    try:
        fake_upstream.script(thinking_text_reply([], ["not kept"]))
        answer = await client.post("/v1/responses", json={"model": MODEL, "input": "x"})
        body = await answer.json()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert body["store"] is False and "store_pending" not in body
    assert not (state_directory / "spool").exists()


async def test_a_bridge_never_writes_the_spooled_turns_of_another_database(
    tmp_path: Path, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    """Two configs with their own databases and the default spool directory: a turn spooled
    for one stays for it, however long the other runs."""
    locked_db, other = state_directory / "locked.db", state_directory / "other.db"
    configs = [
        spooling_config(tmp_path / f"{database.stem}.toml", database, fake_upstream.url)
        for database in (locked_db, other)
    ]
    first = BridgeProcess(configs[0], free_port(), log=tmp_path / "first.log")
    await first.start()
    blocker = await locked(locked_db)
    try:
        async with aiohttp.ClientSession() as session:
            final = await spooled_answer(session, first.url, fake_upstream, "for the locked one")
            await first.kill()
            second = BridgeProcess(configs[1], free_port(), log=tmp_path / "second.log")
            await second.start()
            try:
                await ready_again(lambda path: session.get(f"{second.url}{path}"))
                # Ready means its own spool was written; the other database's is not its own.
                async with session.get(f"{second.url}/v1/responses/{final['id']}") as got:
                    assert got.status == 404
            finally:
                await second.stop()
        with closing(sqlite3.connect(other)) as db:
            assert db.execute("SELECT count(*) FROM responses").fetchone() == (0,)
        (entry,) = (state_directory / "spool").rglob("*.entry")
        assert (entry.parent / "DATABASE").read_text() == f"sqlite:{locked_db.resolve()}\n"
    finally:
        blocker.close()
