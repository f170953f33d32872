"""`responses-bridge sessions ...` in a subprocess, over a database the real store filled."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bridge.exit_codes import Exit
from bridge.records import normalize_input_item, record_turn
from bridge.scope import Scope
from bridge.store import ReasoningQuery
from bridge.store.sqlite import SQLiteStore
from bridge.translate.reasoning import Reasoning, turn_fingerprint
from bridge.wire.events import (
    FunctionCallOutput,
    MessageOutput,
    OutputItem,
    OutputTextPart,
    ReasoningOutput,
    ReasoningTextPart,
    ResponseError,
    ResponseObject,
    Usage,
)
from bridge.wire.responses import ResponsesRequest

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT = 30.0  # seconds for a command that should exit by itself
DAY = 86400
MODEL = "local-model"

# Realistic ids: "resp_" and 32 hex digits, the width `sessions list` lays out.
RESP_A = "resp_" + "a1" * 16
RESP_B = "resp_" + "b2" * 16
RESP_C = "resp_" + "c3" * 16
RESP_D = "resp_" + "d4" * 16
RESP_E = "resp_" + "e5" * 16
MISSING = "resp_" + "00" * 16

READ_TOOL = {"type": "function", "name": "read_file", "parameters": {"type": "object"}}


def write_config(
    tmp_path: Path,
    database: Path,
    *,
    max_age_days: float | None = None,
    max_size_mb: float | None = None,
) -> Path:
    """A config naming `database`; retention keys are left out (the defaults) unless given."""
    store = f'[store]\npath = "{database}"\n'
    if max_age_days is not None:
        store += f"max_age_days = {max_age_days}\n"
    if max_size_mb is not None:
        store += f"max_size_mb = {max_size_mb}\n"
    path = tmp_path / "config.toml"
    path.write_text(
        store
        + """
[providers.local]
base_url = "http://127.0.0.1:9/v1"

[models."local-model"]
provider = "local"
upstream_model = "tiny"
""",
        encoding="utf-8",
    )
    return path


def run_sessions(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`sessions ...`; its first stderr line, naming the database, is checked and taken off."""
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "sessions", "--config", str(config), *args],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    first, _, rest = result.stderr.partition("\n")
    if first.startswith("# database: "):
        assert re.fullmatch(r"# database: /\S+\.db \(schema version \d+\)", first), first
        result.stderr = rest
    return result


