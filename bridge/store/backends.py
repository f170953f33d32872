"""Which store a config asks for: the one place the backend is chosen.

SQLite (the `[store] path` file) is the default and serves everything. PostgreSQL
(`[store] url`) is being built (docs/configuration.md, "PostgreSQL"): its schema and
migrations are in place, and `migrate` and `check-config` work with it; a command that needs
the store itself refuses a PostgreSQL config with a clear error instead of falling back to
a file nobody else sees.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

from bridge.config import Config, ConfigError, store_path
from bridge.migrate import MigrationError
from bridge.store import postgres

EXIT_OK = 0
EXIT_STORE = 4


def uses_postgres(config: Config) -> bool:
    return config.store.url is not None


def database_label(config: Config, environ: Mapping[str, str]) -> str:
    """The database as messages name it: the SQLite file, or the PostgreSQL URL."""
    if config.store.url is not None:
        return postgres.display_url(config.store.url)
    return str(store_path(config, environ))


def require_sqlite(config: Config, what: str) -> None:
    """ConfigError for a PostgreSQL config where this release needs the SQLite store."""
    if config.store.url is not None:
        raise ConfigError(
            f"{config.source}: key `store.url`: {what} does not run on PostgreSQL yet in "
            "this release (`migrate` and `check-config` do); remove `store.url` to use the "
            "SQLite file at `store.path`"
        )


def run_postgres_migrate(config: Config, environ: Mapping[str, str], *, check: bool) -> int:
    """`migrate [--check]` against `[store] url`; an exit code."""
    return asyncio.run(_postgres_migrate(config, environ, check=check))


async def _postgres_migrate(config: Config, environ: Mapping[str, str], *, check: bool) -> int:
    label = database_label(config, environ)
    try:
        connection = await postgres.connect(config, environ)
    except ConnectionError as exc:
        print(f"responses-bridge: database: {exc}", file=sys.stderr)
        return EXIT_STORE
    try:
        if check:
            current, latest = await postgres.check(connection)
            pending = latest - current
            state = (
                "up to date" if not pending else f"{pending} migration(s) to apply with `migrate`"
            )
            print(f"{label}: schema version {current} ({state})")
            return EXIT_OK
        version = await postgres.migrate(connection)
        print(f"{label}: schema version {version}")
        return EXIT_OK
    except MigrationError as exc:
        print(f"responses-bridge: database: {label}: {exc}", file=sys.stderr)
        return EXIT_STORE
    finally:
        await connection.close()
