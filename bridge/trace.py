"""`responses-bridge trace`: the turns a running bridge kept ([debug] keep_turns), read from
its GET /debug/turns and printed for a person (or as JSON).

    responses-bridge trace --config F          the turns kept, newest first
    responses-bridge trace --config F resp_1   one turn whole: the client's request, each
                                               upstream request, the raw upstream stream,
                                               the events sent
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from bridge.config import Config
from bridge.config_env import CLIENT_KEY_ENV, local_url
from bridge.exit_codes import Exit

TIMEOUT = 10.0
# Straight to the bridge: proxy variables are for the outside world.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def add_command(commands: Any, config_option: Callable[..., None]) -> None:
    trace = commands.add_parser(
        "trace", help="show the turns the running bridge kept ([debug] keep_turns)"
    )
    config_option(trace, "the running bridge's config.toml")
    trace.add_argument("id", nargs="?", metavar="ID", help="one turn, whole (a response id)")
    trace.add_argument("--url", help="the bridge's address (default: from the config)")
    trace.add_argument("--json", action="store_true", help="print the JSON as the bridge sends it")


def _fetch(url: str) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    key = os.environ.get(CLIENT_KEY_ENV)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with _OPENER.open(request, timeout=TIMEOUT) as response:
        return json.loads(response.read())


def run(args: argparse.Namespace, config: Config) -> int:
    base = (args.url or local_url(config)).rstrip("/")
    path = "/debug/turns" + (f"/{quote(args.id, safe='')}" if args.id else "")
    try:
        payload = _fetch(base + path)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        print(f"responses-bridge: {base}{path}: {exc.code}: {message}", file=sys.stderr)
        return Exit.UNREACHABLE
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(
            f"responses-bridge: cannot reach the bridge at {base}: {reason} (is it running? "
            "--url names another address)",
            file=sys.stderr,
        )
        return Exit.UNREACHABLE
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        if args.json:
            json.dump(payload, sys.stdout, indent=2, ensure_ascii=False)
            print()
        elif args.id:
            print_turn(payload)
        else:
            print_list(payload["data"])
    text = shown.getvalue()
    sys.stdout.write(for_terminal(text) if sys.stdout.isatty() else text)
    return Exit.OK


# What a terminal would act on rather than show: C0 and C1 control characters but line
# breaks and tabs (escape sequences begin with ESC, \x1b), and the bidirectional overrides.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def for_terminal(text: str) -> str:
    """`text` with what a terminal would act on escaped (\\x1b, \\u202e): a turn shows
    upstream bytes as they came, and a provider's (or a client's) escape sequences must not
    rewrite the screen of whoever reads it."""
    return _CONTROLS.sub(lambda found: _escaped(found.group()), text)


def _escaped(character: str) -> str:
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def print_list(turns: list[dict[str, Any]]) -> None:
    if not turns:
        print("no turns kept yet")
        return
    print(f"{'time':<19}  {'id':<37}  {'model':<20} {'via':<10} {'status':<11} attempts")
    for turn in turns:
        print(
            f"{_when(turn['started_at'])}  {turn['id']:<37}  {turn['model']:<20} "
            f"{turn['transport']:<10} {turn['status']:<11} {turn['attempts']}"
        )


def print_turn(turn: dict[str, Any]) -> None:
    print(
        f"== {turn['id']}  {_when(turn['started_at'])}  {turn['transport']}  {turn['model']} "
        f"via {turn['provider']}  {turn['status']}"
    )
    print("\n== client request")
    print(_pretty(turn["client_request"]))
    for number, upstream in enumerate(turn["upstream_requests"], 1):
        print(f"\n== upstream request {number}: POST {upstream['url']}")
        print(_pretty(upstream["body"]))
    print("\n== upstream stream (as received)")
    print(turn["upstream_stream"].rstrip("\n"))
    print("\n== events sent to the client")
    print(turn["events"].rstrip("\n"))


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
