"""Upgrading from earlier releases with real processes, as an operator would (docs/upgrading.md).

An earlier release runs from its own source, taken from git history (`git archive`), as a
process of its own beside this one; the commands of this release must leave its database
alone (bytes and mtime of the SQLite file, the schema of the PostgreSQL database) and refuse
an older schema until `migrate` has run; after `migrate` the earlier release goes on serving
where the migrations say it can (an expand-only step), and chains move between the two.

- SQLite: release 0.2.0 (d47e249, schema 2) on tests/fixtures/store-v2-d47e249.db, which it
  made. Its next migrations change what it reads (schema 3 on): it is stopped, the database
  copied and migrated, this release started; the copy brings 0.2.0 back (the rollback).
- PostgreSQL: release 0.7.0 (407a761, PostgreSQL schema 1) on a new database: a rolling
  upgrade, 0.7.0 serving through `migrate` and beside this release until it is stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bridge.migrate import load_migrations, migrations_source
from bridge.store import postgres_setup
from tests.conftest import MODEL, PG_PASSWORD_ENV
from tests.fake_upstream import FakeUpstream, thinking_text_reply, tool_call_reply
from tests.postgres import PASSWORD
from tests.processes import REPO, BridgeProcess, free_port

FIXTURE = REPO / "tests" / "fixtures" / "store-v2-d47e249.db"
# In the fixture (see tests/test_store_upgrade.py): a stored chain CHAIN_1 -> CHAIN_2.
CHAIN_1 = "resp_44f49c31d74b7ae9abfcae7ddaff1842"
CHAIN_2 = "resp_c6f1a28521a99c516cf4cb79b18b7f2e"
RELEASE_0_2_0 = "d47e249"  # SQLite schema 2
RELEASE_0_7_0 = "407a761"  # SQLite schema 6, PostgreSQL schema 1
COMMAND_SECONDS = 60.0
WEATHER = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
SQLITE_LATEST = load_migrations()[-1].version
POSTGRES_LATEST = load_migrations(migrations_source() / "postgres")[-1].version


def release_source(commit: str, destination: Path) -> Path:
    """An earlier release's source tree, from this checkout's git history."""
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("the upgrade tests need this project's git history (a git checkout)")
    destination.mkdir(parents=True)
    archive = subprocess.run(
        [git, "-C", str(REPO), "archive", commit], capture_output=True, check=False, timeout=60
    )
    if archive.returncode != 0:
        pytest.skip(f"commit {commit} is not in this checkout: {archive.stderr.decode()}")
    subprocess.run(
        ["tar", "-x", "-C", str(destination)], input=archive.stdout, check=True, timeout=60
    )
    # 0.2.0 needs aiosqlite and aiohttp-sse, which the test extras carry for it.
    return destination


def earlier_bridge(source: Path, config: Path, log: Path, **env: str | None) -> BridgeProcess:
    """The earlier release as a process: run from its own tree, which it imports first."""
    return BridgeProcess(
        config, free_port(), env={"PYTHONPATH": str(source), **env}, log=log, cwd=source
    )


def bridge_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A command of this release."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        check=False,
    )


def file_state(database: Path) -> dict[str, tuple[str, int]]:
    """Bytes and mtime of the database and its WAL: what a command must not change."""
    found = {}
    for path in (database, Path(f"{database}-wal")):
        if path.exists():
            found[path.name] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return found


def sqlite_versions(database: Path) -> list[int]:
    uri = f"{database.resolve().as_uri()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as connection:
        return [row[0] for row in connection.execute("SELECT version FROM schema_migrations")]


def commands_that_must_not_migrate(config: Path, home: Path) -> list[list[str]]:
    """Every command but `serve` and `migrate`, as an operator would run them on a database
    a running bridge serves."""
    codex = REPO / "node_modules" / ".bin" / "codex"
    return [
        ["sessions", "list", "--config", str(config)],
        ["sessions", "show", CHAIN_1, "--config", str(config)],
        ["sessions", "export", CHAIN_1, "--config", str(config)],
        ["sessions", "delete", CHAIN_1, "--config", str(config)],
        ["sessions", "prune", "--config", str(config)],
        ["check-config", "--config", str(config)],
        ["migrate", "--check", "--config", str(config)],
        ["trace", "--config", str(config)],
        ["service", "install", "--output", "-", "--config", str(config)],
        [
            "codex-config",
            "--config",
            str(config),
            "--catalog",
            str(home / "catalog.json"),
            "--codex",
            str(codex if codex.exists() else home / "no-codex"),
        ],
    ]


async def post(session: aiohttp.ClientSession, bridge: BridgeProcess, **body: Any) -> Any:
    async with session.post(f"{bridge.url}/v1/responses", json={"model": MODEL, **body}) as r:
        payload = await r.json()
        assert r.status == 200, payload
        assert payload["status"] == "completed", payload.get("error")
        return payload


async def tool_turns(
    session: aiohttp.ClientSession,
    first: BridgeProcess,
    second: BridgeProcess,
    fake: FakeUpstream,
    label: str,
) -> str:
    """A tool call answered on `first`, its output sent on `second` by previous_response_id:
    the provider must get the call's reasoning back (a thinking model refuses the replay
    without it). The second response's id."""
    fake.script(
        tool_call_reply(f"reasoning {label}", [(f"call_{label}", "get_weather", ['{"c":1}'])]),
        thinking_text_reply([], [f"weather {label}"]),
    )
    called = await post(session, first, input=f"weather {label}?", tools=WEATHER)
    output = {"type": "function_call_output", "call_id": f"call_{label}", "output": "sunny"}
    answered = await post(
        session, second, previous_response_id=called["id"], input=[output], tools=WEATHER
    )
    replayed = [m for m in fake.requests[-1]["messages"] if m.get("tool_calls")]
    assert replayed[-1]["reasoning_content"] == f"reasoning {label}"
    return str(answered["id"])


