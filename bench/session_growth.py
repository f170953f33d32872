"""Session growth: a 200-turn Codex-shaped session, its per-turn cost and the database it leaves.

    python bench/session_growth.py [--turns 200] [--baseline REF] [--modes false,true]
        [--repeat N] [--first-token-delay SECONDS]

Plays Codex against the bridge: every request replays the whole conversation (the developer
and user messages of a real Codex request, then every reasoning item, two parallel
exec_command calls per turn and their 5-20 KB outputs), with Codex's headers and
`store: false`, then again with `store: true`. The fake upstream runs in this process, so
one clock measures, per turn:

- pre: from the client starting its request to the upstream holding the whole upstream body;
- post: from the upstream's last byte (the end of its body) to the client parsing the final
  event (response.completed), which includes the store's write;
- the database and WAL size after the turn.

The bridge runs as its own process (`python -m bridge serve`). With --baseline REF the same
session also runs against that commit of this repository (exported with `git archive`), in
the same run, so the two are compared on equal terms. Writes bench/SESSION_RESULTS.md and
bench/session_growth.svg. Loopback only; every loop is bounded by the turn count and timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from processes import bridge_config as bench_config
from processes import bridge_env, export

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
FIXTURE = REPO / "tests" / "fixtures" / "codex-0.169.0" / "tool-turn-1.request.json"
SESSION = "01a2115e-0cd3-7283-832b-000000000bench"
TURN_TIMEOUT = 60.0
# Every this many turns the model answers in text and the user asks for more.
TEXT_EVERY = 20
EARLY = range(0, 25)  # turns 1-25
LATE = range(175, 200)  # turns 176-200


def frame(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return frame({"id": "bench", "object": "chat.completion.chunk", "choices": [choice]})


def reply_frames(turn: int, rng: random.Random) -> list[bytes]:
    """The upstream's answer for a turn: reasoning, then two parallel calls (or text)."""
    words = ["inspect", "the", "module", "then", "patch", "tests", "again", "carefully"]
    reasoning = " ".join(rng.choice(words) for _ in range(90))
    frames = [chunk({"role": "assistant", "reasoning_content": ""})]
    frames += [chunk({"reasoning_content": reasoning[i : i + 40]}) for i in range(0, 600, 40)]
    if turn % TEXT_EVERY == TEXT_EVERY - 1:
        text = " ".join(rng.choice(words) for _ in range(60))
        frames += [chunk({"content": text[i : i + 30]}) for i in range(0, len(text), 30)]
        finish = "stop"
    else:
        for index in range(2):
            call_id = f"call_t{turn}_{index}"
            args = json.dumps({"cmd": f"sed -n 1,{rng.randint(50, 400)}p src/file_{turn}.py"})
            frames.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": "exec_command", "arguments": ""},
                            }
                        ]
                    }
                )
            )
            frames.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": args}}]})
            )
        finish = "tool_calls"
    frames.append(chunk({}, finish))
    usage = {"prompt_tokens": 1000 + turn * 3000, "completion_tokens": 300, "total_tokens": 0}
    frames.append(
        frame({"id": "bench", "object": "chat.completion.chunk", "choices": [], "usage": usage})
    )
    frames.append(b"data: [DONE]\n\n")
    return frames


