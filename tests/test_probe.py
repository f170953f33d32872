"""`check-config --probe` against fake providers on loopback, as a user runs it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestServer

from bridge.exit_codes import Exit
from tests.fake_upstream import (
    DONE,
    FakeUpstream,
    Reply,
    chunk,
    sse,
    thinking_text_reply,
)
from tests.processes import REPO, free_port, output_of


async def fake(aiohttp_server: Callable[..., Awaitable[TestServer]], reply: Reply) -> FakeUpstream:
    upstream = FakeUpstream()
    upstream.responder = lambda body: reply
    server = await aiohttp_server(upstream.app)
    upstream.url = str(server.make_url("")).rstrip("/")
    return upstream


async def check_config(config: Path, **env: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "check-config", "--probe", "--config", str(config)),
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "STATE_DIRECTORY": str(config.parent / "state"), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await output_of(process, 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def provider(name: str, url: str, model: str, key_env: str | None = None) -> str:
    key = f'api_key_env = "{key_env}"\n' if key_env else ""
    return (
        f'[providers.{name}]\nbase_url = "{url}/v1"\nprofile = "deepseek"\n{key}'
        f'[models."{name}-model"]\nprovider = "{name}"\nupstream_model = "{model}"\n\n'
    )


async def test_probe_reports_each_provider(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    thinker = await fake(aiohttp_server, thinking_text_reply(["Let me see."], ["OK"]))
    plain = await fake(
        aiohttp_server,
        Reply(frames=[sse(chunk({"content": "OK"})), sse(chunk({}, "stop")), DONE]),
    )
    refusing = await fake(
        aiohttp_server,
        Reply(status=401, error_body={"error": {"message": "Authentication Fails"}}),
    )
    unknown = await fake(
        aiohttp_server,
        Reply(status=404, error_body={"error": {"message": "Model Not Exist"}}),
    )
    closed = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "config.toml"
    config.write_text(
        provider("thinker", thinker.url, "think-1", "THINKER_KEY")
        + provider("plain", plain.url, "plain-1")
        + provider("refusing", refusing.url, "r-1", "REFUSING_KEY")
        + provider("unknown", unknown.url, "no-such-model")
        + provider("closed", closed, "c-1")
        + provider("keyless", plain.url, "k-1", "UNSET_KEY")
        + '[providers.demo]\nprofile = "demo"\n[models.demo]\nprovider = "demo"\n'
    )
    code, out = await check_config(config, THINKER_KEY="sk-think", REFUSING_KEY="sk-wrong")
    assert code == Exit.PROBE, out
    lines = {line.split(" ", 2)[1]: line for line in out.splitlines() if line.startswith("probe ")}
    assert "model think-1): ok" in lines["thinker"]
    assert "streams reasoning (reasoning_content)" in lines["thinker"]
    assert "model plain-1): ok" in lines["plain"]
    assert "without streaming reasoning" in lines["plain"]
    assert "FAILED" in lines["refusing"] and "401" in lines["refusing"]
    assert "FAILED" in lines["unknown"] and "404" in lines["unknown"]
    assert "Model Not Exist" in lines["unknown"]
    assert "FAILED" in lines["closed"] and "unreachable" in lines["closed"]
    assert "not probed: UNSET_KEY is not set here" in lines["keyless"]
    assert "ok" in lines["demo"]
    assert "sk-think" not in out and "sk-wrong" not in out
    # Each provider got one request: the model's upstream name, its key, thinking asked for.
    (asked,) = thinker.requests
    assert asked["model"] == "think-1" and asked["stream"] is True
    assert asked["thinking"] == {"type": "enabled"}
    assert thinker.headers[0]["Authorization"] == "Bearer sk-think"
    assert len(refusing.requests) == len(unknown.requests) == 1


async def test_probe_passes_when_every_provider_answers(
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    thinker = await fake(aiohttp_server, thinking_text_reply(["Hmm."], ["OK"]))
    config = tmp_path / "config.toml"
    config.write_text(provider("thinker", thinker.url, "think-1"))
    code, out = await check_config(config)
    assert code == Exit.OK, out
    assert out.splitlines()[0].startswith(f"# {config}: ok")
    assert "[server]" not in out  # the probe's report replaces the effective settings
