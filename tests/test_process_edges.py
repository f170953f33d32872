"""The bridge as a process, at its edges: SIGHUP (a closing terminal) drains like SIGTERM, and
`responses-bridge trace` never lets an upstream's bytes drive the reader's terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson

from bridge.sse import SSEParser
from tests.conftest import MODEL
from tests.fake_upstream import FakeUpstream, Reply, chunk, sse, thinking_text_reply
from tests.processes import REPO, BridgeProcess, free_port

TIMEOUT = 20.0


def _config(tmp_path: Path, fake_upstream: FakeUpstream, extra: str = "") -> Path:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "state" / "bridge.db"}"\n'
        f'[providers.fake]\nbase_url = "{fake_upstream.url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\n' + extra
    )
    return config


async def test_sighup_drains_open_responses_and_exits_cleanly(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """SIGHUP killed the bridge at once: streams cut, nothing logged."""
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(_config(tmp_path, fake_upstream), free_port(), log=log, log_level="info")
    reply = thinking_text_reply([], ["still ", "here"])
    reply.pauses = {2: 1.0}  # the answer is under way when the signal comes
    fake_upstream.script(reply)
    await bridge.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{bridge.url}/v1/responses", json={"model": MODEL, "input": "x", "stream": True}
            ) as response,
        ):
            await response.content.readline()  # the stream has begun
            assert bridge.process is not None
            bridge.process.send_signal(signal.SIGHUP)
            body = await asyncio.wait_for(response.read(), TIMEOUT)
        assert await asyncio.wait_for(bridge.process.wait(), TIMEOUT) == 0
    finally:
        await bridge.stop()
    events = [orjson.loads(e.data) for e in SSEParser().feed(body) if e.data != b"[DONE]"]
    assert events[-1]["type"] == "response.completed"
    assert "SIGHUP" in log.read_text()


async def test_trace_escapes_an_upstreams_control_characters_on_a_terminal(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """`trace ID` printed the raw upstream stream: an escape sequence in it (here: clear the
    screen, set the window title) acted on the reader's terminal."""
    config = _config(tmp_path, fake_upstream, "[debug]\nkeep_turns = 5\n")
    bridge = BridgeProcess(config, free_port())
    hostile = b": \x1b[2J\x1b]0;owned\x07\n\n"
    fake_upstream.script(
        Reply([hostile, sse(chunk({"content": "hi"})), sse(chunk(finish_reason="stop"))])
    )
    await bridge.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            # Streamed: the upstream is asked for a stream, which carries the bytes.
            session.post(
                f"{bridge.url}/v1/responses", json={"model": MODEL, "input": "x", "stream": True}
            ) as sent,
        ):
            first = SSEParser().feed(await sent.read())[0]
            response_id = orjson.loads(first.data)["response"]["id"]
        output = await asyncio.to_thread(_trace_on_a_terminal, config, bridge.url, response_id)
    finally:
        await bridge.stop()
    assert b"owned" in output  # the stream is shown...
    assert b"\x1b" not in output and b"\x07" not in output  # ...and cannot act
    assert b"\\x1b[2J" in output


def _trace_on_a_terminal(config: Path, url: str, response_id: str) -> bytes:
    """What `responses-bridge trace ID` writes to a terminal (a pseudo-terminal here)."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "trace",
                "--config",
                str(config),
                "--url",
                url,
                response_id,
            ],
            cwd=REPO,
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        output = b""
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process has exited
                break
            if not data:
                break
            output += data
        assert process.wait(timeout=TIMEOUT) == 0, process.stderr.read() if process.stderr else ""
        if process.stderr is not None:
            process.stderr.close()
        return output
    finally:
        os.close(leader)