def when(timestamp: int) -> str:
    """A timestamp as a person reads it: local time, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


@dataclass
class Turn:
    """One turn as the fixture stores it, and what the CLI should say about it."""

    request: dict[str, Any]
    response: ResponseObject
    session_id: str | None
    thread_id: str | None
    # Filled in when stored; items sent without an id get one when written ("" here).
    input_items: list[dict[str, Any]] | None = None


async def store_turns(database: Path, turns: Sequence[Turn]) -> None:
    """Write each turn through the real store, as the service does after a response."""
    store = await SQLiteStore.open(database)
    try:
        for turn in turns:
            request = msgspec.json.decode(msgspec.json.encode(turn.request), type=ResponsesRequest)
            conversation = turn.thread_id or turn.session_id
            record = record_turn(
                request,
                turn.response,
                Scope(conversation=f"s:{conversation}" if conversation else None),
                session_id=turn.session_id,
                thread_id=turn.thread_id,
            )
            if record.content is not None:
                items = list(record.content.items)
                turn.input_items = [normalize_input_item(item, "") for item in items]
            await store.save_turn(record)
    finally:
        await store.close()


def reasoning(id_: str, text: str) -> ReasoningOutput:
    return ReasoningOutput(id=id_, content=[ReasoningTextPart(text=text)], status="completed")


def message(id_: str, text: str) -> MessageOutput:
    return MessageOutput(id=id_, status="completed", content=[OutputTextPart(text=text)])


def call(
    id_: str, call_id: str, name: str, arguments: str, namespace: str | None = None
) -> FunctionCallOutput:
    return FunctionCallOutput(
        id=id_,
        call_id=call_id,
        name=name,
        arguments=arguments,
        namespace=namespace,
        status="completed",
    )


def response(
    id_: str,
    created_at: int,
    output: list[OutputItem],
    *,
    status: str = "completed",
    usage: tuple[int, int] | None = None,
    **fields: Any,
) -> ResponseObject:
    tokens = None
    if usage is not None:
        tokens = Usage(input_tokens=usage[0], output_tokens=usage[1], total_tokens=sum(usage))
    return ResponseObject(
        id=id_,
        created_at=created_at,
        status=status,
        model=fields.pop("model", MODEL),
        output=output,
        usage=tokens,
        **fields,
    )


@dataclass
class Stored:
    config: Path
    database: Path
    turns: dict[str, Turn]


@pytest.fixture
async def stored(tmp_path: Path) -> Stored:
    """Five turns, newest first: C (store: false), A (follows B), B, D (10 days), E (40 days)."""
    now = int(time.time())
    turns = {
        RESP_B: Turn(
            {"model": MODEL, "input": "Run the tests"},
            response(
                RESP_B,
                now - 7200,
                [
                    reasoning("rs_b", "Tests run with pytest."),
                    call("fc_b", "call_b1", "exec", '{"cmd": "pytest -q"}'),
                ],
                usage=(30, 12),
            ),
            session_id="sess-a",
            thread_id="thr-1",
        ),
        RESP_A: Turn(
            {
                "model": MODEL,
                "instructions": "Be brief.",
                "previous_response_id": RESP_B,
                "tools": [READ_TOOL],
                "metadata": {"ticket": "T-1"},
                "input": [
                    {"type": "function_call_output", "call_id": "call_b1", "output": "12 passed"},
                    {
                        "type": "message",
                        "id": "msg_client1",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "Now fix the lint"}],
                    },
                ],
            },
            response(
                RESP_A,
                now - 3600,
                [
                    reasoning("rs_a", "The linter runs via ruff."),
                    message("msg_a", "Running ruff now."),
                    call("fc_a", "call_a1", "exec", '{"cmd": "ruff check ."}', "shell"),
                ],
                usage=(120, 45),
                previous_response_id=RESP_B,
                instructions="Be brief.",
                metadata={"ticket": "T-1"},
                # Echoed, as the service does: the store keeps the list once for both.
                tools=[msgspec.Raw(msgspec.json.encode(READ_TOOL))],
            ),
            session_id="sess-a",
            thread_id="thr-2",
        ),
        RESP_C: Turn(
            {"model": "other-model", "store": False, "input": "What time is it?"},
            response(
                RESP_C,
                now - 60,
                [reasoning("rs_c", "No clock here."), message("msg_c", "I cannot tell.")],
                usage=(8, 5),
                model="other-model",
                store=False,
            ),
            session_id="sess-b",
            thread_id="thr-3",
        ),
        RESP_D: Turn(
            {"model": MODEL, "input": "Summarize the log"},
            response(
                RESP_D,
                now - 10 * DAY,
                [
                    reasoning("rs_d", "The log is long."),
                    call("fc_d", "call_d1", "read_file", '{"path": "app.log"}'),
                ],
                status="incomplete",
                usage=(4000, 800),
            ),
            session_id="sess-b",
            thread_id="thr-4",
        ),
        RESP_E: Turn(
            {"model": MODEL, "input": "Hello"},
            response(
                RESP_E,
                now - 40 * DAY,
                [],
                status="failed",
                error=ResponseError(code="server_error", message="upstream closed"),
            ),
            session_id=None,
            thread_id=None,
        ),
    }
    database = tmp_path / "data" / "sessions.db"
    await store_turns(database, list(turns.values()))
    return Stored(write_config(tmp_path, database), database, turns)


def list_line(turn: Turn) -> list[str]:
    """A `sessions list` line as words: date, time, id, model, status, tokens, session."""
    usage = turn.response.usage
    tokens = f"{usage.input_tokens}+{usage.output_tokens}" if usage else "0+0"
    words = [
        *when(turn.response.created_at).split(),
        turn.response.id,
        turn.response.model,
        turn.response.status,
        tokens,
        turn.session_id or "-",
    ]
    if turn.request.get("store") is False:
        words.append("(store:false)")
    return words


HEADER = ["time", "id", "model", "status", "tokens", "in+out", "session"]


def listed(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert result.returncode == Exit.OK, result.stderr
    assert result.stderr == ""
    header, *lines = result.stdout.splitlines()
    assert header.split() == HEADER
    return [line.split() for line in lines]


def reasoning_rows(database: Path) -> dict[str, list[tuple[str, int]]]:
    """Reasoning keys as (kind, created_at) per response id, read with sqlite3."""
    rows: dict[str, list[tuple[str, int]]] = {}
    with closing(sqlite3.connect(database)) as connection:
        query = (
            "SELECT r.response_id, k.kind, r.created_at FROM reasoning r "
            "JOIN reasoning_keys k ON k.reasoning_id = r.id ORDER BY r.response_id, k.kind"
        )
        for response_id, kind, created_at in connection.execute(query):
            rows.setdefault(response_id, []).append((kind, created_at))
    return rows


def stored_ids(database: Path) -> list[str]:
    with closing(sqlite3.connect(database)) as connection:
        query = "SELECT id FROM responses ORDER BY created_at DESC"
        return [row[0] for row in connection.execute(query)]


# list


def test_list_shows_every_response_newest_first(stored: Stored) -> None:
    lines = listed(run_sessions(stored.config, "list"))

    newest_first = [RESP_C, RESP_A, RESP_B, RESP_D, RESP_E]
    assert lines == [list_line(stored.turns[id_]) for id_ in newest_first]
    # Spelled out once, so a wrong list_line() cannot hide a wrong CLI.
    assert lines[0][2:] == [RESP_C, "other-model", "completed", "8+5", "sess-b", "(store:false)"]
    assert lines[-1][2:] == [RESP_E, MODEL, "failed", "0+0", "-"]


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--session", "sess-a", [RESP_A, RESP_B]),
        ("--session", "sess-b", [RESP_C, RESP_D]),
        ("--session", "sess-none", []),
        ("--thread", "thr-2", [RESP_A]),
        ("--thread", "thr-4", [RESP_D]),
        ("--limit", "2", [RESP_C, RESP_A]),
    ],
)
def test_list_filters_and_limits(
    stored: Stored, option: str, value: str, expected: list[str]
) -> None:
    lines = listed(run_sessions(stored.config, "list", option, value))

    assert lines == [list_line(stored.turns[id_]) for id_ in expected]


def test_list_session_and_thread_combine(stored: Stored) -> None:
    both = listed(run_sessions(stored.config, "list", "--session", "sess-a", "--thread", "thr-1"))
    neither = listed(
        run_sessions(stored.config, "list", "--session", "sess-b", "--thread", "thr-1")
    )

    assert both == [list_line(stored.turns[RESP_B])]
    assert neither == []


# show


def test_show_prints_the_response_and_its_items(stored: Stored) -> None:
    result = run_sessions(stored.config, "show", RESP_A)

    assert result.returncode == Exit.OK, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"response   {RESP_A}",
        f"created    {when(stored.turns[RESP_A].response.created_at)}",
        f"model      {MODEL}",
        "status     completed",
        "tokens     120 in, 45 out",
        f"previous   {RESP_B}",
        "",
        "== instructions",
        "    Be brief.",
        "",
        "== input",
        "output of call_b1:",
        "    12 passed",
        "user:",
        "    Now fix the lint",
        "",
        "== output",
        "reasoning:",
        "    The linter runs via ruff.",
        "assistant:",
        "    Running ruff now.",
        "call shell.exec (call_a1):",
        '    {"cmd": "ruff check ."}',
    ]


def test_show_a_failed_response_names_the_error(stored: Stored) -> None:
    result = run_sessions(stored.config, "show", RESP_E)

    assert result.returncode == Exit.OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[3:] == [
        "status     failed",
        "tokens     0 in, 0 out",
        "error      server_error: upstream closed",
        "",
        "== input",
        "user:",
        "    Hello",
        "",
        "== output",
    ]


def test_show_a_call_without_namespace_has_no_prefix(stored: Stored) -> None:
    result = run_sessions(stored.config, "show", RESP_D)

    assert result.returncode == Exit.OK, result.stderr
    assert result.stdout.splitlines()[-4:] == [
        "reasoning:",
        "    The log is long.",
        "call read_file (call_d1):",
        '    {"path": "app.log"}',
    ]


async def test_show_cuts_long_texts_unless_full(tmp_path: Path) -> None:
    long_text = "line one\n" + "x" * 5000
    database = tmp_path / "long.db"
    turn = Turn(
        {"model": MODEL, "input": long_text},
        response(RESP_A, int(time.time()), [message("msg_l", "short")]),
        session_id=None,
        thread_id=None,
    )
    await store_turns(database, [turn])
    config = write_config(tmp_path, database)
    cut = run_sessions(config, "show", RESP_A)
    assert "    line one" in cut.stdout
    assert "--full shows all" in cut.stdout and "x" * 5000 not in cut.stdout
    whole = run_sessions(config, "show", RESP_A, "--full")
    assert "x" * 5000 in whole.stdout


def test_commands_that_read_never_create_a_database(tmp_path: Path) -> None:
    database = tmp_path / "nowhere" / "bridge.db"
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\npath = "{database}"\n')
    for args in (("sessions", "list"), ("sessions", "show", "resp_1"), ("migrate", "--check")):
        result = subprocess.run(
            [sys.executable, "-m", "bridge", *args, "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        assert result.returncode == Exit.STORE, (args, result.stderr)
        assert f"no database at {database}" in result.stderr
        assert "STATE_DIRECTORY" in result.stderr
        assert not database.exists() and not database.parent.exists()


def test_commands_that_only_read_open_the_database_read_only(stored: Stored) -> None:
    """On a file the bridge may not write (immutable: root ignores modes), list, show and
    export work; delete needs to write and says it cannot."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("chattr is not installed")
    flag = subprocess.run([chattr, "+i", str(stored.database)], capture_output=True, check=False)
    if flag.returncode:
        pytest.skip("this filesystem does not support immutable files")
    try:
        for action in (("list",), ("show", RESP_A), ("export", RESP_A)):
            result = run_sessions(stored.config, *action)
            assert result.returncode == 0, (action, result.stderr)
        refused = run_sessions(stored.config, "delete", RESP_A)
        assert refused.returncode == Exit.STORE, refused.stderr
    finally:
        subprocess.run([chattr, "-i", str(stored.database)], check=True)


