"""A web page in the owner's browser cannot use the bridge: no simple cross-origin request, no
HTML form, no DNS-rebinding page gets through; a page the owner allows gets CORS answers; the
clients that send no Origin (the SDKs, curl, Codex: their own tests) are unaffected."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.cli import main
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, thinking_text_reply

ClientFactory = Callable[..., Awaitable[TestClient]]
BODY = b'{"model": "%s", "input": "spend the owner\'s credit"}' % MODEL.encode()


async def test_a_cross_origin_simple_request_is_refused_before_the_upstream(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """fetch(url, {method: "POST", body, mode: "no-cors"}) from any page: text/plain, no
    preflight. Answered 200 (and paid for) before."""
    for path in ("/v1/responses", "/v1/conversations"):
        response = await bridge.post(
            path,
            data=BODY,
            headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
        )
        assert response.status == 403, await response.text()
        assert (await response.json())["error"]["code"] == "origin_not_allowed"
    assert fake_upstream.requests == []


async def test_an_html_form_is_refused_with_or_without_an_origin(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """<form enctype="text/plain" method="post">: no JavaScript at all; a sandboxed frame or
    a file sends Origin: null, an old browser none. A background run outlived the tab."""
    form = b'{"model": "%s", "background": true, "input": "x", "pad": "="}' % MODEL.encode()
    refused = await bridge.post(
        "/v1/responses", data=form, headers={"Content-Type": "text/plain", "Origin": "null"}
    )
    assert refused.status == 403
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = await bridge.post("/v1/conversations", data=form, headers=headers)
        assert response.status == 415, await response.text()
        error = (await response.json())["error"]
        assert error["code"] == "unsupported_media_type"
        assert "Content-Type: application/json" in error["message"]
    assert fake_upstream.requests == []


async def test_a_dns_rebinding_page_cannot_read_the_turns(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """Host: rebind.evil.example:PORT (the page's own name, now resolving to 127.0.0.1) read
    GET /debug/turns?full=true, the owner's prompts, before."""
    config = bridge_config(fake_upstream.url, debug="keep_turns = 5")
    client = await aiohttp_client(create_app(config))
    fake_upstream.script(thinking_text_reply([], ["secret answer"]))
    sent = await client.post("/v1/responses", json={"model": MODEL, "input": "owner's prompt"})
    assert sent.status == 200
    port = client.port
    for path in ("/debug/turns?full=true", "/v1/models", "/healthz"):
        rebound = await client.get(path, headers={"Host": f"rebind.evil.example:{port}"})
        assert rebound.status == 403, path
        assert (await rebound.json())["error"]["code"] == "host_not_allowed"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "app.localhost"):
        mine = await client.get("/debug/turns?full=true", headers={"Host": host})
        assert mine.status == 200, host
        assert "owner's prompt" in (await mine.text())


async def test_a_reverse_proxy_name_is_allowed_when_configured(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, server='allowed_hosts = ["Bridge.Example.com."]')
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/v1/models", headers={"Host": "bridge.example.com"})).status == 200
    assert (await client.get("/v1/models", headers={"Host": "other.example.com"})).status == 403


async def test_an_allowed_page_gets_its_preflight_and_can_read_the_answer(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    page = "https://app.example"
    config = bridge_config(fake_upstream.url, server=f'allowed_origins = ["{page}/"]')
    client = await aiohttp_client(create_app(config))
    asked = await client.options(
        "/v1/responses",
        headers={
            "Origin": page,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert asked.status == 204
    assert asked.headers["Access-Control-Allow-Origin"] == page
    assert "POST" in asked.headers["Access-Control-Allow-Methods"]
    assert asked.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    fake_upstream.script(thinking_text_reply([], ["hello page"]))
    answer = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "x"}, headers={"Origin": page}
    )
    assert answer.status == 200
    assert answer.headers["Access-Control-Allow-Origin"] == page
    other = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "x"}, headers={"Origin": page + ":8443"}
    )
    assert other.status == 403


OLD_ORIGINS = '[websocket]\nallowed_origins = ["https://old.example"]\n'


def test_the_websocket_only_origins_are_called_deprecated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(OLD_ORIGINS + '[providers.fake]\nbase_url = "http://127.0.0.1:9/v1"\n')
    assert main(["check-config", "--config", str(path)]) == 0
    err = capsys.readouterr().err
    assert "websocket.allowed_origins` is deprecated" in err
    assert "[server] allowed_origins" in err


async def test_the_websocket_only_origins_still_work_over_http_too(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(create_app(bridge_config(fake_upstream.url, extra=OLD_ORIGINS)))
    models = await client.get("/v1/models", headers={"Origin": "https://old.example"})
    assert models.status == 200


async def test_sdk_clients_addressing_localhost_are_unaffected(
    bridge_server: TestServer, fake_upstream: FakeUpstream
) -> None:
    """The openai SDK sends JSON and no Origin; by name (Host: localhost:PORT) as by IP."""
    fake_upstream.script(thinking_text_reply([], ["still works"]))
    async with openai.AsyncOpenAI(
        base_url=f"http://localhost:{bridge_server.port}/v1", api_key="unused", max_retries=0
    ) as client:
        response = await asyncio.wait_for(client.responses.create(model=MODEL, input="x"), 20)
        conversation = await client.conversations.create(metadata={"k": "v"})
    assert response.output_text == "still works"
    assert conversation.metadata == {"k": "v"}
