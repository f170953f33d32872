"""PostgreSQL (`[store] url`): connecting, and the schema migrations.

Migrations are the numbered SQL files in `migrations/postgres/`, applied like the SQLite ones,
all pending ones in one transaction that holds an advisory lock: several bridges starting at
once on one database wait for each other, and each migration is applied once. A database at
a newer version than this code knows is left as it is, and used only when its newer
migrations say they keep this code working (bridge.migrate.SchemaState).

The password comes from the environment variable `[store] password_env` names, never from
the config file (bridge.config refuses a URL that holds one).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from bridge.config import Config, ConfigError
from bridge.migrate import (
    COMPATIBLE_FROM,
    Migration,
    MigrationError,
    SchemaState,
    load_migrations,
    migrations_source,
)

if TYPE_CHECKING:
    # Imported when PostgreSQL is used: the SQLite bridge does not carry it in memory.
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by the pool.
    AnyConnection = asyncpg.Connection | PoolConnectionProxy[Any]

# pg_advisory_xact_lock key of the schema migrations (any constant shared by all bridges).
MIGRATION_LOCK = 0x7262_6D67
CONNECT_SECONDS = 10.0
_TRACKING_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at bigint NOT NULL
)
"""


def display_url(url: str) -> str:
    """The URL as logs and messages show it: scheme, user, host, port, database."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, f"{user}{host}", parts.path, "", ""))


def password(config: Config, environ: Mapping[str, str]) -> str | None:
    """The password from `[store] password_env` (ConfigError when that variable is unset)."""
    name = config.store.password_env
    if name is None:
        return None
    value = environ.get(name)
    if not value:
        raise ConfigError(
            f"{config.source}: key `store.password_env`: environment variable {name} is not set"
        )
    return value


def postgres_migrations() -> list[Migration]:
    return load_migrations(migrations_source() / "postgres")


async def connect(config: Config, environ: Mapping[str, str]) -> asyncpg.Connection:
    """One connection to `[store] url`."""
    import asyncpg

    url = config.store.url
    assert url is not None
    secret = password(config, environ)
    try:
        return await asyncpg.connect(url, password=secret, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise ConnectionError(f"{display_url(url)}: cannot connect: {exc}") from exc


async def schema_version(connection: AnyConnection) -> int:
    """The highest migration applied (0 for a blank database)."""
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await connection.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def _has_compatibility(connection: AnyConnection) -> bool:
    return bool(
        await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = 'schema_migrations' AND column_name = $1)",
            COMPATIBLE_FROM,
        )
    )


async def schema_state(
    connection: AnyConnection, migrations: list[Migration] | None = None
) -> SchemaState:
    """The database's version against this code's migrations; only reads."""
    latest = (migrations or postgres_migrations())[-1].version
    current = await schema_version(connection)
    if current <= latest:
        return SchemaState(current, latest)
    needs = current
    if await _has_compatibility(connection):
        needs = int(
            await connection.fetchval(
                f"SELECT max(coalesce({COMPATIBLE_FROM}, version)) FROM schema_migrations "
                "WHERE version > $1",
                latest,
            )
        )
    return SchemaState(current, latest, needs)


async def read_state(config: Config, environ: Mapping[str, str]) -> SchemaState:
    """The database's schema, on a connection of its own (ConnectionError if unreadable)."""
    import asyncpg

    connection = await connect(config, environ)
    try:
        return await schema_state(connection)
    except asyncpg.PostgresError as exc:
        raise ConnectionError(f"{display_url(config.store.url or '')}: {exc}") from exc
    finally:
        await connection.close()


async def migrate(connection: asyncpg.Connection, migrations: list[Migration] | None = None) -> int:
    """Apply what is missing, under the migration lock, in one transaction; the version.

    A newer database is left alone: used as it is when compatible, else refused."""
    import asyncpg

    known = migrations if migrations is not None else postgres_migrations()
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        # Before anything is read: it takes the table's lock, which makes this transaction
        # see what a bridge that held the migration lock before it committed (the name
        # lookup alone may use the catalog as it was when the transaction began).
        await connection.execute(_TRACKING_TABLE)
        state = await schema_state(connection, known)
        if not state.older:
            if not state.usable:
                raise MigrationError(state.too_new())
            return state.version
        for migration in known[state.version :]:
            try:
                await connection.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration postgres/{migration.version:04d}_{migration.name}.sql failed: {exc}"
                ) from exc
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                int(time.time()),
            )
            if await _has_compatibility(connection):
                await connection.execute(
                    f"UPDATE schema_migrations SET {COMPATIBLE_FROM} = $1 WHERE version = $2",
                    migration.compatible_from,
                    migration.version,
                )
    return known[-1].version


async def check(connection: asyncpg.Connection) -> SchemaState:
    """The database's schema against this code's (MigrationError when newer and not
    compatible)."""
    state = await schema_state(connection)
    if not state.older and not state.usable:
        raise MigrationError(state.too_new())
    return state