# export


def test_export_round_trips_request_items_and_response(stored: Stored) -> None:
    turn = stored.turns[RESP_A]

    result = run_sessions(stored.config, "export", RESP_A)

    assert result.returncode == Exit.OK, result.stderr
    exported = json.loads(result.stdout)
    assert sorted(exported) == [
        "input_items",
        "request",
        "response",
        "session_id",
        "stored",
        "thread_id",
    ]
    request = exported["request"]
    assert request.get("input", []) == []  # the input is stored once, as input_items
    assert request["model"] == MODEL
    assert request["instructions"] == "Be brief."
    assert request["previous_response_id"] == RESP_B
    assert request["tools"] == [READ_TOOL]
    assert request["metadata"] == {"ticket": "T-1"}
    call_output, user_message = exported["input_items"]
    assert call_output["id"].startswith("fco_")
    assert turn.input_items is not None
    assert exported["input_items"] == [
        {**turn.input_items[0], "id": call_output["id"]},
        turn.input_items[1],
    ]
    assert len(call_output["id"]) == len("fco_") + 32
    assert user_message == {
        "type": "message",
        "id": "msg_client1",
        "role": "user",
        "content": [{"type": "input_text", "text": "Now fix the lint"}],
        "status": "completed",
    }
    assert exported["response"] == json.loads(msgspec.json.encode(turn.response))
    assert exported["response"]["output"][2] == {
        "type": "function_call",
        "id": "fc_a",
        "call_id": "call_a1",
        "name": "exec",
        "arguments": '{"cmd": "ruff check ."}',
        "namespace": "shell",
        "status": "completed",
    }