async def get_status(session: aiohttp.ClientSession, bridge: BridgeProcess, rid: str) -> int:
    async with session.get(f"{bridge.url}/v1/responses/{rid}") as got:
        return got.status


async def ready(session: aiohttp.ClientSession, bridge: BridgeProcess) -> int:
    async with session.get(f"{bridge.url}/readyz") as answer:
        return answer.status


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_sqlite_the_previous_release_is_left_alone_then_upgraded_and_rolled_back(
    tmp_path: Path, fake_upstream: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    source = release_source(RELEASE_0_2_0, tmp_path / "release-0.2.0")
    database = tmp_path / "state" / "bridge.db"
    database.parent.mkdir(mode=0o700)
    shutil.copy(FIXTURE, database)
    database.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\npath = "{database}"\n[providers.fake]\nbase_url = "{fake_upstream.url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\n'
    )
    old = earlier_bridge(source, config, tmp_path / "old.log")
    await old.start()
    try:
        before_commands = await tool_turns(session, old, old, fake_upstream, "old")
        state = file_state(database)
        for command in commands_that_must_not_migrate(config, tmp_path):
            result = await asyncio.to_thread(bridge_command, *command, HOME=str(tmp_path))
            if command[:2] in (["sessions", "list"], ["sessions", "delete"]):
                assert result.returncode == 4, result
                assert "run `responses-bridge migrate`" in result.stderr
                assert "schema version 2" in result.stderr
            assert "Traceback" not in result.stderr, result.stderr
            assert file_state(database) == state, command
            assert sqlite_versions(database) == [1, 2], command
        checked = bridge_command("migrate", "--check", "--config", str(config))
        assert "stop the bridges of schema 2 before" in checked.stdout, checked
        # 0.2.0 serves on, its chains and new turns, as if nothing had run.
        assert await ready(session, old) == 200
        fake_upstream.script(thinking_text_reply([], ["still 0.2.0"]))
        kept = await post(session, old, previous_response_id=before_commands, input="more")
        assert await get_status(session, old, kept["id"]) == 200
        assert await old.terminate() == 0
    finally:
        await old.stop()

    # The upgrade: a copy first, then migrate, then this release.
    backup = tmp_path / "backup" / "bridge-0.2.0.db"
    migrated = bridge_command("migrate", "--backup", str(backup), "--config", str(config))
    assert migrated.returncode == 0, migrated.stderr
    assert sqlite_versions(database) == list(range(1, SQLITE_LATEST + 1))
    assert sqlite_versions(backup) == [1, 2]
    new = BridgeProcess(config, free_port(), log=tmp_path / "new.log")
    await new.start()
    try:
        for rid in (CHAIN_1, CHAIN_2, before_commands, kept["id"]):
            assert await get_status(session, new, rid) == 200, rid
        fake_upstream.script(thinking_text_reply([], ["this release"]))
        await post(session, new, previous_response_id=kept["id"], input="and now?")
        await tool_turns(session, new, new, fake_upstream, "new")
        assert await new.terminate() == 0
    finally:
        await new.stop()

    # The rollback: the copy back in place (without the new release's WAL), 0.2.0 again.
    for side in ("-wal", "-shm"):
        Path(f"{database}{side}").unlink(missing_ok=True)
    shutil.copy(backup, database)
    old = earlier_bridge(source, config, tmp_path / "old-again.log")
    await old.start()
    try:
        assert await get_status(session, old, kept["id"]) == 200
        assert await ready(session, old) == 200
    finally:
        await old.stop()


async def pg_schema(url: str) -> list[Any]:
    """The database's schema: the migrations applied and every column of every table."""
    connection = await asyncpg.connect(url, password=PASSWORD)
    try:
        versions = await connection.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        columns = await connection.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY 1, 2"
        )
        return [[tuple(row) for row in versions], [tuple(row) for row in columns]]
    finally:
        await connection.close()


