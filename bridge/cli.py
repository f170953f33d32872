"""Command line: `responses-bridge serve | check-config | migrate | sessions | codex-config |
service | trace`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge import __version__, service_install, sessions_cli, trace
from bridge.config import Config, ConfigError
from bridge.config_env import (
    check_exposure,
    is_loopback,
    resolve_client_keys,
    store_path,
    unset_api_keys,
)
from bridge.config_load import deprecations, load_config
from bridge.demo import demo_models, serving_keys
from bridge.errors import redact_url
from bridge.event_loop import loop_factory
from bridge.exit_codes import Exit
from bridge.logs import configure_logging
from bridge.migrate import MigrationError
from bridge.probe import probe_all
from bridge.store import StoreError, postgres_setup
from bridge.store.backends import (
    database_label,
    database_state,
    run_postgres_migrate,
    schema_versions,
    uses_postgres,
)

LOG_LEVELS = ("debug", "info", "warning", "error")


# Read when a command is given no --config.
CONFIG_ENV = "RESPONSES_BRIDGE_CONFIG"


def add_config_option(parser: argparse.ArgumentParser, text: str, *, nested: bool = False) -> None:
    """`--config PATH`, accepted before or after an action (a nested parser leaves the value
    its parent read alone unless given again)."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS if nested else None,
        help=f"{text} (default: ${CONFIG_ENV})",
    )


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="responses-bridge",
        description="Serve the OpenAI Responses API over a Chat Completions provider.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__} ({schema_versions()})"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP service")
    add_config_option(serve, "config.toml to use")
    serve.add_argument("--host", help="listen address (overrides [server] host)")
    serve.add_argument(
        "--port", type=port_number, help="listen port (overrides [server] port; 0: any free)"
    )
    serve.add_argument(
        "--log-level", choices=LOG_LEVELS, help="overrides [server] log_level (default info)"
    )

    check = commands.add_parser(
        "check-config", help="validate a config file and print the effective settings"
    )
    add_config_option(check, "config.toml to check")
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail (exit 3) when a provider's API key variable is unset here",
    )
    check.add_argument(
        "--probe",
        action="store_true",
        help="send each provider one tiny request: reachable, key accepted, model known, "
        "reasoning streamed (exit 9 if one fails)",
    )
    sessions_cli.add_commands(commands, "config.toml naming the database", add_config_option)

    codex = commands.add_parser(
        "codex-config", help="print a Codex config snippet and write a model catalog for it"
    )
    add_config_option(codex, "the bridge's config.toml")
    codex.add_argument("--model", help="Codex's default model (default: the first configured)")
    codex.add_argument(
        "--catalog",
        metavar="PATH",
        help="where to write the catalog (default: $CODEX_HOME or ~/.codex, "
        "responses-bridge-models.json)",
    )
    codex.add_argument("--codex", metavar="PATH", help="the codex executable (default: on PATH)")
    codex.add_argument(
        "--write",
        nargs="?",
        const="",
        metavar="PATH",
        help="merge into Codex's config.toml instead of printing (default PATH: $CODEX_HOME "
        "or ~/.codex, config.toml): only the bridge's provider, profile and catalog change; "
        "the old file is kept as config.toml.bak",
    )
    service_install.add_commands(commands, add_config_option)
    trace.add_command(commands, add_config_option)
    return parser


class UsageError(Exception):
    """A command line that cannot be run (exit 2, like argparse's own errors)."""


def config_path(args: argparse.Namespace) -> str:
    """The config file: --config, else $RESPONSES_BRIDGE_CONFIG."""
    path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
    if not path:
        raise UsageError(
            f"{args.command}: --config PATH is required (or set {CONFIG_ENV} to the path)"
        )
    return str(path)


def _check_config(path: str, *, strict: bool, probe: bool = False) -> int:
    config = load_config(path)
    unset = unset_api_keys(config, os.environ)
    for warning in unset:
        print(f"responses-bridge: warning: {config.source}: key {warning}", file=sys.stderr)
    for note in deprecations(config):
        print(f"responses-bridge: warning: {config.source}: {note}", file=sys.stderr)
    if config.store.url is not None:
        try:
            postgres_setup.password(config, os.environ)
        except ConfigError as exc:
            unset.append(str(exc).split(": key ", 1)[-1])
            print(f"responses-bridge: warning: {exc}", file=sys.stderr)
    if unset and strict:
        return Exit.CONFIG
    if uses_postgres(config) and any("password_env" in warning for warning in unset):
        state, refused = "PostgreSQL; not checked: no password here", False
    else:
        # Read without changing it: check-config never creates or migrates a database.
        state, refused = database_state(config, os.environ)
    print(f"# {path}: ok; the database is {database_label(config, os.environ)} ({state})")
    if probe:
        results = asyncio.run(probe_all(config, os.environ))
        for result in results:
            print(f"probe {result.line()}")
        return Exit.OK if all(result.ok for result in results) else Exit.PROBE
    from bridge.effective_config import effective_toml  # tomlkit: not for serve

    sys.stdout.write(effective_toml(config))
    if refused:
        print(f"responses-bridge: database: {state}", file=sys.stderr)
        return Exit.STORE
    return Exit.OK