def test_a_store_false_response_keeps_no_content(stored: Stored) -> None:
    result = run_sessions(stored.config, "export", RESP_C)

    assert result.returncode == Exit.OK, result.stderr
    exported = json.loads(result.stdout)
    assert exported["stored"] is False
    assert "request" not in exported and "input_items" not in exported
    assert exported["response"]["status"] == "completed"
    assert exported["response"]["usage"] == {"input_tokens": 8, "output_tokens": 5}
    shown = run_sessions(stored.config, "show", RESP_C)
    assert "store: false" in shown.stdout
    # Neither the question nor the answer is anywhere in the file; the reasoning is.
    data = b"".join(
        Path(f"{stored.database}{s}").read_bytes()
        for s in ("", "-wal")
        if Path(f"{stored.database}{s}").exists()
    )
    assert b"What time is it?" not in data
    assert b"I cannot tell." not in data
    assert b"No clock here." in data


# delete


@pytest.mark.parametrize("response_id", [RESP_A, RESP_C], ids=["retrievable", "store-false"])
def test_delete_removes_the_response_and_its_reasoning(stored: Stored, response_id: str) -> None:
    before = reasoning_rows(stored.database)
    assert response_id in before  # the fixture indexed its reasoning

    result = run_sessions(stored.config, "delete", response_id)

    assert result.returncode == Exit.OK, result.stderr
    assert result.stdout == f"deleted {response_id}\n"
    shown = run_sessions(stored.config, "show", response_id)
    assert shown.returncode == Exit.NOT_FOUND
    assert shown.stdout == ""
    assert shown.stderr == f"responses-bridge: no stored response {response_id}\n"
    del before[response_id]
    assert reasoning_rows(stored.database) == before
    others = [id_ for id_ in (RESP_C, RESP_A, RESP_B, RESP_D, RESP_E) if id_ != response_id]
    assert stored_ids(stored.database) == others