@dataclass
class Upstream:
    """The fake provider: answers the turn it is told to, notes when things happened."""

    frames: list[bytes] = field(default_factory=list)
    # Seconds between having the body and the first byte of the answer (a provider's time to
    # first token); 0: at once.
    first_token_delay: float = 0.0
    body_received: float = 0.0
    last_byte: float = 0.0
    body_bytes: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.body_received = time.monotonic()
        self.body_bytes = len(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        for data in self.frames:
            await response.write(data)
        await response.write_eof()
        self.last_byte = time.monotonic()
        return response


@dataclass
class Turn:
    pre_ms: float
    post_ms: float
    db_bytes: int
    body_bytes: int


def tool_output(rng: random.Random) -> str:
    size = rng.randint(5_000, 20_000)
    line = "    result = compute(value, options)  # line of a source file\n"
    return (line * (size // len(line) + 1))[:size] + f"\n# {rng.random()}"


def initial_input() -> tuple[list[dict[str, Any]], list[Any]]:
    """The developer and user messages and the tools of a real Codex first request."""
    body = json.loads(FIXTURE.read_text())["body"]
    messages = [item for item in body["input"] if item.get("type", "message") == "message"]
    return messages[:3], body["tools"]


def db_size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        candidate = Path(str(path) + suffix)
        if candidate.exists():
            total += candidate.stat().st_size
    return total


async def read_final(response: aiohttp.ClientResponse) -> tuple[float, dict[str, Any]]:
    """Read SSE until the final event; its arrival time and the response object."""
    buffer = b""
    async for data in response.content.iter_any():
        buffer += data
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                payload = orjson.loads(line[6:])
                kind = payload.get("type")
                if kind in ("response.completed", "response.failed", "response.incomplete"):
                    arrived = time.monotonic()
                    if kind != "response.completed":
                        raise RuntimeError(f"turn ended {kind}: {payload['response'].get('error')}")
                    return arrived, payload["response"]
    raise RuntimeError("the stream ended without a final event")


async def play_session(
    base_url: str, upstream: Upstream, db: Path, turns: int, store: bool
) -> list[Turn]:
    rng = random.Random(20261126)
    history, tools = initial_input()
    headers = {
        "session-id": SESSION,
        "thread-id": SESSION,
        "x-client-request-id": SESSION,
        "originator": "codex_exec",
        "Content-Type": "application/json",
        "Authorization": "Bearer bench",
    }
    results: list[Turn] = []
    timeout = aiohttp.ClientTimeout(total=TURN_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for turn in range(turns):
            upstream.frames = reply_frames(turn, rng)
            body = orjson.dumps(
                {
                    "model": "bench",
                    "stream": True,
                    "input": history,
                    "tools": tools,
                    "tool_choice": "auto",
                    "parallel_tool_calls": True,
                    "reasoning": {"summary": "auto"},
                    "store": store,
                    "include": ["reasoning.encrypted_content"],
                    "prompt_cache_key": SESSION,
                }
            )
            started = time.monotonic()
            async with session.post(f"{base_url}/v1/responses", data=body, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"turn {turn + 1}: HTTP {r.status}: {await r.text()}")
                final_at, response = await read_final(r)
            results.append(
                Turn(
                    pre_ms=(upstream.body_received - started) * 1000,
                    post_ms=(final_at - upstream.last_byte) * 1000,
                    db_bytes=db_size(db),
                    body_bytes=upstream.body_bytes,
                )
            )
            # Codex replays each output item as it received it, then the tool outputs.
            calls = []
            for item in response["output"]:
                history.append(item)
                if item["type"] == "function_call":
                    calls.append(item["call_id"])
            for call_id in calls:
                history.append(
                    {"type": "function_call_output", "call_id": call_id, "output": tool_output(rng)}
                )
            if not calls:
                history.append(
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": f"Go on with step {turn}."}],
                    }
                )
    return results


def bridge_config(directory: Path, upstream: str) -> tuple[Path, Path]:
    """The benchmarks' bridge config (bench/processes.py) in `directory`, and its database."""
    return bench_config(directory, upstream), directory / "bench.db"


async def wait_until_up(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {seconds:g}s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_one(source: Path, turns: int, store: bool, delay: float) -> list[Turn]:
    upstream = Upstream(first_token_delay=delay)
    app = web.Application(client_max_size=512 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", upstream.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    up_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", up_port).start()
    with tempfile.TemporaryDirectory() as scratch:
        config, db = bridge_config(Path(scratch), f"http://127.0.0.1:{up_port}")
        port = free_port()
        bridge = await asyncio.create_subprocess_exec(
            *[PYTHON, "-m", "bridge", "serve", "--config", str(config), "--port", str(port)],
            cwd=source,
            env={**os.environ, **bridge_env(Path(scratch)), "PYTHONPATH": str(source)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_until_up(f"http://127.0.0.1:{port}/healthz")
            return await play_session(f"http://127.0.0.1:{port}", upstream, db, turns, store)
        finally:
            bridge.terminate()
            try:
                await asyncio.wait_for(bridge.wait(), 30)
            except TimeoutError:
                bridge.kill()
                await bridge.wait()
            await runner.cleanup()


def combine(results: list[list[Turn]]) -> list[Turn]:
    """Per turn, the median time over repeated sessions (sizes from the last one)."""
    return [
        Turn(
            pre_ms=statistics.median(turn.pre_ms for turn in same),
            post_ms=statistics.median(turn.post_ms for turn in same),
            db_bytes=same[-1].db_bytes,
            body_bytes=same[-1].body_bytes,
        )
        for same in zip(*results, strict=True)
    ]


def median_of(turns: list[Turn], window: range, attr: str) -> float:
    values = [getattr(turns[i], attr) for i in window if i < len(turns)]
    return statistics.median(values) if values else float("nan")


def write_plot(runs: dict[str, list[Turn]], path: Path) -> None:
    """Bridge time per turn (pre + post) against the turn number, one line per run."""
    width, height, left, right, top_pad, bottom = 760, 420, 70, 230, 30, 50
    top = max(t.pre_ms + t.post_ms for turns in runs.values() for t in turns) * 1.1
    count = max(len(turns) for turns in runs.values())
    colors = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]

    def x(i: int) -> float:
        return left + i * (width - left - right) / max(1, count - 1)

    def y(v: float) -> float:
        return height - bottom - v / top * (height - top_pad - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="black"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" '
        'text-anchor="middle">turn</text>',
        f'<text x="16" y="{height / 2}" transform="rotate(-90 16 {height / 2})" '
        'text-anchor="middle">bridge ms per turn (pre + post)</text>',
    ]
    for step in range(5):
        value = top * step / 4
        parts.append(
            f'<text x="{left - 8}" y="{y(value) + 4}" text-anchor="end">{value:.0f}</text>'
        )
    for turn in (1, count // 2, count):
        parts.append(
            f'<text x="{x(turn - 1)}" y="{height - bottom + 16}" text-anchor="middle">{turn}</text>'
        )
    for index, (name, turns) in enumerate(runs.items()):
        color = colors[index % len(colors)]
        points = " ".join(f"{x(i):.1f},{y(t.pre_ms + t.post_ms):.1f}" for i, t in enumerate(turns))
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>'
        )
        parts.append(
            f'<text x="{width - right + 10}" y="{top_pad + 10 + 18 * index}" fill="{color}">'
            f"{name}</text>"
        )
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def write_results(
    runs: dict[str, list[Turn]], baseline: str | None, turns: int, repeat: int, delay: float
) -> list[str]:
    lines = [
        "# Session growth",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores "
        f"({platform.machine()}, {platform.system()} {platform.release()}), Python "
        f"{platform.python_version()}: `bench/session_growth.py --turns {turns}"
        + (f" --baseline {baseline}" if baseline else "")
        + (f" --repeat {repeat}" if repeat > 1 else "")
        + (f" --first-token-delay {delay:g}" if delay else "")
        + "`. Medians in ms"
        + (f" (each turn's time the median of {repeat} sessions)." if repeat > 1 else ".")
        + (
            f" The upstream waits {delay * 1000:g} ms after the body before it answers."
            if delay
            else " The upstream answers as soon as it has the body."
        ),
        "",
        "| run | pre 1-25 | pre 176-200 | post 1-25 | post 176-200 | last body MB "
        "| database + WAL MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in runs.items():
        lines.append(
            f"| {name} | {median_of(result, EARLY, 'pre_ms'):.1f} "
            f"| {median_of(result, LATE, 'pre_ms'):.1f} "
            f"| {median_of(result, EARLY, 'post_ms'):.1f} "
            f"| {median_of(result, LATE, 'post_ms'):.1f} "
            f"| {result[-1].body_bytes / 1e6:.2f} | {result[-1].db_bytes / 1e6:.1f} |"
        )
    lines.append("")
    checks = targets(runs)
    if checks:
        lines += ["## Targets", ""]
        lines += [f"- {check}" for check in checks]
        lines.append("")
    lines += ["![bridge time per turn](session_growth.svg)", ""]
    (BENCH / "SESSION_RESULTS.md").write_text("\n".join(lines))
    return lines


def targets(runs: dict[str, list[Turn]]) -> list[str]:
    """The issue's targets, each with what was measured and whether it is met."""
    checks = []
    for mode, limit in (("false", 10e6), ("true", 25e6)):
        current = runs.get(f"current store:{mode}")
        if current:
            size = current[-1].db_bytes
            verdict = "met" if size <= limit else "NOT met"
            checks.append(
                f"database after the store:{mode} session <= {limit / 1e6:.0f} MB: "
                f"{size / 1e6:.1f} MB ({verdict})"
            )
        base = runs.get(f"baseline store:{mode}")
        if current and base:
            post_now = median_of(current, LATE, "post_ms")
            post_then = median_of(base, LATE, "post_ms")
            verdict = "met" if post_now * 10 <= post_then else "NOT met"
            checks.append(
                f"store:{mode} post-upstream at turns 176-200 at least 10x lower than the "
                f"baseline: {post_now:.1f} against {post_then:.1f} ms, "
                f"{post_then / post_now:.1f}x ({verdict})"
            )
            pre_now = median_of(current, LATE, "pre_ms")
            pre_then = median_of(base, LATE, "pre_ms")
            verdict = "met" if pre_now <= pre_then else "NOT met"
            checks.append(
                f"store:{mode} pre-upstream at turns 176-200 no higher than the baseline: "
                f"{pre_now:.1f} against {pre_then:.1f} ms ({verdict})"
            )
    return checks


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--baseline", help="a git ref of this repository to compare against")
    parser.add_argument("--modes", default="false,true", help="store modes to play")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="play every session this many times, interleaved; each turn's time is the "
        "median over the repeats (this shared machine varies by 10-25 %% from run to run)",
    )
    parser.add_argument(
        "--first-token-delay",
        type=float,
        default=0.0,
        help="seconds the upstream waits after the body before answering (default 0: at "
        "once; a real provider takes far longer over a 5 MB prompt, and work the bridge "
        "does meanwhile then costs the turn nothing)",
    )
    args = parser.parse_args()
    modes = [mode == "true" for mode in args.modes.split(",")]
    played: dict[str, list[list[Turn]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        sources = {"current": REPO}
        if args.baseline:
            sources = {"baseline": export(args.baseline, Path(scratch) / "baseline"), **sources}
        for repeat in range(args.repeat):
            for store in modes:
                for name, source in sources.items():
                    label = f"{name} store:{'true' if store else 'false'}"
                    print(f"playing {args.turns} turns: {label} ({repeat + 1})", flush=True)
                    played.setdefault(label, []).append(
                        await run_one(source, args.turns, store, args.first_token_delay)
                    )
    runs = {label: combine(results) for label, results in played.items()}
    write_plot(runs, BENCH / "session_growth.svg")
    for line in write_results(runs, args.baseline, args.turns, args.repeat, args.first_token_delay):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
