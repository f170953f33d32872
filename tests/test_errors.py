"""Every error path answers in the one OpenAI error shape, and the server carries on."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, thinking_text_reply

ClientFactory = Callable[..., Awaitable[TestClient]]


async def assert_error(
    response: ClientResponse, status: int, code: str | None, param: str | None = None
) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/json")
    body = await response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"", 400, "invalid_json", None),
        (b"\xff\xfe{}", 400, "invalid_json", None),
        (b"[1, 2]", 400, "invalid_value", None),
        (b'{"input": "x"}', 400, "invalid_value", None),
        (b'{"model": 5, "input": "x"}', 400, "invalid_value", "model"),
        (
            b'{"model": "%s", "input": "x", "temperature": "hot"}' % MODEL.encode(),
            400,
            "invalid_value",
            "temperature",
        ),
        (
            b'{"model": "%s", "input": [{"role": "user", "content": 7}]}' % MODEL.encode(),
            400,
            "invalid_value",
            "input[0].content",
        ),
        (
            b'{"model": "%s", "input": [{"role": "pirate", "content": "x"}]}' % MODEL.encode(),
            400,
            "invalid_value",
            "input[0].role",
        ),
        (b'{"model": "gpt-9", "input": "x"}', 404, "model_not_found", "model"),
        (
            b'{"model": "%s", "input": "x", "previous_response_id": "resp_x"}' % MODEL.encode(),
            404,
            "previous_response_not_found",
            "previous_response_id",
        ),
    ],
)
async def test_bad_requests(
    bridge: TestClient, body: bytes, status: int, code: str, param: str | None
) -> None:
    response = await bridge.post(
        "/v1/responses", data=body, headers={"Content-Type": "application/json"}
    )
    await assert_error(response, status, code, param)


async def test_unknown_model_lists_the_configured_names(bridge: TestClient) -> None:
    response = await bridge.post("/v1/responses", json={"model": "gpt-9", "input": "x"})
    error = await assert_error(response, 404, "model_not_found", "model")
    assert MODEL in error["message"]


async def test_unknown_route_and_wrong_method(bridge: TestClient) -> None:
    await assert_error(await bridge.get("/v1/nothing"), 404, "not_found")
    await assert_error(await bridge.get("/v1/responses"), 405, "method_not_allowed")


async def test_body_over_the_limit_is_413(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, server="max_request_bytes = 1024")
    client = await aiohttp_client(create_app(config))
    response = await client.post("/v1/responses", json={"model": MODEL, "input": "x" * 4096})
    error = await assert_error(response, 413, "request_too_large")
    assert "1024" in error["message"]


async def test_default_limit_takes_large_codex_bodies(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """Codex sends MBs with images; a 3 MB body must go through."""
    fake_upstream.script(thinking_text_reply([], ["ok"]))
    image = "data:image/png;base64," + "A" * (3 * 1024 * 1024)
    content = [{"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": image}]
    body = json.dumps({"model": MODEL, "input": [{"role": "user", "content": content}]})
    response = await bridge.post(
        "/v1/responses",
        data=io.BytesIO(body.encode()),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200
    sent = fake_upstream.requests[0]["messages"][0]["content"][1]
    assert sent == {"type": "image_url", "image_url": {"url": image}}


async def test_server_keeps_serving_after_errors(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    for _ in range(3):
        await (await bridge.post("/v1/responses", data=b"{oops")).read()
    fake_upstream.script(thinking_text_reply([], ["still here"]))
    response = await bridge.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert response.status == 200
    assert (await response.json())["output"][0]["content"][0]["text"] == "still here"


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    from bridge.errors import parse_retry_after

    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("-3") is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    now = 1_795_600_000.0  # 2026-11-25 09:46:40 UTC
    assert parse_retry_after("Wed, 25 Nov 2026 09:47:10 GMT", now) == 30.0
    assert parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now) == 0.0  # already past