def test_reasoning_rows_are_indexed_per_response(stored: Stored) -> None:
    """The fixture's reasoning rows, which the delete and prune tests rely on."""
    rows = reasoning_rows(stored.database)

    created = {id_: turn.response.created_at for id_, turn in stored.turns.items()}
    # No turn of the fixture has a context key: those come from the service, which knows
    # the conversation before each turn.
    with_call = ["call", "turn"]
    assert rows == {
        RESP_A: [(kind, created[RESP_A]) for kind in with_call],
        RESP_B: [(kind, created[RESP_B]) for kind in with_call],
        RESP_C: [("turn", created[RESP_C])],  # no calls: indexed by turn only
        RESP_D: [(kind, created[RESP_D]) for kind in with_call],
        # RESP_E failed: its reasoning (none here anyway) is never indexed
    }


# unknown ids


@pytest.mark.parametrize("action", ["show", "export", "delete"])
def test_unknown_id_exits_5(stored: Stored, action: str) -> None:
    result = run_sessions(stored.config, action, MISSING)

    assert result.returncode == Exit.NOT_FOUND == 5
    assert result.stdout == ""
    assert result.stderr == f"responses-bridge: no stored response {MISSING}\n"
    assert stored_ids(stored.database) == [RESP_C, RESP_A, RESP_B, RESP_D, RESP_E]


# prune


@pytest.mark.parametrize(
    ("max_age_days", "kept"),
    [
        (None, [RESP_C, RESP_A, RESP_B, RESP_D]),  # the default, 30 days
        (5, [RESP_C, RESP_A, RESP_B]),
        (0.01, [RESP_C]),  # 14.4 minutes
        (100, [RESP_C, RESP_A, RESP_B, RESP_D, RESP_E]),
    ],
)
def test_prune_deletes_what_is_older_than_max_age_days(
    stored: Stored, tmp_path: Path, max_age_days: float | None, kept: list[str]
) -> None:
    config = write_config(tmp_path, stored.database, max_age_days=max_age_days)
    before = reasoning_rows(stored.database)

    result = run_sessions(config, "prune")

    assert result.returncode == Exit.OK, result.stderr
    assert result.stdout == f"pruned {5 - len(kept)} responses\n"
    assert stored_ids(stored.database) == kept
    assert reasoning_rows(stored.database) == {
        id_: rows for id_, rows in before.items() if id_ in kept
    }
    assert [line[2] for line in listed(run_sessions(config, "list"))] == kept


def test_prune_twice_deletes_nothing_the_second_time(stored: Stored, tmp_path: Path) -> None:
    config = write_config(tmp_path, stored.database, max_age_days=5)

    first = run_sessions(config, "prune")
    second = run_sessions(config, "prune")

    assert first.stdout == "pruned 2 responses\n"
    assert second.returncode == Exit.OK, second.stderr
    assert second.stdout == "pruned 0 responses\n"


LARGE_TURNS = 6
LARGE_TEXT = 100_000  # characters of input per turn: about 25 pages of 4 KiB each


