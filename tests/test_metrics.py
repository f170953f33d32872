"""GET /metrics: Prometheus' text format, fed by real turns through the bridge."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import create_app
from bridge.config_env import resolve_client_keys
from tests.conftest import MODEL, assert_ends, bridge_config
from tests.fake_upstream import FakeUpstream, Reply, thinking_text_reply

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: TestClient, **headers: str) -> Samples:
    response = await client.get("/metrics", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "text/plain"
    samples: Samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= set(have))


async def test_a_turn_is_counted_and_timed(bridge: TestClient, fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(thinking_text_reply(["Hmm."], ["Hello."]))
    response = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True}
    )
    assert response.status == 200
    await response.read()
    samples = await scrape(bridge)
    turn = {"model": MODEL, "provider": "fake"}
    assert (
        value(
            samples,
            "responses_bridge_turns_total",
            **turn,
            transport="http",
            outcome="completed",
        )
        == 1
    )
    # The fake's usage chunk: 11 in (3 cached), 7 out (2 reasoning).
    for kind, count in (("input", 11), ("output", 7), ("cached", 3), ("reasoning", 2)):
        assert value(samples, "responses_bridge_tokens_total", **turn, kind=kind) == count
    assert value(samples, "responses_bridge_time_to_first_byte_seconds_count", **turn) == 1
    assert (
        value(samples, "responses_bridge_turn_duration_seconds_count", **turn, transport="http")
        == 1
    )
    assert value(samples, "responses_bridge_store_write_seconds_count") == 1
    assert value(samples, "responses_bridge_store_write_failures_total") == 0
    assert (
        value(
            samples,
            "responses_bridge_http_requests_total",
            route="/v1/responses",
            method="POST",
            status="200",
        )
        == 1
    )
    assert value(samples, "responses_bridge_turns_in_flight") == 0
    assert value(samples, "responses_bridge_websocket_connections") == 0


@pytest.fixture
async def retrying_bridge(
    fake_upstream: FakeUpstream, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> TestClient:
    config = bridge_config(fake_upstream.url, upstream="max_retries = 1\nmax_retry_wait = 0.1")
    return await aiohttp_client(create_app(config))


async def test_upstream_errors_by_status_and_retry(
    retrying_bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    busy = Reply(status=503, error_body={"error": {"message": "busy"}})
    broken = Reply(status=500, error_body={"error": {"message": "broken"}})
    fake_upstream.script(busy, thinking_text_reply(["a"], ["b"]), broken)
    first = await retrying_bridge.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert first.status == 200
    second = await retrying_bridge.post("/v1/responses", json={"model": MODEL, "input": "y"})
    assert second.status == 502
    samples = await scrape(retrying_bridge)
    name = "responses_bridge_upstream_errors_total"
    assert total(samples, name, provider="fake", status="503", retried="true") == 1
    assert total(samples, name, provider="fake", status="500", retried="false") == 1
    assert total(samples, name) == 2
    outcomes = {
        labels: v for (n, labels), v in samples.items() if n == "responses_bridge_turns_total"
    }
    assert sorted(dict(labels)["outcome"] for labels in outcomes) == ["completed", "failed"]


async def test_websockets_and_background_runs_are_seen(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.responder = lambda body: thinking_text_reply(["Hmm."], ["Hello."])
    ws = await bridge.ws_connect("/v1/responses")
    await ws.send_json({"type": "response.create", "model": MODEL, "input": "hi"})
    while True:
        event: dict[str, Any] = await ws.receive_json()
        if event["type"] in ("response.completed", "response.failed", "error"):
            break
    assert_ends(event)
    samples = await scrape(bridge)
    assert value(samples, "responses_bridge_websocket_connections") == 1
    assert value(samples, "responses_bridge_websocket_cache_bytes") > 0
    assert total(samples, "responses_bridge_turns_total", transport="websocket") == 1
    await ws.close()
    background = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": "later", "background": True}
    )
    assert background.status == 200
    samples = await scrape(bridge)
    assert value(samples, "responses_bridge_background_runs_started_total") == 1
    assert value(samples, "responses_bridge_websocket_connections") == 0


async def test_metrics_need_a_client_key_when_the_bridge_has_them(
    fake_upstream: FakeUpstream,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METRICS_TEST_KEYS", "team-key")
    config = bridge_config(fake_upstream.url, server='api_keys_env = "METRICS_TEST_KEYS"')
    client = await aiohttp_client(
        create_app(config, client_keys=resolve_client_keys(config, {"METRICS_TEST_KEYS": "k1"}))
    )
    refused = await client.get("/metrics")
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "invalid_api_key"
    samples = await scrape(client, Authorization="Bearer k1")
    assert total(samples, "responses_bridge_http_requests_total", status="401") == 1


async def test_a_client_cannot_make_request_series_without_end(bridge: TestClient) -> None:
    """The method label was whatever method the client sent (aiohttp's C parser takes some
    thirty, its pure-Python one any token): each a new series, kept for the life of the
    process."""
    for method in ("PROPFIND", "MKCOL", "SEARCH", "LOCK", "UNLOCK"):
        await (await bridge.request(method, "/v1/responses")).read()
    await (await bridge.get("/healthz")).read()
    samples = await scrape(bridge)
    methods = {
        dict(labels)["method"]
        for name, labels in samples
        if name == "responses_bridge_http_requests_total"
    }
    assert methods == {"GET", "other"}
    assert total(samples, "responses_bridge_http_requests_total", method="other") == 5
