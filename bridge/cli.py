"""Command line: `responses-bridge serve | check-config | migrate | sessions | codex-config`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import __version__, codex_config, sessions_cli
from bridge.config import (
    Config,
    ConfigError,
    check_exposure,
    is_loopback,
    load_config,
    resolve_api_keys,
    resolve_client_keys,
    store_path,
)
from bridge.effective_config import effective_toml
from bridge.migrate import MigrationError
from bridge.store import StoreError

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_CONFIG = 3
EXIT_STORE = 4  # the database cannot be opened or migrated
# 5: `sessions show|export|delete` named an unknown response (bridge.sessions_cli)
EXIT_LISTEN = 6  # serve cannot listen on its address
# 7: codex-config could not read the installed Codex's model catalog (bridge.codex_config)

LOG_LEVELS = ("debug", "info", "warning", "error")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="responses-bridge",
        description="Serve the OpenAI Responses API over a Chat Completions provider.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--config", required=True, metavar="PATH", help="config.toml to use")
    serve.add_argument("--host", help="listen address (overrides [server] host)")
    serve.add_argument("--port", type=int, help="listen port (overrides [server] port)")
    serve.add_argument(
        "--log-level", choices=LOG_LEVELS, help="overrides [server] log_level (default info)"
    )

    check = commands.add_parser(
        "check-config", help="validate a config file and print the effective settings"
    )
    check.add_argument("--config", required=True, metavar="PATH", help="config.toml to check")
    sessions_cli.add_commands(commands, "config.toml naming the database")

    codex = commands.add_parser(
        "codex-config", help="print a Codex config snippet and write a model catalog for it"
    )
    codex.add_argument("--config", required=True, metavar="PATH", help="the bridge's config.toml")
    codex.add_argument("--model", help="Codex's default model (default: the first configured)")
    codex.add_argument(
        "--catalog",
        metavar="PATH",
        help="where to write the catalog (default: $CODEX_HOME or ~/.codex, "
        "responses-bridge-models.json)",
    )
    codex.add_argument("--codex", metavar="PATH", help="the codex executable (default: on PATH)")
    return parser


def _load(path: str) -> tuple[Config, dict[str, str]]:
    config = load_config(path)
    return config, resolve_api_keys(config, os.environ)


def _check_config(path: str) -> int:
    config, _ = _load(path)
    print(f"# {path}: ok; the database is {store_path(config, os.environ)}")
    sys.stdout.write(effective_toml(config))
    return EXIT_OK


def _serve(args: argparse.Namespace) -> int:
    from bridge.app import create_app
    from bridge.server import serve

    config, api_keys = _load(args.config)
    client_keys = resolve_client_keys(config, os.environ)
    host = args.host if args.host is not None else config.server.host
    port = args.port if args.port is not None else config.server.port
    check_exposure(config, host, client_keys)
    logging.basicConfig(
        level=(args.log_level or config.server.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    warning = exposure_warning(config, host, client_keys)
    if warning is not None:
        logging.getLogger("bridge").warning("%s", warning)
    app = create_app(config, api_keys, client_keys=client_keys)
    try:
        asyncio.run(
            serve(app, host, port, config.server.drain_seconds, config.server.header_timeout)
        )
    except OSError as exc:
        print(f"responses-bridge: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return EXIT_LISTEN
    return EXIT_OK


def exposure_warning(config: Config, host: str, client_keys: tuple[str, ...]) -> str | None:
    """What to warn about when the bridge listens beyond loopback without client keys
    (allowed only with allow_remote_without_auth)."""
    if is_loopback(host) or client_keys:
        return None
    return (
        f"listening on {host} without client keys (allow_remote_without_auth = true): "
        "anyone who can reach this address can spend the providers' credit"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        match args.command:
            case "check-config":
                return _check_config(args.config)
            case "migrate":
                config = load_config(args.config)
                return sessions_cli.run_migrate(
                    config, store_path(config, os.environ), check=args.check
                )
            case "sessions":
                config = load_config(args.config)
                return sessions_cli.run_sessions(args, config, store_path(config, os.environ))
            case "codex-config":
                config = load_config(args.config)
                catalog = Path(args.catalog) if args.catalog else None
                return codex_config.run(
                    config,
                    model=args.model,
                    catalog_path=catalog or codex_config.default_catalog_path(os.environ),
                    codex=args.codex,
                )
            case _:
                return _serve(args)
    except ConfigError as exc:
        print(f"responses-bridge: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (StoreError, MigrationError, sqlite3.Error) as exc:
        print(f"responses-bridge: database: {exc}", file=sys.stderr)
        return EXIT_STORE