@pytest.fixture
async def large(tmp_path: Path) -> tuple[Path, list[str]]:
    """LARGE_TURNS turns of LARGE_TEXT input each, a minute apart; returns the ids oldest first."""
    now = int(time.time())
    turns = [
        Turn(
            {"model": MODEL, "input": os.urandom(LARGE_TEXT // 2).hex()},
            response(
                f"resp_{index:032x}",
                now - 600 + 60 * index,
                [message(f"msg_{index}", "ok")],
                usage=(LARGE_TEXT // 4, 1),
            ),
            session_id="big",
            thread_id=None,
        )
        for index in range(LARGE_TURNS)
    ]
    database = tmp_path / "large.db"
    await store_turns(database, turns)
    return database, [turn.response.id for turn in turns]


def data_bytes(database: Path) -> int:
    with closing(sqlite3.connect(database)) as connection:
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        (free,) = connection.execute("PRAGMA freelist_count").fetchone()
    return int(page_size * (pages - free))


def test_prune_deletes_the_oldest_until_under_max_size_mb(
    large: tuple[Path, list[str]], tmp_path: Path
) -> None:
    database, oldest_first = large
    # 0.35 MB holds the schema (21 pages, 84 KiB) and two turns of about 100 KiB, not three.
    config = write_config(tmp_path, database, max_size_mb=0.35)
    assert data_bytes(database) > 0.35 * 1024 * 1024

    result = run_sessions(config, "prune")

    assert result.returncode == Exit.OK, result.stderr
    assert result.stdout == f"pruned {LARGE_TURNS - 2} responses\n"
    assert stored_ids(database) == oldest_first[:-3:-1]  # the two newest
    assert data_bytes(database) <= 0.35 * 1024 * 1024


def test_prune_with_a_tiny_max_size_keeps_the_newest(
    large: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """0.05 MB is less than the empty schema (86016 bytes): only the newest can stay."""
    database, oldest_first = large
    config = write_config(tmp_path, database, max_size_mb=0.05)

    result = run_sessions(config, "prune")

    assert result.returncode == Exit.OK, result.stderr
    assert result.stdout == f"pruned {LARGE_TURNS - 1} responses\n"
    assert stored_ids(database) == [oldest_first[-1]]


# Store.prune directly


async def test_store_prune_deletes_old_reasoning_rows_by_created_at(tmp_path: Path) -> None:
    now = int(time.time())
    database = tmp_path / "prune.db"
    old = "resp_" + "01" * 16
    new = "resp_" + "02" * 16
    await store_turns(
        database,
        [
            Turn(
                {"model": MODEL, "input": "old"},
                response(
                    old,
                    now - 10 * DAY,
                    [
                        reasoning("rs_old", "old thought"),
                        call("fc_o1", "call_shared", "exec", "{}"),
                        call("fc_o2", "call_old_only", "exec", "{}"),
                    ],
                ),
                session_id="s",
                thread_id=None,
            ),
            # Reuses call_shared in the same conversation: its key now finds the new turn.
            Turn(
                {"model": MODEL, "input": "new"},
                response(
                    new,
                    now - 60,
                    [reasoning("rs_new", "new thought"), call("fc_n", "call_shared", "exec", "{}")],
                ),
                session_id="s",
                thread_id=None,
            ),
        ],
    )
    queries = [
        ReasoningQuery(None, turn_fingerprint("", ["nope"]), ["call_shared"]),
        ReasoningQuery(None, turn_fingerprint("", ["nope"]), ["call_old_only"]),
    ]

    store = await SQLiteStore.open(database)
    try:
        before = await store.find_reasoning("", "s:s", queries)
        elsewhere = await store.find_reasoning("", "s:other", queries)
        deleted = await store.prune(max_age_days=5, max_size_mb=1024)
        after = await store.find_reasoning("", "s:s", queries)
        remaining = [row.id for row in await store.list_responses()]
    finally:
        await store.close()

    assert before == [Reasoning("new thought"), Reasoning("old thought")]
    assert elsewhere == [None, None]
    assert deleted == 1
    assert remaining == [new]
    assert after == [Reasoning("new thought"), None]
    assert reasoning_rows(database) == {new: [("call", now - 60), ("turn", now - 60)]}
