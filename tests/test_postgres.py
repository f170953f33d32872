"""The store on PostgreSQL, as far as it goes in this release: the config, the schema and
its migrations (applied once by bridges starting together), and clear refusals where the
SQLite store is still needed. A real PostgreSQL server runs for these tests
(tests/postgres.py)."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import sys
from pathlib import Path

import asyncpg
import pytest

from bridge.config import ConfigError, parse_config
from bridge.migrate import migrate as migrate_sqlite
from bridge.store import postgres
from tests.postgres import PASSWORD
from tests.processes import REPO

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
    out, err = await asyncio.wait_for(process.communicate(), 60)
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
        postgres.display_url(config.store.url or "") == "postgresql://bridge@db.example:5433/bridge"
    )


async def test_migrate_creates_the_schema_once(postgres_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, postgres_url)
    code, out, err = await bridge_cli("migrate", "--config", str(config))
    assert code == 0, err
    latest = len(list((REPO / "migrations" / "postgres").glob("*.sql")))
    assert out.strip() == f"{postgres.display_url(postgres_url)}: schema version {latest}"
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
        assert count == len(postgres.postgres_migrations())
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
        assert await connection.fetchval("SELECT count(*) FROM schema_migrations") == 2
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
    assert f"the database is {postgres.display_url(postgres_url)} (PostgreSQL)" in checked[1]
    strict = await bridge_cli("check-config", "--strict", "--config", str(config), password=None)
    assert strict[0] == 3


async def test_commands_that_need_the_sqlite_store_say_so(
    postgres_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, postgres_url)
    for command in (["serve"], ["sessions", "list"], ["service", "install", "--output", "-"]):
        code, _, err = await bridge_cli(*command, "--config", str(config))
        assert code == 3, (command, err)
        assert "does not run on PostgreSQL yet" in err and "Traceback" not in err


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
        await postgres.migrate(connection)
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