def _serve(args: argparse.Namespace) -> int:
    from bridge.app import create_app
    from bridge.server import serve

    config = load_config(config_path(args))
    api_keys, missing_keys = serving_keys(config, os.environ)
    client_keys = resolve_client_keys(config, os.environ)
    host = args.host if args.host is not None else config.server.host
    port = args.port if args.port is not None else config.server.port
    check_exposure(config, host, client_keys)
    configure_logging(
        args.log_level or config.server.log_level, config.server.log_format, os.environ
    )
    log = logging.getLogger("bridge")
    warning = exposure_warning(config, host, client_keys)
    if warning is not None:
        log.warning("%s", warning)
    log.info("config %s", os.path.abspath(config.source))
    for name, model in config.models.items():
        provider = config.providers[model.provider]
        if provider.profile == "demo":
            log.info("model %s -> the built-in demo model (scripted answers, no provider)", name)
            continue
        log.info(
            "model %s -> provider %s (%s, model %s)%s",
            name,
            model.provider,
            redact_url(provider.base_url),
            config.upstream_model(name),
            f": unusable, {provider.api_key_env} is not set"
            if model.provider in missing_keys
            else "",
        )
    if missing_keys:
        variables = ", ".join(sorted({str(config.providers[p].api_key_env) for p in missing_keys}))
        log.warning(
            "demo mode: no provider key is set (%s), so only the built-in demo model (%s) "
            "answers; set the key and restart the bridge to use the others",
            variables,
            ", ".join(demo_models(config)),
        )
    for note in deprecations(config):
        log.warning("%s: %s", config.source, note)
    app = create_app(
        config,
        api_keys,
        client_keys=client_keys,
        missing_keys=missing_keys,
        listen_host=host,
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(
                serve(app, host, port, config.server.drain_seconds, config.server.header_timeout)
            )
    except OSError as exc:
        print(f"responses-bridge: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return Exit.LISTEN
    return Exit.OK


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
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`sessions export ID | head`): it has what it wanted. Point
        # stdout at /dev/null so that Python's flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return Exit.OK


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        match args.command:
            case "check-config":
                return _check_config(config_path(args), strict=args.strict, probe=args.probe)
            case "migrate":
                config = load_config(config_path(args))
                if uses_postgres(config):
                    if args.backup:
                        raise UsageError(
                            "migrate: --backup is for SQLite; back PostgreSQL up with pg_dump "
                            "(docs/upgrading.md)"
                        )
                    return run_postgres_migrate(config, os.environ, check=args.check)
                backup = Path(args.backup).expanduser() if args.backup else None
                return sessions_cli.run_migrate(
                    config, store_path(config, os.environ), check=args.check, backup=backup
                )
            case "sessions":
                config = load_config(config_path(args))
                return sessions_cli.run_sessions(args, config, os.environ)
            case "codex-config":
                from bridge import codex_config  # tomlkit: not for serve

                config = load_config(config_path(args))
                catalog = Path(args.catalog) if args.catalog else None
                write = None
                if args.write is not None:
                    write = Path(args.write or codex_config.default_config_path(os.environ))
                return codex_config.run(
                    config,
                    model=args.model,
                    catalog_path=catalog
                    or codex_config.default_catalog_path(os.environ, beside=write),
                    codex=args.codex,
                    write=write,
                )
            case "service":
                needs_config = args.action == "install"
                return service_install.run(args, config_path(args) if needs_config else None)
            case "trace":
                return trace.run(args, load_config(config_path(args)))
            case _:
                return _serve(args)
    except UsageError as exc:
        print(f"responses-bridge {exc}", file=sys.stderr)
        return Exit.USAGE
    except ConfigError as exc:
        print(f"responses-bridge: {exc}", file=sys.stderr)
        return Exit.CONFIG
    except (StoreError, MigrationError) as exc:
        print(f"responses-bridge: database: {exc}", file=sys.stderr)
        return Exit.STORE
