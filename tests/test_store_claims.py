"""The bridge never says it kept what it did not: a database file deleted or replaced under
it, a write that fails in an unexpected way, a base whose items are going, a full disk; and
its pruning outlives any failure."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app, prune_periodically
from bridge.app_keys import STORE
from bridge.config_load import parse_config
from bridge.records import record_turn
from bridge.scope import Scope
from bridge.store import StoreError
from bridge.store.backends import open_store
from bridge.store.deletion import mark_deleted, remove_tombstone
from bridge.store.protocol import Opening
from bridge.wire.events import ResponseObject
from bridge.wire.responses import ResponsesRequest
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, Reply, chunk, sse, thinking_text_reply, usage_chunk

ClientFactory = Callable[..., Awaitable[TestClient]]
STORE_BACKENDS = ["sqlite", "postgres"]
TIMEOUT = 15.0


async def _answer(bridge: TestClient, fake_upstream: FakeUpstream, text: str) -> dict[str, Any]:
    fake_upstream.script(thinking_text_reply([], [text]))
    response = await asyncio.wait_for(
        bridge.post("/v1/responses", json={"model": MODEL, "input": text}), TIMEOUT
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    assert body["status"] == "completed", body.get("error")
    return body


@pytest.mark.sqlite_only
@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_database_file_gone_while_running_is_reported_and_not_written(
    bridge: TestClient,
    fake_upstream: FakeUpstream,
    state_directory: Path,
    how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Turns went on answering store: true and reading back, and were gone at the next
    start; nothing was logged."""
    assert (await _answer(bridge, fake_upstream, "kept"))["store"] is True
    database = state_directory / "bridge.db"
    if how == "deleted":
        database.unlink()
    else:
        other = state_directory / "other.db"
        sqlite3.connect(other).close()
        os.replace(other, database)
    with caplog.at_level(logging.ERROR, logger="bridge.store"):
        answered = await _answer(bridge, fake_upstream, "not kept")
    # Not claimed as stored in the file that is gone: waiting in the spool for a restart.
    assert answered["store"] is False or answered.get("store_pending"), answered
    readiness = await bridge.get("/readyz")
    assert readiness.status == 503
    assert how in (await readiness.json())["database"]
    assert any(how in record.getMessage() for record in caplog.records)
    conversation = await bridge.post("/v1/conversations", json={})
    assert conversation.status == 503


