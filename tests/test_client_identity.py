"""With `forward_client_key` and no client keys, each user (by the provider key it sends) owns
what it makes, on every endpoint: it reads and deletes its own responses, and another key (or
none) cannot read, continue or cancel them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.app import create_app
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, thinking_text_reply

ClientFactory = Callable[..., Awaitable[TestClient]]
OWNER = {"Authorization": "Bearer owners-provider-key"}
OTHER = {"Authorization": "Bearer someone-elses-key"}
NOBODY: dict[str, str] = {}


async def _json(response: Any) -> Any:
    assert response.status == 200, await response.text()
    return await response.json()


async def test_each_forwarded_key_owns_its_responses_and_conversations(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, provider="forward_client_key = true")
    client = await aiohttp_client(create_app(config))
    fake_upstream.script(thinking_text_reply([], ["mine"]))
    made = await _json(
        await client.post("/v1/responses", json={"model": MODEL, "input": "x"}, headers=OWNER)
    )
    response_id = made["id"]
    conversation = await _json(await client.post("/v1/conversations", json={}, headers=OWNER))
    fake_upstream.script(thinking_text_reply([], ["in the conversation"]))
    await _json(
        await client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "private", "conversation": conversation["id"]},
            headers=OWNER,
        )
    )

    # The owner reads back what it made (404 before: reads used the anonymous identity).
    await _json(await client.get(f"/v1/responses/{response_id}", headers=OWNER))
    await _json(await client.get(f"/v1/responses/{response_id}/input_items", headers=OWNER))
    items = await _json(
        await client.get(f"/v1/conversations/{conversation['id']}/items", headers=OWNER)
    )
    assert len(items["data"]) == 2
    # Nobody else does, nor continues the owner's conversation.
    for headers in (OTHER, NOBODY):
        for path in (
            f"/v1/responses/{response_id}",
            f"/v1/responses/{response_id}/input_items",
            f"/v1/conversations/{conversation['id']}/items",
        ):
            assert (await client.get(path, headers=headers)).status == 404, (path, headers)
        turn = await client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "x", "conversation": conversation["id"]},
            headers=headers,
        )
        assert turn.status == 404
        assert (await client.delete(f"/v1/responses/{response_id}", headers=headers)).status == 404
    # The owner can delete its data.
    await _json(await client.delete(f"/v1/responses/{response_id}", headers=OWNER))
    assert (await client.get(f"/v1/responses/{response_id}", headers=OWNER)).status == 404


async def test_a_background_run_is_read_and_cancelled_only_by_its_owner(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    config = bridge_config(fake_upstream.url, provider="forward_client_key = true")
    client = await aiohttp_client(create_app(config))
    slow = thinking_text_reply([], ["late"])
    slow.delay_before = 30.0  # runs until cancelled
    fake_upstream.script(slow)
    started = await _json(
        await client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "x", "background": True},
            headers=OWNER,
        )
    )
    path = f"/v1/responses/{started['id']}"
    for headers in (OTHER, NOBODY):
        assert (await client.get(path, headers=headers)).status == 404
        assert (await client.post(path + "/cancel", headers=headers)).status == 404
    running = await _json(await client.get(path, headers=OWNER))
    assert running["status"] in ("queued", "in_progress")
    cancelled = await _json(
        await asyncio.wait_for(client.post(path + "/cancel", headers=OWNER), 20)
    )
    assert cancelled["status"] == "cancelled"
