"""The bridge under very large inputs: its peak memory, and how long /healthz waits meanwhile.

    python bench/large_inputs.py [CASE ...]        # all cases by default

Each case starts a fresh `responses-bridge serve` (so its peak RSS, /proc VmHWM, is the
case's own) in front of a fake upstream process, sends the case's requests, and meanwhile a
third process asks GET /healthz every 20 ms and keeps the longest answer time: the event
loop's worst stall as a client sees it. Prints one Markdown table row per case. Targets
(issue 22): worst /healthz under 1 s for every body up to the size limit.

Cases: tools_100k, tools_250k (function tools, 24 and 60 MB), items_1_8m (1.8M input
items, 61 MB), tools_1999_8mb and items_19999_8mb (just under the counts and the size past
which a request's work goes to threads: the most translated on the loop), bodies_12x63mb
(12 bodies of 63 MB at once), background_52mb (a background response with 52 MB of
reasoning), endless_arguments (an upstream that never ends a tool call's arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_stats import peak_rss_mib
from processes import PYTHON, REPO, free_port, wait_until_up

MIB = 1024 * 1024
WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "as",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "or",
    "from",
    "at",
    "which",
    "but",
    "not",
    "have",
    "an",
    "they",
    "we",
    "you",
    "he",
    "she",
    "their",
    "there",
    "one",
    "all",
    "would",
    "if",
    "will",
    "can",
    "so",
    "what",
    "about",
    "check",
    "file",
    "test",
    "value",
    "error",
    "return",
    "function",
    "call",
    "list",
    "item",
    "output",
    "input",
    "model",
    "token",
    "reason",
    "step",
    "next",
    "first",
    "then",
    "because",
    "maybe",
    "should",
    "could",
    "result",
    "case",
    "path",
    "line",
    "code",
]
TIMEOUT = aiohttp.ClientTimeout(total=600)
POLL_SECONDS = 0.02
# How long the endless upstream is let run against a bridge that does not stop it.
ENDLESS_SECONDS = 30.0

# -- the fake upstream (its own process) -----------------------------------------------


def _frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + orjson.dumps({"id": "b", "choices": [choice]}) + b"\n\n"


def upstream_app(mode: str) -> web.Application:
    """short: a few words; reasoning52: 52 MB of reasoning in 4 KB pieces, then a word;
    endless: a tool call whose arguments never end (until the bridge closes the stream)."""

    async def completions(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            if mode == "reasoning52":
                # Words in a random order: text compresses about as much as real reasoning.
                rng = random.Random(52)
                for _ in range(52 * MIB // 4096):
                    text = " ".join(rng.choices(WORDS, k=700))[:4096]
                    await response.write(_frame({"reasoning_content": text}))
            elif mode == "endless":
                call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}
                await response.write(_frame({"tool_calls": [call]}))
                more = _frame({"tool_calls": [{"index": 0, "function": {"arguments": "x" * 4096}}]})
                while True:
                    await response.write(more * 16)
            await response.write(_frame({"content": "done"}))
            await response.write(_frame({}, "stop") + b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response

    app = web.Application(client_max_size=1024 * MIB)
    app.router.add_post("/v1/chat/completions", completions)
    return app


# -- the /healthz poller (its own process) ---------------------------------------------


def poll(port: int) -> None:
    """GET /healthz every POLL_SECONDS until stdin closes; prints the worst answer time."""
    worst = 0.0
    count = 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not select.select([sys.stdin], [], [], POLL_SECONDS)[0]:
        started = time.perf_counter()
        try:
            connection.request("GET", "/healthz")
            connection.getresponse().read()
        except (OSError, http.client.HTTPException):
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        worst = max(worst, time.perf_counter() - started)
        count += 1
    print(f"{worst * 1000:.0f} {count}", flush=True)


# -- the cases -----------------------------------------------------------------------


def tools_body(count: int) -> bytes:
    tool = {
        "type": "function",
        "name": "",
        "description": "A tool the model may call with a path and some options.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "mode": {"type": "string"}},
        },
    }
    tools = [{**tool, "name": f"tool_{n}"} for n in range(count)]
    return orjson.dumps({"model": "bench", "input": "hi", "tools": tools})


def wide_tools_body(count: int, size: int) -> bytes:
    """`count` function tools of about `size` bytes each (a long description)."""
    tool = {
        "type": "function",
        "name": "",
        "description": "d" * size,
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
    tools = [{**tool, "name": f"tool_{n}"} for n in range(count)]
    return orjson.dumps({"model": "bench", "input": "hi", "tools": tools})


def items_body(count: int) -> bytes:
    items = [{"role": "user", "content": "hi"}] * count
    return orjson.dumps({"model": "bench", "input": items})


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, bytes]:
    async with session.post(
        f"{url}/v1/responses", data=body, headers={"Content-Type": "application/json"}
    ) as response:
        return response.status, await response.read()


async def one_body(url: str, body: bytes) -> str:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        status, data = await post(session, url, body)
    if status != 200:
        return f"HTTP {status}: {data[:200]!r}"
    return f"{orjson.loads(data)['status']}, body {len(body) / MIB:.0f} MiB"


async def many_bodies(url: str, body: bytes, count: int) -> str:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        results = await asyncio.gather(*(post(session, url, body) for _ in range(count)))
    statuses = [status for status, _ in results]
    return f"{statuses.count(200)} answered, {statuses.count(503)} refused 503 (try again)"


async def background(url: str, database: Path) -> str:
    body = orjson.dumps({"model": "bench", "input": "think", "background": True})
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        _, data = await post(session, url, body)
        response_id = orjson.loads(data)["id"]
        while True:
            async with session.get(f"{url}/v1/responses/{response_id}") as response:
                state = orjson.loads(await response.read())["status"]
            if state not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.2)
    row = None
    for _ in range(600):  # the events are stored (compressed) just after the end
        with sqlite3.connect(database) as db:
            row = db.execute(
                "SELECT length(frames) FROM response_events WHERE response_id = ?",
                (response_id,),
            ).fetchone()
        if row:
            break
        await asyncio.sleep(0.1)
    stored = f"stored events {row[0] / MIB:.1f} MiB" if row else "events not stored"
    return f"{state}, {stored}"


async def endless(url: str) -> str:
    started = time.monotonic()
    body = orjson.dumps({"model": "bench", "input": "go"})
    timeout = aiohttp.ClientTimeout(total=ENDLESS_SECONDS)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            _, data = await post(session, url, body)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return f"no answer after {time.monotonic() - started:.0f}s ({type(exc).__name__})"
    error = orjson.loads(data).get("error") or {}
    return f"ended in {time.monotonic() - started:.1f}s: {error.get('message', '')[:60]}"


Case = Callable[[str, Path], Awaitable[str]]
# Each case: the upstream's mode, the bridge's extra config, and the case (made at start).
CASES: dict[str, tuple[str, str, Callable[[], Case]]] = {
    "tools_100k": ("short", "", lambda: _with(tools_body(100_000))),
    "tools_250k": ("short", "", lambda: _with(tools_body(250_000))),
    "items_1_8m": ("short", "", lambda: _with(items_body(1_800_000))),
    # Just under what sends a request's work to threads (8 MiB, 2,000 tools, 20,000 items):
    # the most that is translated on the loop itself.
    "tools_1999_8mb": ("short", "", lambda: _with(wide_tools_body(1_999, 4_000))),
    "items_19999_8mb": (
        "short",
        "",
        lambda: _with(
            orjson.dumps(
                {"model": "bench", "input": [{"role": "user", "content": "x" * 370}] * 19_999}
            )
        ),
    ),
    "bodies_12x63mb": (
        "short",
        "",
        lambda: _many(orjson.dumps({"model": "bench", "input": "x" * (63 * MIB - 100)}), 12),
    ),
    # The answer (52 MB) is past the default max_answer_bytes (32 MiB): raised for it.
    "background_52mb": (
        "reasoning52",
        "[upstream]\nmax_answer_bytes = 67108864\n",
        lambda: background,
    ),
    "endless_arguments": ("endless", "", lambda: lambda url, database: endless(url)),
}


def _with(body: bytes) -> Case:
    return lambda url, database: one_body(url, body)


def _many(body: bytes, count: int) -> Case:
    return lambda url, database: many_bodies(url, body, count)


def run_case(name: str) -> str:
    mode, extra, make = CASES[name]
    case = make()  # the body is built before anything starts
    up_port, port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        config = directory / "bench.toml"
        config.write_text(
            '[server]\nlog_level = "warning"\n'
            f'[store]\npath = "{directory / "bench.db"}"\nspool_dir = "{directory / "spool"}"\n'
            f'[providers.bench]\nbase_url = "http://127.0.0.1:{up_port}/v1"\n'
            '[models."bench"]\nprovider = "bench"\n' + extra
        )
        me = str(Path(__file__).resolve())
        upstream = subprocess.Popen([PYTHON, me, "--upstream", str(up_port), mode], cwd=REPO)
        bridge = subprocess.Popen(
            [PYTHON, "-m", "bridge", "serve", "--config", str(config), "--port", str(port)],
            cwd=REPO,
            env={**os.environ, "STATE_DIRECTORY": scratch},
        )
        poller = None
        try:
            wait_until_up(f"http://127.0.0.1:{port}/healthz")
            idle = peak_rss_mib(bridge.pid)
            poller = subprocess.Popen(
                [PYTHON, me, "--poll", str(port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.5)
            started = time.monotonic()
            outcome = asyncio.run(case(f"http://127.0.0.1:{port}", directory / "bench.db"))
            seconds = time.monotonic() - started
            peak = peak_rss_mib(bridge.pid)
            worst, count = poller.communicate("stop\n", timeout=120)[0].split()
        finally:
            for proc in (poller, bridge, upstream):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
    return (
        f"| {name} | {peak:.0f} MiB (idle {idle:.0f}) | {worst} ms ({count} polls) "
        f"| {seconds:.1f} s | {outcome} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help=f"default: all ({', '.join(CASES)})")
    parser.add_argument("--upstream", nargs=2, metavar=("PORT", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.upstream:
        port, mode = args.upstream
        web.run_app(upstream_app(mode), host="127.0.0.1", port=int(port), print=None)
        return 0
    if args.poll:
        poll(args.poll)
        return 0
    unknown = [name for name in args.cases if name not in CASES]
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)}")
    print("| case | bridge peak RSS | worst /healthz | time | outcome |")
    print("|---|---|---|---|---|")
    for name in args.cases or CASES:
        print(run_case(name), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
