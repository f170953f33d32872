"""`responses-bridge migrate` and `responses-bridge sessions ...`: the store at a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bridge.config import Config
from bridge.config_env import store_path
from bridge.exit_codes import Exit
from bridge.store import ResponseRow, StoreError
from bridge.store.backends import open_store, uses_postgres
from bridge.store.files import backup_database, check_database, migrate_file
from bridge.store.protocol import Opening, Store


def add_commands(commands: Any, config_help: str, config_option: Callable[..., None]) -> None:
    """Register `migrate` and `sessions` on the top-level subparsers."""
    migrate = commands.add_parser("migrate", help="create or upgrade the database and exit")
    config_option(migrate, config_help)
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing: report the schema version, what migrating would do, and check "
        "every page and index (exit 4 if the database is damaged or newer than this "
        "version can use)",
    )
    migrate.add_argument(
        "--backup",
        metavar="PATH",
        help="SQLite: first write a consistent copy of the database to PATH (safe while a "
        "bridge runs on it)",
    )

    sessions = commands.add_parser("sessions", help="inspect and manage stored responses")
    config_option(sessions, config_help)
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest stored responses")
    config_option(listing, config_help, nested=True)
    listing.add_argument("--limit", type=int, default=30, help="how many (default 30)")
    listing.add_argument("--session", metavar="ID", help="only this client session id")
    listing.add_argument("--thread", metavar="ID", help="only this client thread id")
    for name, text in (
        ("show", "one response: its input and output, readably"),
        ("export", "one response as JSON (request, input items, response)"),
        ("delete", "delete one response and its reasoning"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("id", metavar="ID", help="a response id (resp_...)")
        config_option(action, config_help, nested=True)
        if name == "show":
            action.add_argument(
                "--full", action="store_true", help="every text whole (default: long ones cut)"
            )
    prune = actions.add_parser("prune", help="apply [store] max_age_days and max_size_mb now")
    config_option(prune, config_help, nested=True)


def missing_database(path: Path) -> StoreError:
    """What to say when a command that only reads finds no database."""
    return StoreError(
        f"no database at {path}. This command never creates one (`serve` and `migrate` do). "
        "If the service keeps its database elsewhere, point this command at it: use the "
        "config the service uses, set [store] path to an absolute path there, or run it with "
        "STATE_DIRECTORY set as the service has it (the system unit: "
        "STATE_DIRECTORY=/var/lib/responses-bridge)."
    )


def run_migrate(
    config: Config, path: Path, *, check: bool = False, backup: Path | None = None
) -> int:
    if check:
        if not path.exists():
            raise missing_database(path)
        return _check(path)
    if backup is not None:
        if not path.exists():
            raise missing_database(path)
        backup_database(path, backup)
        print(f"{path}: copied to {backup}")
    version = migrate_file(path)
    print(f"{path}: schema version {version}")
    return Exit.OK


def _check(path: Path) -> int:
    """`migrate --check`: what the database is, without writing to it."""
    report = check_database(path)
    state = report.state
    if state.newer and not state.usable:
        print(f"{path}: {state.too_new()}", file=sys.stderr)
        return Exit.STORE
    if report.problem is not None:
        print(f"{path}: the database is corrupt: {report.problem}", file=sys.stderr)
        return Exit.STORE
    print(f"{path}: schema version {state.version} ({report.plan}); integrity ok")
    return Exit.OK


def run_sessions(args: argparse.Namespace, config: Config, environ: Mapping[str, str]) -> int:
    if not uses_postgres(config):
        path = store_path(config, environ)
        if not path.exists():
            raise missing_database(path)
    return asyncio.run(_run_sessions(args, config, environ))


async def _run_sessions(
    args: argparse.Namespace, config: Config, environ: Mapping[str, str]
) -> int:
    # Only the commands that write wait for the integrity check (and refuse a damaged file);
    # the others open the database read-only. None migrates (SchemaTooOld says to).
    writes = args.action in ("delete", "prune")
    opening = Opening.WRITE if writes else Opening.READ
    store = await open_store(config, environ, opening=opening, check=writes)
    print(f"# database: {store.label} (schema version {store.schema_version})", file=sys.stderr)
    try:
        match args.action:
            case "list":
                return await _list(store, args)
            case "show":
                return await _show(store, args.id, full=args.full)
            case "export":
                return await _export(store, args.id)
            case "delete":
                return await _delete(store, args.id)
            case _:
                return await _prune(store, config)
    finally:
        await store.close()


def _when(timestamp: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def _row_line(row: ResponseRow) -> str:
    tokens = f"{row.input_tokens}+{row.output_tokens}"
    stored = "" if row.stored else " (store:false)"
    # Codex's warm-ups (generate: false) asked no provider: told apart from real turns.
    status = "warm-up" if row.warm_up else row.status
    return (
        f"{_when(row.created_at)}  {row.id}  {row.model:<20} {status:<10} "
        f"{tokens:>13}  {row.session_id or '-'}{stored}"
    )


async def _list(store: Store, args: argparse.Namespace) -> int:
    rows = await store.list_responses(
        limit=args.limit, session_id=args.session, thread_id=args.thread
    )
    print(f"{'time':<19}  {'id':<37}  {'model':<20} {'status':<10} {'tokens in+out':>13}  session")
    for row in rows:
        print(_row_line(row))
    return Exit.OK


async def _show(store: Store, response_id: str, *, full: bool = False) -> int:
    """A response as a transcript: its summary, then each input and output item."""
    stored = await store.export(response_id)
    if stored is None:
        return _not_found(response_id)
    response = stored["response"]
    usage = response.get("usage") or {}
    limit = None if full else SHOW_LIMIT
    print(f"response   {response['id']}")
    print(f"created    {_when(response['created_at'])}")
    print(f"model      {response['model']}")
    print(f"status     {response['status']}")
    print(f"tokens     {_tokens(usage)}")
    if response.get("previous_response_id"):
        print(f"previous   {response['previous_response_id']}")
    conversation = response.get("conversation")
    if isinstance(conversation, dict) and conversation.get("id"):
        print(f"conversation {conversation['id']}")
    if response.get("error"):
        print(f"error      {response['error'].get('code')}: {response['error'].get('message')}")
    if not stored["stored"]:
        print("\n(store: false: only this summary and the reasoning index are kept)")
        return Exit.OK
    if response.get("instructions"):
        print("\n== instructions")
        print(_indented(str(response["instructions"]), limit))
    print("\n== input")
    for item in stored["input_items"]:
        print(_describe(item, limit))
    print("\n== output")
    for item in response.get("output", []):
        print(_describe(item, limit))
    return Exit.OK


# Characters of one text shown without --full.
SHOW_LIMIT = 2000


def _tokens(usage: dict[str, Any]) -> str:
    text = f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out"
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens")
    extra = []
    if cached:
        extra.append(f"{cached} cached")
    if reasoning:
        extra.append(f"{reasoning} reasoning")
    return f"{text} ({', '.join(extra)})" if extra else text


def _describe(item: dict[str, Any], limit: int | None = SHOW_LIMIT) -> str:
    """One item: a heading line, then its text indented."""
    kind = item.get("type", "message")
    if kind == "message":
        content = _parts_text(item.get("content"))
        return f"{item.get('role')}:\n{_indented(str(content or ''), limit)}"
    if kind == "reasoning":
        text = "".join(part.get("text", "") for part in item.get("content") or [])
        if not text:
            text = "".join(part.get("text", "") for part in item.get("summary") or [])
        return f"reasoning:\n{_indented(text, limit)}"
    if kind in ("function_call", "custom_tool_call"):
        args = item.get("arguments", item.get("input", ""))
        namespace = f"{item['namespace']}." if item.get("namespace") else ""
        name = f"{namespace}{item.get('name')}"
        return f"call {name} ({item.get('call_id')}):\n{_indented(str(args), limit)}"
    if kind.endswith("_output"):
        output = _parts_text(item.get("output"))
        return f"output of {item.get('call_id')}:\n{_indented(str(output), limit)}"
    return f"[{kind}]"


def _parts_text(value: Any) -> Any:
    """A message's content or a tool's output: its parts as lines (a part without text as
    its [type]); anything else as it is."""
    if not isinstance(value, list):
        return value
    return "\n".join(
        str(part.get("text", f"[{part.get('type')}]")) for part in value if isinstance(part, dict)
    )


def _indented(text: str, limit: int | None) -> str:
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"… [{len(text) - limit} more characters; --full shows all]"
    lines = text.splitlines() or [""]
    return "\n".join(f"    {line}" if line else "" for line in lines)


async def _export(store: Store, response_id: str) -> int:
    stored = await store.export(response_id)
    if stored is None:
        return _not_found(response_id)
    json.dump(stored, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return Exit.OK


async def _delete(store: Store, response_id: str) -> int:
    if not await store.delete_response(response_id):
        return _not_found(response_id)
    print(f"deleted {response_id}")
    return Exit.OK


async def _prune(store: Store, config: Config) -> int:
    deleted = await store.prune(
        max_age_days=config.store.max_age_days, max_size_mb=config.store.max_size_mb
    )
    print(f"pruned {deleted} responses")
    return Exit.OK


def _not_found(response_id: str) -> int:
    print(f"responses-bridge: no stored response {response_id}", file=sys.stderr)
    return Exit.NOT_FOUND