async def test_an_absurd_usage_figure_ends_the_turn_and_is_stored_bounded(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """prompt_tokens >= 2**63 raised OverflowError in the committer: the task died, the client
    got heartbeats and never a final event, and shutdown waited forever."""
    huge = 2**63 + 5  # past SQLite and PostgreSQL integers, within JSON
    fake_upstream.script(
        Reply(
            [
                sse(chunk({"content": "counted"})),
                sse(chunk(finish_reason="stop")),
                sse(usage_chunk(prompt=huge, completion=1)),
            ]
        )
    )
    response = await asyncio.wait_for(
        bridge.post("/v1/responses", json={"model": MODEL, "input": "x"}), TIMEOUT
    )
    body = await response.json()
    assert body["status"] == "completed"
    assert body["store"] is True
    stored = await bridge.get(f"/v1/responses/{body['id']}")
    assert stored.status == 200
    # The store goes on taking turns.
    assert (await _answer(bridge, fake_upstream, "next"))["store"] is True


async def test_every_write_queued_for_the_committer_is_answered(
    bridge: TestClient, store: str
) -> None:
    """A turn the database cannot bind fails alone (StoreError); those queued with it, and
    those after it, are written."""
    backend = bridge.server.app[STORE]  # type: ignore[union-attr]

    def turn(response_id: str, tokens: int = 1) -> Any:
        req = ResponsesRequest(model="m", input=[{"role": "user", "content": response_id}])
        # Made now: the bridge's pruner deletes what is older than max_age_days.
        response = ResponseObject(
            id=response_id, created_at=int(time.time()), model="m", status="completed"
        )
        record = record_turn(req, response, Scope())
        return dataclasses.replace(record, input_tokens=tokens)

    results = await asyncio.wait_for(
        asyncio.gather(
            backend.save_turn(turn("resp_before")),
            backend.save_turn(turn("resp_unbindable", 2**64)),
            backend.save_turn(turn("resp_after")),
            return_exceptions=True,
        ),
        TIMEOUT,
    )
    assert results[0] is None and results[2] is None, results
    assert isinstance(results[1], StoreError), results
    await asyncio.wait_for(backend.save_turn(turn("resp_later")), TIMEOUT)
    for response_id in ("resp_before", "resp_after", "resp_later"):
        assert await backend.get_response(response_id) is not None


async def test_a_response_being_deleted_is_never_the_base_of_a_new_turn(
    store: str, tmp_path: Path
) -> None:
    """A tombstone whose items were half collected was taken as the base of a turn that
    replayed its input: the turn's stored input silently lost those items."""
    # A store of its own: a bridge's pruner would collect the tombstone meanwhile.
    config = parse_config(f"[store]\n{store}")
    backend = await open_store(
        config,
        os.environ,
        opening=Opening.SERVE_MIGRATING,
        path=tmp_path / "bridge.db",
        check=False,
    )
    try:
        await _replay_a_half_collected_response(backend)
    finally:
        await backend.close()


async def _replay_a_half_collected_response(backend: Any) -> None:
    items = [{"role": "user", "content": f"item {n}"} for n in range(520)]

    def turn(response_id: str, inputs: list[Any]) -> Any:
        req = ResponsesRequest(model="m", input=inputs)
        # Made now: the bridge's pruner deletes what is older than max_age_days.
        response = ResponseObject(
            id=response_id, created_at=int(time.time()), model="m", status="completed"
        )
        return record_turn(req, response, Scope())

    await backend.save_turn(turn("resp_old", items))
    # Deleted, and the first chunk of its items collected (a prune or a DELETE under way).
    await backend._write(
        functools.partial(mark_deleted, "resp_old", client=None, stored_only=False)
    )
    await backend._write(functools.partial(remove_tombstone, "resp_old"))
    replay = [*items, {"role": "user", "content": "and one more"}]
    await backend.save_turn(turn("resp_new", replay))
    kept: list[Any] = []
    after = None
    while True:
        page = await backend.input_items("resp_new", None, limit=100, descending=False, after=after)
        assert page is not None
        kept += page.items
        if not page.has_more:
            break
        after = page.items[-1]["id"]
    assert len(kept) == len(replay)
    assert kept[0]["content"][0]["text"] == "item 0"


async def test_creating_a_conversation_on_a_full_disk_is_a_503_naming_the_database(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, state_directory: Path
) -> None:
    """It was a 500 with a traceback in the log."""
    bridge = await aiohttp_client(create_app(bridge_config(fake_upstream.url)))
    backend = bridge.server.app[STORE]  # type: ignore[union-attr]

    def no_room_to_grow(db: sqlite3.Connection) -> None:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {pages}")

    await backend._write_raw(no_room_to_grow)
    response = await bridge.post(
        "/v1/conversations", json={"items": [{"role": "user", "content": "x" * 200_000}]}
    )
    assert response.status == 503, await response.text()
    error = (await response.json())["error"]
    assert str(state_directory / "bridge.db") in error["message"]
    assert "full" in error["message"]


async def test_the_prune_task_outlives_any_failure(caplog: pytest.LogCaptureFixture) -> None:
    """It died silently on the first exception that was not the store's own."""
    calls: list[int] = []

    async def prune() -> int:
        calls.append(len(calls))
        if len(calls) == 1:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return 0

    with caplog.at_level(logging.ERROR, logger="bridge.app"):
        task = asyncio.create_task(prune_periodically(prune, 0.01))
        for _ in range(200):
            if len(calls) >= 3:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(calls) >= 3
    assert any("pruning the store failed" in r.getMessage() for r in caplog.records)
