"""An error inside an HTTP 200 stream is the provider's text: a key it echoes never reaches
the client, the log or the database (as for HTTP error bodies)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, Reply, chunk, sse

ClientFactory = Callable[..., Awaitable[TestClient]]
PROVIDER_KEY = "provider-secret-4f9a2c"
FORWARDED = "sk-users-own-7d1e9b55aa"


@pytest.mark.parametrize("forward", [False, True])
async def test_a_key_echoed_in_a_stream_error_is_redacted_everywhere(
    fake_upstream: FakeUpstream,
    aiohttp_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    forward: bool,
) -> None:
    provider = "forward_client_key = true" if forward else ""
    config = bridge_config(fake_upstream.url, provider=provider)
    client = await aiohttp_client(create_app(config, {"fake": PROVIDER_KEY}))
    echoed = f"bad key Bearer {FORWARDED} (configured: {PROVIDER_KEY})"
    fake_upstream.script(
        Reply([sse(chunk({"content": "Hel"})), sse({"error": {"message": echoed}})])
    )
    with caplog.at_level(logging.DEBUG):
        response = await client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "x", "stream": True},
            headers={"Authorization": f"Bearer {FORWARDED}"},
        )
        body = await response.text()
        response_id = re.search(r'"id":"(resp_[0-9a-f]+)"', body)
        assert response_id is not None
        stored = await (
            await client.get(
                f"/v1/responses/{response_id[1]}",
                headers={"Authorization": f"Bearer {FORWARDED}"},
            )
        ).text()
    assert "response.failed" in body and "[redacted]" in body
    assert '"status":"failed"' in stored
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for text in (body, stored, logged):
        assert PROVIDER_KEY not in text
        assert FORWARDED not in text
