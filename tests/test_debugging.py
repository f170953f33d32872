"""Seeing what happened: the turn ring ([debug] keep_turns), GET /debug/turns and
`responses-bridge trace`."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, Reply, thinking_text_reply
from tests.processes import REPO, output_of
from tests.websocket_client import turn, user

PROVIDER_KEY = "sk-provider-secret-0123456789"


async def traced_bridge(
    aiohttp_client: Any, fake_upstream: FakeUpstream, keep: int = 2, **options: str
) -> TestClient:
    config = bridge_config(
        fake_upstream.url,
        upstream="max_retries = 1\nmax_retry_wait = 0.1",
        debug=f"keep_turns = {keep}",
        **options,
    )
    return await aiohttp_client(create_app(config, {"fake": PROVIDER_KEY}))


async def test_tracing_is_off_by_default_and_says_how_to_turn_it_on(
    bridge: TestClient,
) -> None:
    response = await bridge.get("/debug/turns")
    assert response.status == 404
    assert "[debug] keep_turns" in (await response.json())["error"]["message"]


async def test_the_last_turns_are_kept_whole_with_secrets_redacted(
    aiohttp_client: Any, fake_upstream: FakeUpstream
) -> None:
    bridge = await traced_bridge(aiohttp_client, fake_upstream)
    fake_upstream.script(
        thinking_text_reply([], ["first"]),
        Reply(status=503, error_body={"error": {"message": "overloaded"}}),
        thinking_text_reply(["Think."], [f"the key is {PROVIDER_KEY}"]),
        thinking_text_reply([], ["third"]),
    )
    ids = []
    for text, stream in (("one", False), ("two", True), ("three", False)):
        response = await bridge.post(
            "/v1/responses",
            json={"model": MODEL, "input": text, "stream": stream},
            headers={"Authorization": "Bearer client-token-abcdef123456"},
        )
        assert response.status == 200
        body = await response.read()
        if not stream:
            ids.append(json.loads(body)["id"])
        else:
            ids.append(json.loads(body.split(b"data: ", 2)[1].split(b"\n")[0])["response"]["id"])

    listing = (await (await bridge.get("/debug/turns")).json())["data"]
    assert [turn["id"] for turn in listing] == [ids[2], ids[1]]  # the newest two, newest first
    assert listing[1]["attempts"] == 2 and listing[1]["status"] == "completed"

    turn = await (await bridge.get(f"/debug/turns/{ids[1]}")).json()
    assert json.loads(turn["client_request"])["input"] == "two"
    first, second = turn["upstream_requests"]
    assert first["url"].endswith("/v1/chat/completions")
    assert json.loads(second["body"])["messages"] == [{"role": "user", "content": "two"}]
    assert "overloaded" in turn["upstream_stream"]  # the failed attempt's answer
    assert '"reasoning_content":"Think."' in turn["upstream_stream"]  # the raw stream
    assert "event: response.completed" in turn["events"]
    whole = json.dumps(turn)
    assert PROVIDER_KEY not in whole and "[redacted]" in whole
    assert "client-token" not in whole  # request headers are not kept

    gone = await bridge.get(f"/debug/turns/{ids[0]}")
    assert gone.status == 404


async def test_with_client_keys_each_client_sees_its_own_turns(
    aiohttp_client: Any, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_KEYS", "key-a key-b")
    config = bridge_config(
        fake_upstream.url, server='api_keys_env = "BRIDGE_KEYS"', debug="keep_turns = 5"
    )
    bridge = await aiohttp_client(create_app(config, {}, client_keys=("key-a", "key-b")))
    fake_upstream.script(thinking_text_reply([], ["a"]), thinking_text_reply([], ["b"]))
    for key in ("key-a", "key-b"):
        response = await bridge.post(
            "/v1/responses",
            json={"model": MODEL, "input": f"from {key[-1]}"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status == 200
    seen = {}
    for key in ("key-a", "key-b"):
        listing = await bridge.get(
            "/debug/turns?full=true", headers={"Authorization": f"Bearer {key}"}
        )
        turns = (await listing.json())["data"]
        seen[key] = [json.loads(t["client_request"])["input"] for t in turns]
    assert seen == {"key-a": ["from a"], "key-b": ["from b"]}
    anonymous = await bridge.get("/debug/turns")
    assert anonymous.status == 401


async def run_trace(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "trace",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await output_of(process, 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_trace_command_prints_the_turns(
    aiohttp_server: Any, fake_upstream: FakeUpstream, tmp_path: Any
) -> None:
    config = bridge_config(fake_upstream.url, debug="keep_turns = 5")
    server: TestServer = await aiohttp_server(create_app(config, {"fake": PROVIDER_KEY}))
    fake_upstream.script(thinking_text_reply(["Hmm."], ["Hello there"]))
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/v1/responses"), json={"model": MODEL, "input": "hi"}) as r,
    ):
        response_id = (await r.json())["id"]
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[providers.fake]\nbase_url = "{fake_upstream.url}/v1"\n')
    url = str(server.make_url("")).rstrip("/")

    code, out, err = await run_trace("--config", str(config_file), "--url", url)
    assert code == 0, err
    assert response_id in out and MODEL in out and "completed" in out

    code, out, err = await run_trace(response_id, "--config", str(config_file), "--url", url)
    assert code == 0, err
    sections = [line for line in out.splitlines() if line.startswith("== ")]
    assert [s.split(":")[0] for s in sections[1:]] == [
        "== client request",
        "== upstream request 1",
        "== upstream stream (as received)",
        "== events sent to the client",
    ]
    assert '"input": "hi"' in out and "Hello there" in out and "event: response.completed" in out

    code, _, err = await run_trace("--config", str(config_file), "--url", "http://127.0.0.1:9")
    assert code == 8 and "cannot reach the bridge" in err


async def test_turns_over_a_websocket_are_kept_too(
    aiohttp_client: Any, fake_upstream: FakeUpstream
) -> None:
    bridge = await traced_bridge(aiohttp_client, fake_upstream)
    fake_upstream.script(thinking_text_reply(["Socket thoughts."], ["over the socket"]))
    async with bridge.ws_connect("/v1/responses") as ws:
        events = await turn(ws, input=[user("hello socket")])
    response_id = events[-1]["response"]["id"]
    turn_kept = await (await bridge.get(f"/debug/turns/{response_id}")).json()
    assert turn_kept["transport"] == "websocket"
    assert json.loads(turn_kept["client_request"])["type"] == "response.create"
    assert '"reasoning_content":"Socket thoughts."' in turn_kept["upstream_stream"]
    assert "over the socket" in turn_kept["events"]
