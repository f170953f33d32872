"""Which store a config asks for: the one place the backend is chosen.

SQLite (the `[store] path` file) is the default: one bridge on a workstation. PostgreSQL
(`[store] url`) is for several bridges sharing their conversations: the same operations
(bridge.store.protocol.Store), the same scoping and retention.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

from bridge.config import Config
from bridge.config_env import spool_directory, spool_path, store_path
from bridge.errors import redact_url
from bridge.exit_codes import Exit
from bridge.migrate import MigrationError, SchemaState, plan
from bridge.store import postgres_setup
from bridge.store.errors import StoreError
from bridge.store.files import inspect_schema
from bridge.store.postgres_setup import postgres_migrations
from bridge.store.protocol import Opening, Store
from bridge.store.spool import Spool
from bridge.store.sqlite import SQLiteStore

# How long check-config waits for PostgreSQL to answer.
STATE_SECONDS = 3.0


def uses_postgres(config: Config) -> bool:
    return config.store.url is not None


def database_label(config: Config, environ: Mapping[str, str]) -> str:
    """The database as messages name it: the SQLite file, or the PostgreSQL URL."""
    if config.store.url is not None:
        return postgres_setup.display_url(config.store.url)
    return str(store_path(config, environ))


def serving(config: Config) -> Opening:
    """How `serve` opens the store: migrating an older schema unless `[store] migrate` is
    "never"."""
    return Opening.SERVE_MIGRATING if config.store.migrate == "auto" else Opening.SERVE


async def open_store(
    config: Config,
    environ: Mapping[str, str],
    *,
    opening: Opening,
    path: Path | None = None,
    check: bool = True,
) -> Store:
    """The configured store, opened as `opening` says (only `serve` migrates, and only with
    `[store] migrate = "auto"`); `path` overrides the SQLite file (tests)."""
    url = config.store.url
    sqlite_file = path or store_path(config, environ)
    directory = spool_path(config, environ)
    spool = None
    if directory is not None and opening.serves:
        # What names the database for its spool: PostgreSQL's URL without the user and
        # password it may carry, or the SQLite file's absolute path.
        database = redact_url(url) if url is not None else f"sqlite:{sqlite_file.resolve()}"
        spool = Spool(
            spool_directory(directory, database),
            int(config.store.spool_max_mb * 1024 * 1024),
            database=database,
        )
    if url is not None:
        # PostgreSQL's modules (and asyncpg) load only for a config that uses it.
        from bridge.store.postgres import PostgresStore

        return await PostgresStore.open(
            config,
            environ,
            write_timeout=config.store.write_timeout,
            opening=opening,
            spool=spool,
        )
    return await SQLiteStore.open(
        sqlite_file,
        config.store.synchronous,
        check=check,
        write_timeout=config.store.write_timeout,
        opening=opening,
        spool=spool,
    )


def schema_versions() -> str:
    """The schema versions this release knows, as `--version` and /healthz name them."""
    from bridge.migrate import load_migrations

    return (
        f"SQLite schema {load_migrations()[-1].version}, "
        f"PostgreSQL schema {postgres_migrations()[-1].version}"
    )


def database_state(config: Config, environ: Mapping[str, str]) -> tuple[str, bool]:
    """What `serve` would find in the configured database, without changing it: a phrase
    for check-config, and whether `serve` would refuse it (exit 4)."""
    try:
        state = asyncio.run(_read_state(config, environ))
    except (StoreError, ConnectionError, OSError) as exc:
        return f"not checked: {exc}", False
    except TimeoutError:
        return f"not checked: no answer within {STATE_SECONDS:g}s", False
    if state is None:
        return "not created yet; `serve` creates it", config.store.migrate == "never"
    if state.older:
        if config.store.migrate == "never":
            return f"{state.describe()}: {state.too_old()}", True
        return (
            f"{state.describe()}; `serve` migrates it to {state.latest} at start "
            '([store] migrate = "auto")',
            False,
        )
    if not state.usable:
        return state.too_new(), True
    return state.describe(), False


async def _read_state(config: Config, environ: Mapping[str, str]) -> SchemaState | None:
    if config.store.url is None:
        path = store_path(config, environ)
        if not path.exists():
            return None
        return await asyncio.to_thread(inspect_schema, path)
    async with asyncio.timeout(STATE_SECONDS):
        return await postgres_setup.read_state(config, environ)


def run_postgres_migrate(config: Config, environ: Mapping[str, str], *, check: bool) -> int:
    """`migrate [--check]` against `[store] url`; an exit code."""
    return asyncio.run(_postgres_migrate(config, environ, check=check))


async def _postgres_migrate(config: Config, environ: Mapping[str, str], *, check: bool) -> int:
    label = database_label(config, environ)
    try:
        connection = await postgres_setup.connect(config, environ)
    except ConnectionError as exc:
        print(f"responses-bridge: database: {exc}", file=sys.stderr)
        return Exit.STORE
    try:
        if check:
            state = await postgres_setup.check(connection)
            print(f"{label}: schema version {state.version} ({plan(state, postgres_migrations())})")
            return Exit.OK
        version = await postgres_setup.migrate(connection)
        print(f"{label}: schema version {version}")
        return Exit.OK
    except MigrationError as exc:
        print(f"responses-bridge: database: {label}: {exc}", file=sys.stderr)
        return Exit.STORE
    finally:
        await connection.close()
