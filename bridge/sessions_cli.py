"""`responses-bridge migrate` and `responses-bridge sessions ...`: the store at a terminal."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from bridge.config import Config
from bridge.store import ResponseRow, Store, StoreError, open_and_migrate
from bridge.store.files import check_database

EXIT_OK = 0
EXIT_STORE = 4  # bridge.cli.EXIT_STORE: the database is damaged, newer, or cannot be opened
EXIT_NOT_FOUND = 5


def add_commands(commands: Any, config_help: str) -> None:
    """Register `migrate` and `sessions` on the top-level subparsers."""
    migrate = commands.add_parser("migrate", help="create or upgrade the database and exit")
    migrate.add_argument("--config", required=True, metavar="PATH", help=config_help)
    migrate.add_argument(
        "--check",
        action="store_true",
        help="change nothing: report the schema version and check every page and index "
        "(exit 4 if the database is damaged or newer than this version)",
    )

    sessions = commands.add_parser("sessions", help="inspect and manage stored responses")
    sessions.add_argument("--config", required=True, metavar="PATH", help=config_help)
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the newest stored responses")
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
    actions.add_parser("prune", help="apply [store] max_age_days and max_size_mb now")


def run_migrate(config: Config, path: Path, *, check: bool = False) -> int:
    if check:
        return _check(path)
    try:
        version = open_and_migrate(path)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: {exc}") from exc
    print(f"{path}: schema version {version}")
    return EXIT_OK


def _check(path: Path) -> int:
    """`migrate --check`: what the database is, without writing to it."""
    try:
        report = check_database(path)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: {exc}") from exc
    if report.version > report.latest:
        print(
            f"{path}: schema version {report.version} is newer than this responses-bridge "
            f"knows (up to {report.latest})",
            file=sys.stderr,
        )
        return EXIT_STORE
    if report.problem is not None:
        print(f"{path}: the database is corrupt: {report.problem}", file=sys.stderr)
        return EXIT_STORE
    pending = report.latest - report.version
    state = "up to date" if not pending else f"{pending} migration(s) to apply with `migrate`"
    print(f"{path}: schema version {report.version} ({state}); integrity ok")
    return EXIT_OK


def run_sessions(args: argparse.Namespace, config: Config, path: Path) -> int:
    return asyncio.run(_run_sessions(args, config, path))


async def _run_sessions(args: argparse.Namespace, config: Config, path: Path) -> int:
    # Only the commands that write wait for the integrity check (and refuse a damaged file).
    writes = args.action in ("delete", "prune")
    store = await Store.open(path, config.store.synchronous, check=writes)
    try:
        match args.action:
            case "list":
                return await _list(store, args)
            case "show":
                return await _show(store, args.id)
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
    return (
        f"{_when(row.created_at)}  {row.id}  {row.model:<20} {row.status:<10} "
        f"{tokens:>13}  {row.session_id or '-'}{stored}"
    )


async def _list(store: Store, args: argparse.Namespace) -> int:
    rows = await store.list_responses(
        limit=args.limit, session_id=args.session, thread_id=args.thread
    )
    print(f"{'time':<19}  {'id':<37}  {'model':<20} {'status':<10} {'tokens in+out':>13}  session")
    for row in rows:
        print(_row_line(row))
    return EXIT_OK


async def _show(store: Store, response_id: str) -> int:
    stored = await store.export(response_id)
    if stored is None:
        return _not_found(response_id)
    response = stored["response"]
    usage = response.get("usage") or {}
    print(f"id:        {response['id']}")
    print(f"created:   {_when(response['created_at'])}")
    print(f"model:     {response['model']}")
    print(f"status:    {response['status']}")
    print(f"tokens:    {usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out")
    if response.get("previous_response_id"):
        print(f"previous:  {response['previous_response_id']}")
    if response.get("error"):
        print(f"error:     {response['error'].get('code')}: {response['error'].get('message')}")
    if not stored["stored"]:
        print("\n(store: false: only this summary and the reasoning index are kept)")
        return EXIT_OK
    print("\n-- input")
    for item in stored["input_items"]:
        print(_describe(item))
    print("\n-- output")
    for item in response.get("output", []):
        print(_describe(item))
    return EXIT_OK


def _describe(item: dict[str, Any]) -> str:
    """One item as one or a few readable lines."""
    kind = item.get("type", "message")
    if kind == "message":
        content = item.get("content")
        if isinstance(content, list):
            content = " ".join(str(part.get("text", f"[{part.get('type')}]")) for part in content)
        return f"[{item.get('role')}] {_clip(str(content))}"
    if kind == "reasoning":
        text = "".join(part.get("text", "") for part in item.get("content") or [])
        return f"[reasoning] {_clip(text)}"
    if kind in ("function_call", "custom_tool_call"):
        args = item.get("arguments", item.get("input", ""))
        namespace = f"{item['namespace']}." if item.get("namespace") else ""
        return f"[call {item.get('call_id')}] {namespace}{item.get('name')}({_clip(str(args))})"
    if kind.endswith("_output"):
        return f"[output {item.get('call_id')}] {_clip(str(item.get('output')))}"
    return f"[{kind}]"


def _clip(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def _export(store: Store, response_id: str) -> int:
    stored = await store.export(response_id)
    if stored is None:
        return _not_found(response_id)
    json.dump(stored, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return EXIT_OK


async def _delete(store: Store, response_id: str) -> int:
    if not await store.delete_response(response_id):
        return _not_found(response_id)
    print(f"deleted {response_id}")
    return EXIT_OK


async def _prune(store: Store, config: Config) -> int:
    deleted = await store.prune(
        max_age_days=config.store.max_age_days, max_size_mb=config.store.max_size_mb
    )
    print(f"pruned {deleted} responses")
    return EXIT_OK


def _not_found(response_id: str) -> int:
    print(f"responses-bridge: no stored response {response_id}", file=sys.stderr)
    return EXIT_NOT_FOUND
