"""A 200-turn Codex-shaped session over the WebSocket mode and over HTTP, in one run.

    python bench/websocket_session.py [--turns 200] [--repeat 3]

The session of bench/session_growth.py (Codex's developer and user messages, reasoning, two
parallel exec_command calls per turn with 5-20 KB outputs, `store: false`, Codex's headers),
played twice against one bridge process:

- over HTTP, as Codex without `supports_websockets`: every request replays everything;
- over one WebSocket, as Codex with it: a warm-up (`generate: false`) with the developer
  messages, then turns that carry only their new items and the previous response's id.

Per turn it measures the bridge's own time: from the client sending the turn to the fake
upstream (in this process, one clock) holding the whole upstream body, plus from the
upstream's last byte to the client parsing the final event. Targets: over the socket, turns
176-200 cost at most 2x turns 1-25, and at least 5x less than over HTTP at turns 176-200.
Writes bench/WEBSOCKET_RESULTS.md. Loopback only; every loop is bounded by the turn count
and timeouts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session_growth import (
    PYTHON,
    REPO,
    SESSION,
    TURN_TIMEOUT,
    Upstream,
    bridge_config,
    bridge_env,
    free_port,
    initial_input,
    read_final,
    reply_frames,
    tool_output,
    wait_until_up,
)

BENCH = Path(__file__).resolve().parent
HEADERS = {
    "session-id": SESSION,
    "thread-id": SESSION,
    "x-client-request-id": SESSION,
    "originator": "codex_exec",
    "Authorization": "Bearer bench",
}
FINAL = ("response.completed", "response.failed", "response.incomplete", "error")


class FastUpstream(asyncio.BufferedProtocol):
    """The fake provider as a bare asyncio protocol: it counts the request body into one
    large buffer as it arrives, then answers with the turn's frames in one write. (An
    aiohttp handler copying megabytes chunk by chunk costs milliseconds of its own, which
    is the upstream's time, not the bridge's; real providers read faster.)"""

    BUFFER = 4 * 1024 * 1024

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._buffer = bytearray(self.BUFFER)
        self._head = b""
        self._remaining: int | None = None  # body bytes still to come
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        data = memoryview(self._buffer)[:nbytes]
        while len(data):
            if self._remaining is None:
                self._head += bytes(data)
                data = memoryview(b"")
                if b"\r\n\r\n" not in self._head:
                    return
                head, rest = self._head.split(b"\r\n\r\n", 1)
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self._head, self._remaining = b"", length
                self._upstream.body_bytes = length
                data = memoryview(rest)
            taken = min(self._remaining, len(data))
            self._remaining -= taken
            data = data[taken:]
            if self._remaining == 0:
                self._answer()

    def _answer(self) -> None:
        upstream = self._upstream
        upstream.body_received = time.monotonic()
        body = b"".join(upstream.frames)
        assert self._transport is not None
        self._transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        upstream.last_byte = time.monotonic()
        self._remaining = None


@dataclass
class Turn:
    pre_ms: float
    post_ms: float
    sent_bytes: int

    @property
    def own_ms(self) -> float:
        return self.pre_ms + self.post_ms


def request_fields(tools: list[Any]) -> dict[str, Any]:
    return {
        "model": "bench",
        "stream": True,
        "tools": tools,
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning": {"summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": SESSION,
    }


def next_items(response: dict[str, Any], turn: int, rng: random.Random) -> list[Any]:
    """What Codex sends after a response: the calls' outputs, or the user's next message."""
    calls = [item["call_id"] for item in response["output"] if item["type"] == "function_call"]
    if calls:
        return [
            {"type": "function_call_output", "call_id": call, "output": tool_output(rng)}
            for call in calls
        ]
    text = f"Go on with step {turn}."
    return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]


async def over_http(url: str, upstream: Upstream, turns: int) -> list[Turn]:
    rng = random.Random(20261126)
    history, tools = initial_input()
    fields = request_fields(tools)
    results = []
    timeout = aiohttp.ClientTimeout(total=TURN_TIMEOUT)
    headers = {**HEADERS, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for turn in range(turns):
            upstream.frames = reply_frames(turn, rng)
            body = orjson.dumps({**fields, "input": history})
            started = time.monotonic()
            async with session.post(f"{url}/v1/responses", data=body, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"turn {turn + 1}: HTTP {r.status}: {await r.text()}")
                final_at, response = await read_final(r)
            results.append(
                Turn(
                    (upstream.body_received - started) * 1000,
                    (final_at - upstream.last_byte) * 1000,
                    len(body),
                )
            )
            history += response["output"]
            history += next_items(response, turn, rng)
    return results


async def socket_turn(
    ws: aiohttp.ClientWebSocketResponse, message: bytes
) -> tuple[float, dict[str, Any]]:
    await ws.send_str(message.decode())
    while True:
        received = await ws.receive(timeout=TURN_TIMEOUT)
        if received.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"the socket ended: {received.type} {received.extra}")
        event = orjson.loads(received.data)
        if event["type"] in FINAL:
            arrived = time.monotonic()
            if event["type"] != "response.completed":
                raise RuntimeError(f"turn ended {event['type']}: {event}")
            return arrived, event["response"]


async def over_socket(url: str, upstream: Upstream, turns: int) -> list[Turn]:
    rng = random.Random(20261126)
    history, tools = initial_input()
    fields = request_fields(tools)
    developer = [item for item in history if item.get("role") == "developer"]
    rest = [item for item in history if item.get("role") != "developer"]
    results = []
    timeout = aiohttp.ClientTimeout(total=TURN_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(f"{url}/v1/responses", headers=HEADERS, max_msg_size=0) as ws,
    ):
        warm = orjson.dumps(
            {"type": "response.create", **fields, "input": developer, "generate": False}
        )
        _, response = await socket_turn(ws, warm)
        previous, items = response["id"], rest
        for turn in range(turns):
            upstream.frames = reply_frames(turn, rng)
            message = orjson.dumps(
                {
                    "type": "response.create",
                    **fields,
                    "input": items,
                    "previous_response_id": previous,
                }
            )
            started = time.monotonic()
            final_at, response = await socket_turn(ws, message)
            results.append(
                Turn(
                    (upstream.body_received - started) * 1000,
                    (final_at - upstream.last_byte) * 1000,
                    len(message),
                )
            )
            previous, items = response["id"], next_items(response, turn, rng)
    return results


async def run(turns: int) -> dict[str, list[Turn]]:
    """Both sessions against one bridge process and one fake upstream."""
    upstream = Upstream()
    up_port = free_port()
    server = await asyncio.get_running_loop().create_server(
        lambda: FastUpstream(upstream), "127.0.0.1", up_port
    )
    with tempfile.TemporaryDirectory() as scratch:
        config, _ = bridge_config(Path(scratch), f"http://127.0.0.1:{up_port}")
        port = free_port()
        bridge = await asyncio.create_subprocess_exec(
            *[PYTHON, "-m", "bridge", "serve", "--config", str(config), "--port", str(port)],
            cwd=REPO,
            env={**os.environ, **bridge_env(Path(scratch)), "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_until_up(f"{url}/healthz")
            return {
                "http": await over_http(url, upstream, turns),
                "socket": await over_socket(url, upstream, turns),
            }
        finally:
            bridge.terminate()
            try:
                await asyncio.wait_for(bridge.wait(), 30)
            except TimeoutError:
                bridge.kill()
                await bridge.wait()
            server.close()
            await server.wait_closed()


WINDOW = 25  # turns 1-25 and the last 25 (176-200 in a 200-turn session)


def early(turns: list[Turn]) -> range:
    return range(min(WINDOW, len(turns)))


def late(turns: list[Turn]) -> range:
    return range(max(0, len(turns) - WINDOW), len(turns))


def median(turns: list[Turn], window: range, attr: str) -> float:
    return statistics.median(getattr(turns[i], attr) for i in window)


def combine(runs: list[list[Turn]]) -> list[Turn]:
    return [
        Turn(
            statistics.median(t.pre_ms for t in same),
            statistics.median(t.post_ms for t in same),
            same[-1].sent_bytes,
        )
        for same in zip(*runs, strict=True)
    ]


def report(results: dict[str, list[Turn]], repeat: int) -> str:
    http, sock = results["http"], results["socket"]
    early_socket = median(sock, early(sock), "own_ms")
    late_socket = median(sock, late(sock), "own_ms")
    late_http = median(http, late(http), "own_ms")
    last = f"turns {len(sock) - WINDOW + 1}-{len(sock)}"
    lines = [
        "# WebSocket session benchmark (bench/websocket_session.py)",
        "",
        f"{len(sock)}-turn Codex-shaped session, `store: false`, medians of {repeat} runs per "
        f"turn; {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}.",
        "",
        "The bridge's own time per turn (ms): client sends the turn -> upstream has the whole "
        "body, plus upstream's last byte -> client has the final event.",
        "",
        f"| transport | turns 1-25 | {last} | of which before the upstream | after | "
        "bytes sent by the client at the last turn |",
        "|---|---|---|---|---|---|",
    ]
    for name, turns in (("HTTP (full replay)", http), ("WebSocket (incremental)", sock)):
        lines.append(
            f"| {name} | {median(turns, early(turns), 'own_ms'):.1f} | "
            f"{median(turns, late(turns), 'own_ms'):.1f} | "
            f"{median(turns, late(turns), 'pre_ms'):.1f} | "
            f"{median(turns, late(turns), 'post_ms'):.1f} | "
            f"{turns[-1].sent_bytes:,} |"
        )
    flat = late_socket / early_socket
    ahead = late_http / late_socket
    lines += [
        "",
        "| target | wanted | measured | met |",
        "|---|---|---|---|",
        f"| socket, {last} against turns 1-25 | at most 2x | {flat:.2f}x | "
        f"{'yes' if flat <= 2 else 'NO'} |",
        f"| HTTP against socket at {last} | at least 5x | {ahead:.1f}x | "
        f"{'yes' if ahead >= 5 else 'NO'} |",
    ]
    return "\n".join(lines) + "\n"


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[list[Turn]]] = {"http": [], "socket": []}
    for number in range(args.repeat):
        print(f"run {number + 1} of {args.repeat}", flush=True)
        for name, turns in (await run(args.turns)).items():
            runs[name].append(turns)
    results = {name: combine(same) for name, same in runs.items()}
    text = report(results, args.repeat)
    (BENCH / "WEBSOCKET_RESULTS.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
