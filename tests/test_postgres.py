"""The store on PostgreSQL, as far as it goes in this release: the config, the schema and
its migrations (applied once by bridges starting together), and clear refusals where the
SQLite store is still needed. A real PostgreSQL server runs for these tests
(tests/postgres.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bridge import codex_config
from bridge.app import create_app
from bridge.config import ConfigError
from bridge.config_load import load_config, parse_config
from bridge.exit_codes import Exit
from bridge.migrate import migrate as migrate_sqlite
from bridge.store import postgres_setup
from tests.codex_cli import (
    PARALLEL_REASONING,
    PATCH_REASONING,
    last_user_text,
    replayed_assistant,
    tool_loop,
    websocket_home,
)
from tests.conftest import MODEL, assert_ends, bridge_config, codex_binary
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply
from tests.postgres import PASSWORD, Cluster
from tests.processes import REPO, BridgeProcess, free_port, output_of

PASSWORD_ENV = "RB_TEST_PG_PASSWORD"


def write_config(tmp_path: Path, url: str, *, password_env: bool = True) -> Path:
    path = tmp_path / "config.toml"
    secret = f'password_env = "{PASSWORD_ENV}"\n' if password_env else ""
    path.write_text(
        f'[store]\nurl = "{url}"\n{secret}'
        '[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\n'
        '[models.m]\nprovider = "local"\n'
    )
    return path


async def bridge_cli(*args: str, password: str | None = PASSWORD) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    if password is not None:
        env[PASSWORD_ENV] = password
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await output_of(process, 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def connect(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url, password=PASSWORD)


def test_the_url_never_holds_a_password() -> None:
    with pytest.raises(ConfigError, match=r"store\.url.*password_env"):
        parse_config('[store]\nurl = "postgresql://bridge:secret@db.example/bridge"\n')
    with pytest.raises(ConfigError, match=r"store\.url"):
        parse_config('[store]\nurl = "mysql://db.example/bridge"\n')
    with pytest.raises(ConfigError, match=r"store\.password_env"):
        parse_config('[store]\npassword_env = "PW"\n')
    config = parse_config('[store]\nurl = "postgresql://bridge@db.example:5433/bridge"\n')
    assert (
        postgres_setup.display_url(config.store.url or "")
        == "postgresql://bridge@db.example:5433/bridge"
    )


# The CLI where asyncpg cannot be imported, as when the postgres extra is not installed.
WITHOUT_ASYNCPG = (
    "import sys; sys.modules['asyncpg'] = None; from bridge.cli import main; sys.exit(main())"
)


def run_without_asyncpg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_ASYNCPG, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", ["check-config", "serve", "migrate"])
def test_a_postgresql_url_without_the_extra_is_a_config_error_naming_it(
    tmp_path: Path, command: str
) -> None:
    """asyncpg is an extra: a config that needs it says how to install it (it was a
    dependency of every install)."""
    config = write_config(tmp_path, "postgresql://bridge@127.0.0.1:9/bridge")
    result = run_without_asyncpg(command, "--config", str(config))
    assert result.returncode == Exit.CONFIG, result.stderr
    assert "pip install 'responses-bridge[postgres]'" in result.stderr
    assert "key `store.url`" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_sqlite_bridge_needs_no_asyncpg(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "bridge.db"}"\n'
        '[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\n[models.m]\nprovider = "local"\n'
    )
    for command in ("migrate", "check-config", "sessions list"):
        result = run_without_asyncpg(*command.split(), "--config", str(config))
        assert result.returncode == Exit.OK, (command, result.stderr)


async def test_migrate_creates_the_schema_once(postgres_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, postgres_url)
    code, out, err = await bridge_cli("migrate", "--config", str(config))
    assert code == 0, err
    latest = len(list((REPO / "migrations" / "postgres").glob("*.sql")))
    assert out.strip() == f"{postgres_setup.display_url(postgres_url)}: schema version {latest}"
    assert PASSWORD not in out + err
    again = await bridge_cli("migrate", "--config", str(config))
    assert again[0] == 0
    checked = await bridge_cli("migrate", "--check", "--config", str(config))
    assert checked[0] == 0 and "up to date" in checked[1]
    connection = await connect(postgres_url)
    try:
        rows = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in rows] == list(range(1, latest + 1))
    finally:
        await connection.close()


async def test_bridges_starting_together_migrate_once(postgres_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, postgres_url)
    results = await asyncio.gather(
        *(bridge_cli("migrate", "--config", str(config)) for _ in range(4))
    )
    assert [code for code, _, _ in results] == [0, 0, 0, 0], [err for _, _, err in results]
    connection = await connect(postgres_url)
    try:
        count = await connection.fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(postgres_setup.postgres_migrations())
    finally:
        await connection.close()


async def test_a_newer_database_is_refused_and_left_alone(
    postgres_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, postgres_url)
    assert (await bridge_cli("migrate", "--config", str(config)))[0] == 0
    connection = await connect(postgres_url)
    try:
        await connection.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)"
        )
        code, _, err = await bridge_cli("migrate", "--config", str(config))
        assert code == 4 and "newer than this responses-bridge" in err
        code, _, err = await bridge_cli("migrate", "--check", "--config", str(config))
        assert code == 4
        count = await connection.fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(postgres_setup.postgres_migrations()) + 1
    finally:
        await connection.close()


async def test_the_password_comes_from_the_environment(postgres_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, postgres_url)
    code, _, err = await bridge_cli("migrate", "--config", str(config), password=None)
    assert code == 3 and PASSWORD_ENV in err
    code, _, err = await bridge_cli("migrate", "--config", str(config), password="wrong")
    assert code == 4 and "cannot connect" in err and "wrong" not in err
    checked = await bridge_cli("check-config", "--config", str(config), password=None)
    assert checked[0] == 0 and PASSWORD_ENV in checked[2]
    label = postgres_setup.display_url(postgres_url)
    assert f"the database is {label} (PostgreSQL; not checked: no password here)" in checked[1]
    strict = await bridge_cli("check-config", "--strict", "--config", str(config), password=None)
    assert strict[0] == 3


REASONING_1 = "Read the config first; call read_file on config.toml."
REASONING_2 = "Now the tests; run them."
TOOLS: list[Any] = [
    {"type": "function", "name": name, "parameters": {"type": "object"}}
    for name in ("read_file", "run_tests")
]


async def two_bridges(
    tmp_path: Path, postgres_url: str, fake_upstream: FakeUpstream
) -> tuple[BridgeProcess, BridgeProcess]:
    config = tmp_path / "shared.toml"
    config.write_text(
        f'[store]\nurl = "{postgres_url}"\npassword_env = "{PASSWORD_ENV}"\n'
        f'[providers.fake]\nbase_url = "{fake_upstream.url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\n'
    )
    env: dict[str, str | None] = {PASSWORD_ENV: PASSWORD}
    first = BridgeProcess(config, free_port(), env=env, log=tmp_path / "a.log")
    second = BridgeProcess(config, free_port(), env=env, log=tmp_path / "b.log")
    # Started together: both migrate the blank database; the lock makes it once.
    await asyncio.gather(first.start(), second.start())
    return first, second


async def post(session: aiohttp.ClientSession, bridge: BridgeProcess, **body: Any) -> Any:
    async with session.post(f"{bridge.url}/v1/responses", json={"model": MODEL, **body}) as r:
        payload = await r.json()
        assert r.status == 200, payload
        return payload


async def test_two_bridges_share_chains_and_survive_kill_9(
    tmp_path: Path, postgres_url: str, fake_upstream: FakeUpstream
) -> None:
    """A strict thinking upstream; a client alternating between two bridges on one
    database; one of them killed mid-stream; the chain goes on with exact reasoning."""
    first, second = await two_bridges(tmp_path, postgres_url, fake_upstream)
    slow = thinking_text_reply(["Thinking."], [f"w{n} " for n in range(200)])
    slow.frame_delay = 0.05
    fake_upstream.script(
        tool_call_reply(REASONING_1, [("call_p1", "read_file", ['{"path": "config.toml"}'])]),
        tool_call_reply(REASONING_2, [("call_p2", "run_tests", ["{}"])]),
        slow,
        thinking_text_reply(["Done."], ["All green."]),
    )
    try:
        async with aiohttp.ClientSession() as session:
            one = await post(session, first, input="check the project", tools=TOOLS)
            two = await post(
                session,
                second,
                previous_response_id=one["id"],
                tools=TOOLS,
                input=[{"type": "function_call_output", "call_id": "call_p1", "output": "ok"}],
            )
            assistant = fake_upstream.requests[1]["messages"][1]
            assert assistant["reasoning_content"] == REASONING_1
            # A stream on the first bridge, killed half way.
            async with session.post(
                f"{first.url}/v1/responses",
                json={
                    "model": MODEL,
                    "previous_response_id": two["id"],
                    "tools": TOOLS,
                    "stream": True,
                    "input": [
                        {"type": "function_call_output", "call_id": "call_p2", "output": "1 failed"}
                    ],
                },
            ) as response:
                await response.content.readuntil(b"response.output_text.delta")
                await first.kill()
            # The chain goes on from the last completed response, on the other bridge.
            three = await post(
                session,
                second,
                previous_response_id=two["id"],
                tools=TOOLS,
                input=[
                    {"type": "function_call_output", "call_id": "call_p2", "output": "1 failed"}
                ],
            )
            assert three["output"][-1]["content"][0]["text"] == "All green."
            sent = fake_upstream.requests[-1]["messages"]
            calls = [m for m in sent if m.get("tool_calls")]
            assert [m["reasoning_content"] for m in calls] == [REASONING_1, REASONING_2]
            # Stored on one, read on the other.
            async with session.get(f"{second.url}/v1/responses/{one['id']}") as got:
                assert (await got.json())["output"] == one["output"]
    finally:
        await first.stop()
        await second.stop()


async def test_background_responses_are_cancelled_and_reaped_across_bridges(
    tmp_path: Path, postgres_url: str, fake_upstream: FakeUpstream
) -> None:
    first, second = await two_bridges(tmp_path, postgres_url, fake_upstream)

    def slow_reply(body: Any) -> Any:
        reply = thinking_text_reply(["Long."], [f"w{n} " for n in range(2000)])
        reply.frame_delay = 0.05
        return reply

    fake_upstream.responder = slow_reply
    try:
        async with aiohttp.ClientSession() as session:
            # Cancelled through the other bridge: the one running it is told and stops.
            running = await post(session, first, input="long", background=True)
            await asyncio.sleep(0.5)
            async with session.get(f"{second.url}/v1/responses/{running['id']}") as got:
                # Stored when it was created; its row changes again when it ends.
                assert (await got.json())["status"] in ("queued", "in_progress")
            async with session.post(f"{second.url}/v1/responses/{running['id']}/cancel") as r:
                assert r.status == 200
                assert (await r.json())["status"] == "cancelled"
            async with session.get(f"{first.url}/v1/responses/{running['id']}") as got:
                assert (await got.json())["status"] == "cancelled"
            # Its bridge killed: the other one finds it orphaned and says so.
            orphan = await post(session, first, input="long again", background=True)
            await asyncio.sleep(0.5)
            await first.kill()
            # PostgreSQL releases the dead bridge's locks once it notices its connection
            # closed (a moment after kill -9); each read checks again.
            for _ in range(100):
                async with session.get(f"{second.url}/v1/responses/{orphan['id']}") as got:
                    body = await got.json()
                if body["status"] != "queued":
                    break
                await asyncio.sleep(0.1)
            assert body["status"] == "failed"
            assert "stopped while this background response was running" in body["error"]["message"]
    finally:
        await first.stop()
        await second.stop()


async def test_the_command_line_works_on_postgresql(
    tmp_path: Path, postgres_url: str, fake_upstream: FakeUpstream
) -> None:
    first, second = await two_bridges(tmp_path, postgres_url, fake_upstream)
    fake_upstream.script(thinking_text_reply(["Hmm."], ["Hello from PG."]))
    try:
        async with aiohttp.ClientSession() as session:
            created = await post(session, first, input="hi")
    finally:
        await first.stop()
        await second.stop()
    config = tmp_path / "shared.toml"
    code, out, err = await bridge_cli("sessions", "list", "--config", str(config))
    assert code == 0, err
    assert created["id"] in out
    assert f"# database: {postgres_setup.display_url(postgres_url)} (schema version" in err
    code, out, err = await bridge_cli("sessions", "show", created["id"], "--config", str(config))
    assert code == 0 and "Hello from PG." in out
    code, out, _ = await bridge_cli("sessions", "delete", created["id"], "--config", str(config))
    assert code == 0
    code, _, _ = await bridge_cli("sessions", "show", created["id"], "--config", str(config))
    assert code == 5


def sqlite_columns(tmp_path: Path) -> dict[str, list[str]]:
    connection = sqlite3.connect(tmp_path / "schema.db", isolation_level=None)
    try:
        migrate_sqlite(connection)
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
            for table in tables
        }
    finally:
        connection.close()


async def test_both_schemas_have_the_same_tables_and_columns(
    postgres_url: str, tmp_path: Path
) -> None:
    """The two backends keep the same data: a table or column added to one is added to
    the other."""
    connection = await connect(postgres_url)
    try:
        await postgres_setup.migrate(connection)
        rows = await connection.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        )
    finally:
        await connection.close()
    pg: dict[str, list[str]] = {}
    for row in rows:
        pg.setdefault(row["table_name"], []).append(row["column_name"])
    assert pg == sqlite_columns(tmp_path)
    assert re.match(r"postgresql://bridge@127\.0\.0\.1:\d+/test_", postgres_url)


async def test_a_database_restart_is_survived(
    tmp_path: Path, fake_upstream: FakeUpstream, aiohttp_client: Any, monkeypatch: Any
) -> None:
    """The database goes away mid-turn: /readyz says so, the turn's answer still streams and
    is recorded when the database is back; then everything works again."""
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="rb-postgres-restart-")))
    problem = cluster.start()
    if problem is not None:
        cluster.stop()
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    try:
        url = cluster.create_database()
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        config = bridge_config(
            fake_upstream.url,
            store=f'url = "{url}"\npassword_env = "{PASSWORD_ENV}"\nwrite_timeout = 30.0',
        )
        bridge = await aiohttp_client(create_app(config))
        other = await aiohttp_client(create_app(config))  # a second bridge on the database
        assert (await bridge.get("/readyz")).status == 200
        slow = thinking_text_reply(["Hmm."], [f"w{n} " for n in range(40)])
        slow.frame_delay = 0.05
        fake_upstream.script(slow, thinking_text_reply([], ["after"]))
        response = await bridge.post(
            "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True}
        )
        await response.content.readuntil(b"response.output_text.delta")
        await asyncio.to_thread(cluster.stop_fast)
        ready = await bridge.get("/readyz")
        assert ready.status == 503
        assert "unreachable" in (await ready.json())["database"]
        unavailable = await bridge.get("/v1/responses/resp_anything")
        assert unavailable.status == 503
        assert "database is unavailable" in (await unavailable.json())["error"]["message"]
        await asyncio.sleep(2.5)  # the answer ends meanwhile; its write waits
        await asyncio.to_thread(cluster.restart)
        body = await response.read()
        final = json.loads(body.split(b"data: ")[-2].split(b"\n")[0])
        assert_ends(final)
        assert final["response"]["store"] is True  # it was kept
        got = await bridge.get(f"/v1/responses/{final['response']['id']}")
        assert got.status == 200
        assert (await bridge.get("/readyz")).status == 200
        after = await bridge.post("/v1/responses", json={"model": MODEL, "input": "again"})
        assert after.status == 200
        # Run locks and cancels work again across bridges.
        long = thinking_text_reply(["Long."], [f"w{n} " for n in range(2000)])
        long.frame_delay = 0.05
        fake_upstream.script(long)
        created = await bridge.post(
            "/v1/responses", json={"model": MODEL, "input": "long", "background": True}
        )
        response_id = (await created.json())["id"]
        await asyncio.sleep(0.3)
        cancelled = await other.post(f"/v1/responses/{response_id}/cancel")
        assert (await cancelled.json())["status"] == "cancelled"
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


async def test_retention_on_postgresql(postgres_url: str, monkeypatch: Any) -> None:
    """max_age_days prunes responses (a chain's shared items kept while needed), their
    reasoning and idle conversations, as on SQLite."""
    from bridge.records import record_turn
    from bridge.scope import Scope
    from bridge.store.postgres import PostgresStore
    from bridge.wire.events import MessageOutput, OutputTextPart, ResponseObject
    from bridge.wire.responses import ResponsesRequest

    config = parse_config(f'[store]\nurl = "{postgres_url}"\npassword_env = "{PASSWORD_ENV}"\n')
    store = await PostgresStore.open(config, {PASSWORD_ENV: PASSWORD})
    now = int(time.time())
    try:
        for index, created in enumerate((now - 40 * 86400, now)):
            req = ResponsesRequest(model="m", input=[{"role": "user", "content": f"q{index}"}])
            output = [MessageOutput(id=f"msg_{index}", content=[OutputTextPart(text="a")])]
            response = ResponseObject(
                id=f"resp_{index}", created_at=created, model="m", status="completed", output=output
            )
            await store.save_turn(record_turn(req, response, Scope(conversation="s:x")))
        await store.create_conversation("conv_old", "", b"{}", [("msg_c", b"{}")])
        await store.create_conversation("conv_new", "", b"{}", [])
        connection = await connect(postgres_url)
        try:
            await connection.execute(
                "UPDATE conversations SET updated_at = $1 WHERE id = 'conv_old'", now - 40 * 86400
            )
            assert await store.prune(max_age_days=30, max_size_mb=1024) == 1
            assert await store.get_response("resp_0") is None
            assert await store.get_response("resp_1") is not None
            assert await store.get_conversation("conv_old", "") is None
            assert await store.get_conversation("conv_new", "") is not None
            left = await connection.fetchval(
                "SELECT count(*) FROM input_items WHERE response_id = 'resp_0'"
            )
            assert left == 0
        finally:
            await connection.close()
    finally:
        await store.close()


async def test_max_size_mb_deletes_the_oldest_on_postgresql(postgres_url: str) -> None:
    from bridge.records import record_turn
    from bridge.scope import Scope
    from bridge.store.postgres import PostgresStore
    from bridge.wire.events import ResponseObject
    from bridge.wire.responses import ResponsesRequest

    config = parse_config(f'[store]\nurl = "{postgres_url}"\npassword_env = "{PASSWORD_ENV}"\n')
    store = await PostgresStore.open(config, {PASSWORD_ENV: PASSWORD})
    now = int(time.time())
    try:
        for index in range(5):  # about 300 KB each
            req = ResponsesRequest(
                model="m", input=[{"role": "user", "content": f"{index} " + "x" * 300_000}]
            )
            response = ResponseObject(
                id=f"resp_{index}", created_at=now + index, model="m", status="completed"
            )
            await store.save_turn(record_turn(req, response, Scope()))
        # 0.7 MB holds two of them, not three.
        assert await store.prune(max_age_days=30, max_size_mb=0.7) == 3
        kept = [i for i in range(5) if await store.get_response(f"resp_{i}") is not None]
        assert kept == [3, 4]
        assert await store.prune(max_age_days=30, max_size_mb=0.0001) == 1
        assert await store.get_response("resp_4") is not None  # the newest always stays
    finally:
        await store.close()


async def test_codex_moves_to_another_bridge_with_exact_reasoning(
    tmp_path: Path, postgres_url: str, fake_upstream: FakeUpstream
) -> None:
    """The real Codex over WebSockets: a tool loop on one bridge, then `resume --last` on
    another bridge of the same database. The new bridge's socket has nothing of the
    conversation: Codex sends it whole, and its tool-call turns reach the strict upstream
    with their exact reasoning, from the shared index."""
    codex = codex_binary()
    if codex is None:
        if os.environ.get("REQUIRE_CODEX") == "1":
            pytest.fail("the Codex CLI from npm is needed")
        pytest.skip("the Codex CLI is not installed (npm install @openai/codex@0.169.0)")
    first, second = await two_bridges(tmp_path, postgres_url, fake_upstream)
    config_file = tmp_path / "shared.toml"
    catalog = tmp_path / "catalog.json"
    assert (
        codex_config.run(load_config(config_file), model=None, catalog_path=catalog, codex=codex)
        == 0
    )
    try:
        home = websocket_home(codex, tmp_path, first, config_file, catalog)
        fake_upstream.responder = tool_loop
        made = await home.run("-m", MODEL, "make three files")
        assert made.returncode == 0, made.output
        assert "Made three files." in made.stdout
        # The first bridge goes away; Codex's provider now names the other one.
        await first.stop()
        (tmp_path / "again").mkdir()
        moved = websocket_home(codex, tmp_path / "again", second, config_file, catalog)
        (home.home / "config.toml").write_text((moved.home / "config.toml").read_text())
        resumed = await home.run("resume", "--last", "what did you make")
        assert resumed.returncode == 0, resumed.output
        assert "I made one.txt, two.txt and third.txt." in resumed.stdout
        last = fake_upstream.requests[-1]
        assert "what did you make" in last_user_text(last)
        assert replayed_assistant(last, "call_p1")["reasoning_content"] == PARALLEL_REASONING
        assert replayed_assistant(last, "call_ap")["reasoning_content"] == PATCH_REASONING
    finally:
        await first.stop()
        await second.stop()
