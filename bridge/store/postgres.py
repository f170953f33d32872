"""The store on PostgreSQL (`[store] url`): connecting, and the schema migrations.

Migrations are the numbered SQL files in `migrations/postgres/`, applied like the SQLite ones,
all pending ones in one transaction that holds an advisory lock: several bridges starting at
once on one database wait for each other, and each migration is applied once. A database at
a newer version than this code knows is refused and left as it is.

The password comes from the environment variable `[store] password_env` names, never from
the config file (bridge.config refuses a URL that holds one).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from bridge.config import Config, ConfigError
from bridge.migrate import Migration, MigrationError, load_migrations, migrations_source

if TYPE_CHECKING:
    # Imported when PostgreSQL is used: the SQLite bridge does not carry it in memory.
    import asyncpg

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


async def schema_version(connection: asyncpg.Connection) -> int:
    """The highest migration applied (0 for a blank database)."""
    exists = await connection.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await connection.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


def _newer(current: int, latest: int) -> MigrationError:
    return MigrationError(
        f"the database is at schema version {current}, newer than this responses-bridge "
        f"knows (up to {latest}); upgrade responses-bridge or point [store] url at another "
        "database. The database was not modified."
    )


async def migrate(connection: asyncpg.Connection, migrations: list[Migration] | None = None) -> int:
    """Apply what is missing, under the migration lock, in one transaction; the version."""
    import asyncpg

    known = migrations if migrations is not None else postgres_migrations()
    latest = known[-1].version
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await connection.execute(_TRACKING_TABLE)
        current = int(
            await connection.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        )
        if current > latest:
            raise _newer(current, latest)
        for migration in known[current:]:
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
    return latest


async def check(connection: asyncpg.Connection) -> tuple[int, int]:
    """(the database's version, the latest this code knows); MigrationError when newer."""
    latest = postgres_migrations()[-1].version
    current = await schema_version(connection)
    if current > latest:
        raise _newer(current, latest)
    return current, latest
