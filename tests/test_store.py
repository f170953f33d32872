"""The store through its protocol (bridge.store.protocol.Store), the same on both databases:
every test here runs on SQLite and on PostgreSQL (the `opened_store` fixture), but those
marked sqlite_only (SQLite's group commit)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bridge.records import KEY_CALL, KEY_CONTEXT, KEY_TURN, ReasoningRecord, TurnRecord, record_turn
from bridge.scope import LEGACY_CLIENT, Scope
from bridge.store import ChainNotFound, ItemNotFound, ReasoningQuery, Store
from bridge.store.database import Connections
from bridge.translate.reasoning import Reasoning
from bridge.wire.events import MessageOutput, OutputTextPart, ResponseObject
from bridge.wire.responses import ResponsesRequest
from tests.conftest import change_rows, database_rows

DAY = 86400


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def turn(
    response_id: str,
    inputs: list[dict[str, Any]],
    *,
    client: str = "",
    previous: str | None = None,
    created_at: int | None = None,
    answer: str = "answered",
    store: bool = True,
    status: str = "completed",
    session_id: str | None = None,
) -> TurnRecord:
    """A finished turn as the bridge records it: `inputs` in, one message out."""
    request = msgspec.convert(
        {"model": "m", "input": inputs, "previous_response_id": previous, "store": store},
        ResponsesRequest,
    )
    response = ResponseObject(
        id=response_id,
        created_at=int(time.time()) if created_at is None else created_at,
        model="m",
        status=status,
        previous_response_id=previous,
        output=[MessageOutput(id=f"msg_{response_id}", content=[OutputTextPart(text=answer)])],
    )
    return record_turn(request, response, Scope(client), session_id=session_id)


def texts(items: list[dict[str, Any]]) -> list[str]:
    """The text of each input item of a page (the user's text, or the answer)."""
    found = []
    for item in items:
        content = item["content"]
        found.append(content if isinstance(content, str) else content[0]["text"])
    return found


async def page_texts(store: Store, response_id: str, **listing: Any) -> list[str]:
    page = await store.input_items(response_id, None, **listing)
    assert page is not None
    return texts(page.items)


async def test_a_response_is_read_back_by_its_client_only(opened_store: Store) -> None:
    await opened_store.save_turn(turn("resp_a", [user("mine")], client="k:a"))
    assert await opened_store.get_response("resp_a", "k:a") is not None
    assert await opened_store.get_response("resp_a", "k:b") is None
    assert await opened_store.get_response("resp_a") is not None  # the CLI reads any
    with pytest.raises(ChainNotFound):
        await opened_store.chain("resp_a", "k:b")
    assert await opened_store.find_items(["msg_resp_a"], "k:b") == {}
    assert await opened_store.input_items("resp_a", "k:b") is None


async def test_a_response_is_deleted_by_its_client_only(opened_store: Store) -> None:
    await opened_store.save_turn(turn("resp_d", [user("mine")], client="k:a"))
    assert not await opened_store.delete_response("resp_d", client="k:b")
    assert await opened_store.get_response("resp_d", "k:a") is not None
    assert await opened_store.delete_response("resp_d", client="k:a")
    assert not await opened_store.delete_response("resp_d", client="k:a")
    assert await opened_store.get_response("resp_d") is None
    assert await database_rows(opened_store, "SELECT count(*) FROM input_items") == [(0,)]


async def test_a_store_false_turn_is_listed_but_never_served(opened_store: Store) -> None:
    await opened_store.save_turn(turn("resp_gone", [user("secret")], store=False))
    assert await opened_store.get_response("resp_gone") is None
    [row] = await opened_store.list_responses()
    assert (row.id, row.stored, row.no_output) == ("resp_gone", False, True)
    exported = await opened_store.export("resp_gone")
    assert exported is not None and exported["stored"] is False


async def test_a_chain_is_its_turns_oldest_first_and_a_missing_link_is_named(
    opened_store: Store,
) -> None:
    await opened_store.save_turn(turn("resp_1", [user("one")], answer="first"))
    await opened_store.save_turn(turn("resp_2", [user("two")], previous="resp_1", answer="second"))
    await opened_store.save_turn(turn("resp_3", [user("three")], previous="resp_2"))
    chain = await opened_store.chain("resp_3")
    assert texts(chain.items) == ["one", "first", "two", "second", "three", "answered"]
    assert await opened_store.delete_response("resp_1")
    with pytest.raises(ChainNotFound) as missing:
        await opened_store.chain("resp_3")
    assert missing.value.missing == "resp_1"


async def test_input_pages_in_both_orders_from_any_item(opened_store: Store) -> None:
    inputs = [{**user(f"item {n}"), "id": f"msg_in{n}"} for n in range(7)]
    await opened_store.save_turn(turn("resp_p", inputs))
    ascending = await opened_store.input_items("resp_p", limit=3, descending=False)
    assert ascending is not None and ascending.has_more
    assert texts(ascending.items) == ["item 0", "item 1", "item 2"]
    assert await page_texts(opened_store, "resp_p", limit=3, descending=False, after="msg_in5") == [
        "item 6"
    ]
    assert await page_texts(opened_store, "resp_p", limit=2, after="msg_in3") == [
        "item 2",
        "item 1",
    ]
    with pytest.raises(ItemNotFound):
        await opened_store.input_items("resp_p", after="msg_nowhere")


async def test_a_replayed_input_is_stored_once_and_read_back_whole(opened_store: Store) -> None:
    history = [user(f"turn {n}") for n in range(5)]
    await opened_store.save_turn(turn("resp_base", history))
    await opened_store.save_turn(turn("resp_next", [*history, user("and more")]))
    rows = await database_rows(
        opened_store, "SELECT count(*) FROM input_items WHERE response_id = ?", "resp_next"
    )
    assert rows == [(1,)]  # only the new item: the rest is its base's
    assert await page_texts(opened_store, "resp_next", limit=10, descending=False) == [
        *(f"turn {n}" for n in range(5)),
        "and more",
    ]
    # Its base deleted: its items stay while the later response needs them, then go.
    assert await opened_store.delete_response("resp_base")
    assert len(await page_texts(opened_store, "resp_next", limit=10)) == 6
    assert await opened_store.delete_response("resp_next")
    assert await database_rows(opened_store, "SELECT count(*) FROM input_items") == [(0,)]
    assert await database_rows(opened_store, "SELECT count(*) FROM responses") == [(0,)]


async def test_items_are_found_by_id_among_inputs_and_outputs(opened_store: Store) -> None:
    await opened_store.save_turn(turn("resp_i", [{**user("asked"), "id": "msg_asked"}]))
    found = await opened_store.find_items(["msg_asked", "msg_resp_i", "msg_none"], "")
    assert set(found) == {"msg_asked", "msg_resp_i"}
    assert msgspec.json.decode(found["msg_resp_i"])["content"][0]["text"] == "answered"


def with_reasoning(record: TurnRecord, text: str, *keys: tuple[str, str, str]) -> TurnRecord:
    return dataclasses.replace(record, reasoning=ReasoningRecord(text, None, list(keys)))


async def test_reasoning_is_found_by_the_most_specific_key_within_its_conversation(
    opened_store: Store,
) -> None:
    conversation = "s:one"
    records = [
        with_reasoning(turn("resp_r1", [user("a")]), "by call", (conversation, KEY_CALL, "call_1")),
        with_reasoning(
            turn("resp_r2", [user("b")]),
            "by turn",
            (conversation, KEY_TURN, "print_2"),
            (conversation, KEY_CALL, "call_2"),
        ),
        with_reasoning(turn("resp_r3", [user("c")]), "by context", ("", KEY_CONTEXT, "ctx_3")),
        with_reasoning(turn("resp_r4", [user("d")]), "by turn 3", (conversation, KEY_TURN, "p3")),
        dataclasses.replace(
            with_reasoning(turn("resp_r5", [user("e")]), "legacy", (conversation, KEY_CALL, "c5")),
            client=LEGACY_CLIENT,
        ),
    ]
    for record in records:
        await opened_store.save_turn(record)
    queries = [
        ReasoningQuery(None, "print_1", ["call_1"]),
        ReasoningQuery(None, "print_2", ["call_1"]),  # its fingerprint before a call id
        ReasoningQuery("ctx_3", "p3", []),  # the context key before the fingerprint
        ReasoningQuery(None, "print_5", ["c5"]),  # a legacy row, in its own conversation
        ReasoningQuery(None, "print_6", ["call_6"]),
    ]
    found = await opened_store.find_reasoning("", conversation, queries)
    assert found == [
        Reasoning("by call"),
        Reasoning("by turn"),
        Reasoning("by context"),
        Reasoning("legacy"),
        None,
    ]
    elsewhere = await opened_store.find_reasoning("", "s:two", queries)
    assert elsewhere == [None, None, Reasoning("by context"), None, None]
    # Another client finds none of this client's, only the rows from before clients.
    other = await opened_store.find_reasoning("k:other", conversation, queries)
    assert other == [None, None, None, Reasoning("legacy"), None]


async def test_a_conversation_is_its_client_s_and_keeps_each_item_once(
    opened_store: Store,
) -> None:
    def item(n: int) -> tuple[str, bytes]:
        return f"msg_c{n}", msgspec.json.encode({"id": f"msg_c{n}", "n": n})

    created = await opened_store.create_conversation("conv_1", "k:a", b'{"m":1}', [item(0)])
    assert created.metadata == b'{"m":1}'
    added = await opened_store.append_conversation("conv_1", "k:a", [item(0), item(1), item(2)])
    assert added is not None and len(added) == 3
    assert len(await opened_store.conversation_items("conv_1", "k:a") or []) == 3
    assert await opened_store.conversation_items("conv_1", "k:b") is None
    page = await opened_store.conversation_page(
        "conv_1", "k:a", limit=1, descending=True, after="msg_c2"
    )
    assert page is not None and page.has_more and page.items == [item(1)[1]]
    with pytest.raises(ItemNotFound):
        await opened_store.conversation_page(
            "conv_1", "k:a", limit=1, descending=False, after="msg_none"
        )
    assert await opened_store.conversation_item("conv_1", "k:a", "msg_c2") == item(2)[1]
    assert await opened_store.conversation_item("conv_1", "k:b", "msg_c2") is None
    assert await opened_store.delete_conversation_item("conv_1", "k:a", "msg_c1")
    assert not await opened_store.delete_conversation_item("conv_1", "k:a", "msg_c1")
    updated = await opened_store.update_conversation("conv_1", "k:a", b'{"m":2}')
    assert updated is not None and updated.metadata == b'{"m":2}'
    assert await opened_store.update_conversation("conv_1", "k:b", b"{}") is None
    assert not await opened_store.delete_conversation("conv_1", "k:b")
    assert await opened_store.delete_conversation("conv_1", "k:a")
    assert await opened_store.get_conversation("conv_1", "k:a") is None
    assert await database_rows(opened_store, "SELECT count(*) FROM conversation_items") == [(0,)]


async def test_prune_deletes_what_is_past_the_age_limit(opened_store: Store) -> None:
    now = int(time.time())
    old = with_reasoning(
        turn("resp_old", [user("old")], created_at=now - 40 * DAY), "old", ("s:x", KEY_TURN, "o")
    )
    await opened_store.save_turn(old)
    await opened_store.save_turn(turn("resp_new", [user("new")], created_at=now))
    await opened_store.create_conversation("conv_idle", "", b"{}", [("msg_x", b"{}")])
    await _age_conversation(opened_store, "conv_idle", now - 40 * DAY)
    assert await opened_store.prune(max_age_days=30, max_size_mb=1024) == 1
    assert [row.id for row in await opened_store.list_responses()] == ["resp_new"]
    assert await opened_store.get_conversation("conv_idle", "") is None
    assert await database_rows(opened_store, "SELECT count(*) FROM reasoning") == [(0,)]
    assert await database_rows(
        opened_store, "SELECT count(*) FROM input_items WHERE response_id = ?", "resp_old"
    ) == [(0,)]


async def _age_conversation(store: Store, conversation_id: str, updated_at: int) -> None:
    """As if nobody had used the conversation since `updated_at`."""
    await change_rows(
        store, "UPDATE conversations SET updated_at = ? WHERE id = ?", updated_at, conversation_id
    )


async def test_prune_for_size_deletes_the_oldest_and_never_the_newest(
    opened_store: Store,
) -> None:
    now = int(time.time())
    for n in range(4):
        big = user(f"{n} " + "x" * 300_000)
        await opened_store.save_turn(turn(f"resp_{n}", [big], created_at=now + n))
    assert await opened_store.prune(max_age_days=30, max_size_mb=0.0001) == 3
    assert [row.id for row in await opened_store.list_responses()] == ["resp_3"]
    assert await opened_store.get_response("resp_3") is not None


async def test_listing_is_newest_first_and_by_session(opened_store: Store) -> None:
    now = int(time.time())
    for n, session in enumerate(("s1", "s2", "s1")):
        record = turn(f"resp_l{n}", [user("x")], created_at=now + n, session_id=session)
        await opened_store.save_turn(record)
    assert [row.id for row in await opened_store.list_responses()] == [
        "resp_l2",
        "resp_l1",
        "resp_l0",
    ]
    listed = await opened_store.list_responses(session_id="s1", limit=1)
    assert [row.id for row in listed] == ["resp_l2"]
    exported = await opened_store.export("resp_l1")
    assert exported is not None and exported["stored"] is True
    assert texts(exported["input_items"]) == ["x"]
    assert exported["session_id"] == "s2"


async def test_turns_written_together_are_all_kept(opened_store: Store) -> None:
    """Sixteen writers at once (SQLite commits them in groups; PostgreSQL each on its own)."""
    records = [turn(f"resp_w{n}", [user(f"w{n}")]) for n in range(16)]
    pending = await asyncio.gather(*(opened_store.save_turn_shielded(r) for r in records))
    assert pending == [[]] * 16
    assert len(await opened_store.list_responses(limit=100)) == 16


@pytest.mark.sqlite_only
async def test_writers_of_one_commit_are_answered_in_order_one_loop_step_apart(
    opened_store: Store,
) -> None:
    """Turns committed together are acknowledged in the order they arrived, each in a loop
    step of its own, and each already on disk (issue 25: all were answered in one step, so
    the streams they end, and their clients' next turns, moved in bursts)."""
    loop = asyncio.get_running_loop()
    steps_passed = 0
    answered: list[tuple[int, int]] = []  # (writer, loop steps passed when it resumed)
    on_disk: list[bool] = []

    def step() -> None:
        nonlocal steps_passed
        steps_passed += 1

    async def writer(number: int) -> None:
        await opened_store.save_turn(turn(f"resp_w{number}", [user(f"w{number}")]))
        answered.append((number, steps_passed))
        loop.call_soon(step)  # runs before anything the loop schedules after this
        rows = await database_rows(
            opened_store, "SELECT 1 FROM responses WHERE id = ?", f"resp_w{number}"
        )
        on_disk.append(bool(rows))

    await opened_store.save_turn(turn("resp_first", [user("first")]))  # the file checked
    await asyncio.gather(*(writer(n) for n in range(8)))
    assert [number for number, _ in answered] == list(range(8))
    passed = [steps for _, steps in answered]
    assert all(later > earlier for earlier, later in itertools.pairwise(passed)), passed
    assert on_disk == [True] * 8


async def test_runs_left_running_are_failed_and_kept_events_read_back(
    opened_store: Store,
) -> None:
    await opened_store.save_turn(turn("resp_run", [user("r")], status="in_progress"))
    await opened_store.save_turn(turn("resp_mine", [user("m")], status="queued"))
    assert await opened_store.fail_interrupted("the bridge stopped", keep={"resp_mine"}) == [
        "resp_run"
    ]
    failed = msgspec.json.decode(await opened_store.get_response("resp_run") or b"{}")
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "the bridge stopped"
    assert await opened_store.save_events("resp_run", b"data: {}\n\n") == []
    assert await opened_store.response_events("resp_run") == (
        await opened_store.get_response("resp_run"),
        b"data: {}\n\n",
    )


async def test_a_closed_writer_is_in_no_transaction(tmp_path: Path) -> None:
    # /readyz asks during a shutdown too: a closed connection answers, it does not raise.
    connections = await Connections.open(tmp_path / "c.db", "FULL", read_only=False)
    assert connections.writer.in_transaction is False
    await connections.close()
    assert connections.writer.in_transaction is False