async def test_postgresql_rolling_upgrade_with_the_previous_release_serving(
    tmp_path: Path,
    postgres_url: str,
    fake_upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = release_source(RELEASE_0_7_0, tmp_path / "release-0.7.0")
    monkeypatch.setenv(PG_PASSWORD_ENV, PASSWORD)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\nurl = "{postgres_url}"\npassword_env = "{PG_PASSWORD_ENV}"\n'
        f'[providers.fake]\nbase_url = "{fake_upstream.url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\n'
    )
    old = earlier_bridge(source, config, tmp_path / "old.log")
    new = BridgeProcess(config, free_port(), log=tmp_path / "new.log")
    await old.start()  # it creates the schema of 0.7.0
    try:
        made_by_old = await tool_turns(session, old, old, fake_upstream, "old")
        schema = await pg_schema(postgres_url)
        assert schema[0] == [(1,)]
        for command in commands_that_must_not_migrate(config, tmp_path):
            result = await asyncio.to_thread(bridge_command, *command, HOME=str(tmp_path))
            if command[0] == "sessions":
                assert result.returncode == 4, result
                assert "run `responses-bridge migrate`" in result.stderr
            assert "Traceback" not in result.stderr, result.stderr
            assert await pg_schema(postgres_url) == schema, command
        checked = bridge_command("migrate", "--check", "--config", str(config))
        assert checked.returncode == 0, checked.stderr
        assert "bridges of schema 1 keep working on the result" in checked.stdout

        # Expand: the new schema, with 0.7.0 serving on it.
        migrated = bridge_command("migrate", "--config", str(config))
        assert migrated.returncode == 0, migrated.stderr
        label = postgres_setup.display_url(postgres_url)
        assert migrated.stdout.strip() == f"{label}: schema version {POSTGRES_LATEST}"
        assert await ready(session, old) == 200
        fake_upstream.script(thinking_text_reply([], ["0.7.0 after migrate"]))
        await post(session, old, previous_response_id=made_by_old, input="still there?")
        # This release beside it: chains move both ways, reasoning and all.
        await new.start()
        assert await ready(session, new) == 200
        await tool_turns(session, old, new, fake_upstream, "old-to-new")
        await tool_turns(session, new, old, fake_upstream, "new-to-old")
        assert await get_status(session, new, made_by_old) == 200
        assert await old.terminate() == 0
        await tool_turns(session, new, new, fake_upstream, "new-alone")
        sessions = bridge_command("sessions", "list", "--config", str(config))
        assert sessions.returncode == 0 and made_by_old in sessions.stdout, sessions.stderr
    finally:
        await old.stop()
        await new.stop()


async def test_postgresql_a_later_release_that_breaks_this_one_is_reported(
    tmp_path: Path,
    postgres_url: str,
    fake_upstream: FakeUpstream,
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A later release's migration recorded while this bridge runs: compatible, it serves
    on; one that needs newer code, /readyz names both versions and requests that need the
    store get a 503, never a 500; gone again, it is ready."""
    monkeypatch.setenv(PG_PASSWORD_ENV, PASSWORD)
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\nurl = "{postgres_url}"\npassword_env = "{PG_PASSWORD_ENV}"\n'
        f'[providers.fake]\nbase_url = "{fake_upstream.url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\n'
    )
    bridge = BridgeProcess(config, free_port(), log=tmp_path / "bridge.log")
    await bridge.start()
    connection = await asyncpg.connect(postgres_url, password=PASSWORD)
    later, breaking = POSTGRES_LATEST + 1, POSTGRES_LATEST + 2
    try:
        fake_upstream.script(thinking_text_reply([], ["before"]))
        first = await post(session, bridge, input="hi")
        await connection.execute(
            "INSERT INTO schema_migrations VALUES ($1, 'expand', 0, $2)", later, POSTGRES_LATEST
        )
        assert await ready(session, bridge) == 200
        fake_upstream.script(thinking_text_reply([], ["on a compatible schema"]))
        await post(session, bridge, previous_response_id=first["id"], input="more")
        await connection.execute(
            "INSERT INTO schema_migrations VALUES ($1, 'contract', 0, $1)", breaking
        )
        async with session.get(f"{bridge.url}/readyz") as answer:
            assert answer.status == 503
            problem = (await answer.json())["database"]
        assert f"schema version {breaking}" in problem and f"up to {POSTGRES_LATEST}" in problem
        for method, path, body in (
            ("POST", "/v1/responses", {"model": MODEL, "input": "x"}),
            ("GET", f"/v1/responses/{first['id']}", None),
        ):
            async with session.request(method, f"{bridge.url}{path}", json=body) as answer:
                assert answer.status == 503, await answer.text()
                assert "upgrade responses-bridge" in (await answer.json())["error"]["message"]
        await connection.execute("DELETE FROM schema_migrations WHERE version = $1", breaking)
        assert await ready(session, bridge) == 200
        assert await get_status(session, bridge, first["id"]) == 200
    finally:
        await connection.close()
        await bridge.stop()
