"""Which store a config asks for: the one place the backend is chosen.

SQLite (the `[store] path` file) is the default: one bridge on a workstation. PostgreSQL
(`[store] url`) is for several bridges sharing their conversations: the same operations
(bridge.store.postgres_store), the same scoping and retention.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.config import Config, store_path
from bridge.migrate import MigrationError
from bridge.store import Store, postgres

if TYPE_CHECKING:
    from bridge.store.postgres_store import PostgresStore

    # Either store: they offer the same operations.
    StoreBackend = Store | PostgresStore
else:
    # PostgreSQL's modules (and asyncpg) load only for a config that uses it.
    StoreBackend = Store

EXIT_OK = 0
EXIT_STORE = 4


def uses_postgres(config: Config) -> bool:
    return config.store.url is not None


def database_label(config: Config, environ: Mapping[str, str]) -> str:
    """The database as messages name it: the SQLite file, or the PostgreSQL URL."""
    if config.store.url is not None:
        return postgres.display_url(config.store.url)
    return str(store_path(config, environ))


async def open_store(
    config: Config,
    environ: Mapping[str, str],
    *,
    path: Path | None = None,
    check: bool = True,
) -> StoreBackend:
    """The configured store, migrated; `path` overrides the SQLite file (tests)."""
    if config.store.url is not None:
        from bridge.store.postgres_store import PostgresStore

        return await PostgresStore.open(config, environ, write_timeout=config.store.write_timeout)
    return await Store.open(
        path or store_path(config, environ),
        config.store.synchronous,
        check=check,
        write_timeout=config.store.write_timeout,
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
