"""A PostgreSQL outage under load, with real processes: two bridges (each with the local
spool of a machine of its own) stream thinking turns that end while the database is down;
after it returns, each bridge must be ready again within seconds, and every turn a client
saw completed must be stored, its reasoning handed back on a later replay through the
other bridge.

tests/test_outage.py runs it with a short outage; bench/pg_outage.py with the 30 s of the
issue that asked for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fake_upstream import FakeUpstream, Reply, thinking_text_reply, tool_call_reply
from tests.postgres import PASSWORD, Cluster
from tests.processes import BridgeProcess, free_port

MODEL = "outage-model"
PASSWORD_ENV = "RB_OUTAGE_PG_PASSWORD"
TOOLS = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
# Seconds a bridge may take to be ready once the database is back (the bound).
READY_WITHIN = 10.0


class NoPostgres(Exception):
    """PostgreSQL cannot run here (not installed, or refused to start)."""


@dataclass
class OutageResult:
    """What the run saw."""

    outage_seconds: float
    streams: int
    completed: int = 0
    # Turns whose final object said they waited in the spool.
    spooled: int = 0
    # Seconds from the database's return to each bridge's /readyz 200.
    ready_after: list[float] = field(default_factory=list)
    retrievable: int = 0
    reasoning_replayed: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "outage_seconds": self.outage_seconds,
            "streams": self.streams,
            "completed": self.completed,
            "spooled": self.spooled,
            "ready_after_seconds": [round(value, 2) for value in self.ready_after],
            "retrievable": self.retrievable,
            "reasoning_replayed": self.reasoning_replayed,
            "problems": self.problems,
        }


def _reply(body: dict[str, Any]) -> Reply:
    """A tool call with its reasoning for a new turn (after a moment, so the turn is open
    when the database goes), a short answer for a turn that returns the tool's output."""
    messages = body["messages"]
    if messages[-1]["role"] == "tool":
        return thinking_text_reply([], ["done"])
    label = messages[-1]["content"]
    reply = tool_call_reply(f"reasoning of {label}", [(f"call_{label}", "lookup", ["{}"])])
    reply.delay_before = 1.0
    return reply


async def _stream(session: aiohttp.ClientSession, bridge: BridgeProcess, label: str) -> Any:
    """One streamed turn; its final event's response."""
    body = {"model": MODEL, "input": label, "tools": TOOLS, "stream": True}
    async with session.post(f"{bridge.url}/v1/responses", json=body) as response:
        data = await response.read()
    frames = [line[6:] for line in data.split(b"\n") if line.startswith(b"data: {")]
    return json.loads(frames[-1])


async def _ready_after(session: aiohttp.ClientSession, bridge: BridgeProcess) -> float:
    started = time.monotonic()
    while time.monotonic() - started < READY_WITHIN * 3:
        try:
            async with session.get(f"{bridge.url}/readyz") as response:
                if response.status == 200:
                    return time.monotonic() - started
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    return float("inf")


async def run_outage(
    outage_seconds: float, streams: int = 10, write_timeout: float = 10.0
) -> OutageResult:
    """Start a cluster and two bridges, run the outage, stop everything."""
    result = OutageResult(outage_seconds, streams)
    # Directly under the temporary directory: as root the server runs as `postgres`.
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="rb-outage-postgres-")))
    problem = cluster.start()
    if problem is not None:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise NoPostgres(problem)
    root = Path(tempfile.mkdtemp(prefix="rb-outage-"))
    upstream = FakeUpstream()
    upstream.responder = _reply
    runner = web.AppRunner(upstream.app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    bridges: list[BridgeProcess] = []
    try:
        url = cluster.create_database()
        config = root / "config.toml"
        config.write_text(
            f'[store]\nurl = "{url}"\npassword_env = "{PASSWORD_ENV}"\n'
            f"write_timeout = {write_timeout}\n"
            f'[providers.fake]\nbase_url = "http://127.0.0.1:{port}/v1"\n'
            f'[models."{MODEL}"]\nprovider = "fake"\n'
        )
        for name in ("a", "b"):
            # Each its own state directory: two machines, two spools.
            env: dict[str, str | None] = {
                PASSWORD_ENV: PASSWORD,
                "STATE_DIRECTORY": str(root / f"state-{name}"),
            }
            bridges.append(
                BridgeProcess(
                    config, free_port(), env=env, log=root / f"{name}.log", log_level="info"
                )
            )
        await asyncio.gather(*(bridge.start() for bridge in bridges))
        await _run(cluster, bridges, upstream, result)
    finally:
        for bridge in bridges:
            await bridge.stop()
        await runner.cleanup()
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
        if result.problems and os.environ.get("RB_OUTAGE_KEEP"):
            result.problems.append(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return result


async def _run(
    cluster: Cluster, bridges: list[BridgeProcess], upstream: FakeUpstream, result: OutageResult
) -> None:
    async with aiohttp.ClientSession() as session:
        turns = [
            asyncio.ensure_future(_stream(session, bridges[number % 2], f"t{number}"))
            for number in range(result.streams)
        ]
        await asyncio.sleep(0.3)  # every turn has started; their answers come in a second
        await asyncio.to_thread(cluster.stop_fast)
        stopped = time.monotonic()
        finals = await asyncio.gather(*turns)
        for bridge in bridges:
            async with session.get(f"{bridge.url}/readyz") as ready:
                if ready.status != 503:
                    result.problems.append(f"{bridge.url} ready while the database was down")
        await asyncio.sleep(max(0.0, result.outage_seconds - (time.monotonic() - stopped)))
        await asyncio.to_thread(cluster.restart)
        result.ready_after = list(
            await asyncio.gather(*(_ready_after(session, bridge) for bridge in bridges))
        )
        for number, final in enumerate(finals):
            if final.get("type") != "response.completed":
                result.problems.append(f"t{number} ended {final.get('type')}: {final}")
                continue
            result.completed += 1
            response = final["response"]
            if response.get("store_pending"):
                result.spooled += 1
            await _check_kept(session, bridges, upstream, number, response["id"], result)


async def _check_kept(
    session: aiohttp.ClientSession,
    bridges: list[BridgeProcess],
    upstream: FakeUpstream,
    number: int,
    response_id: str,
    result: OutageResult,
) -> None:
    """The turn is readable through both bridges, and its reasoning is handed back when the
    other bridge continues it."""
    found = []
    for bridge in bridges:
        async with session.get(f"{bridge.url}/v1/responses/{response_id}") as got:
            found.append(got.status)
    if found != [200, 200]:
        result.problems.append(f"t{number} ({response_id}) read back {found}")
        return
    result.retrievable += 1
    other = bridges[(number + 1) % 2]
    output = {"type": "function_call_output", "call_id": f"call_t{number}", "output": "ok"}
    body = {
        "model": MODEL,
        "previous_response_id": response_id,
        "input": [output],
        "tools": TOOLS,
    }
    async with session.post(f"{other.url}/v1/responses", json=body) as answer:
        if answer.status != 200:
            result.problems.append(f"t{number} continued: {answer.status} {await answer.text()}")
            return
    replayed = [m for m in upstream.requests[-1]["messages"] if m.get("tool_calls")]
    if replayed and replayed[-1].get("reasoning_content") == f"reasoning of t{number}":
        result.reasoning_replayed += 1
    else:
        result.problems.append(f"t{number}: its reasoning was not handed back: {replayed}")
