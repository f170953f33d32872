"""Background responses: created at once, run detached, polled, followed as a stream from
any event, cancelled; never left running across a restart."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from tests.conftest import JS, MODEL, assert_ends, bridge_config, node, read_events
from tests.fake_upstream import FakeUpstream, Reply, thinking_text_reply, tool_call_reply
from tests.processes import REPO, BridgeProcess, output_of

# The store's behaviour is the same on SQLite and PostgreSQL (tests/conftest.py).
STORE_BACKENDS = ["sqlite", "postgres"]


def slow_reply(words: int = 40, delay: float = 0.05) -> Reply:
    """A reply that takes words * delay seconds."""
    reply = thinking_text_reply(["Thinking it over."], [f"w{n} " for n in range(words)])
    reply.frame_delay = delay
    return reply


async def wait_for_status(
    sdk: openai.AsyncOpenAI, response_id: str, wanted: set[str], seconds: float = 10.0
) -> Any:
    async with asyncio.timeout(seconds):
        while True:
            response = await sdk.responses.retrieve(response_id)
            if response.status in wanted:
                return response
            await asyncio.sleep(0.05)


async def test_background_returns_at_once_and_is_polled_to_its_end(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(slow_reply(words=10))
    created = await sdk.responses.create(model=MODEL, input="take your time", background=True)
    assert created.status == "queued"
    assert created.background is True
    assert created.output == []
    running = await wait_for_status(sdk, created.id, {"in_progress"})
    assert running.background is True
    final = await wait_for_status(sdk, created.id, {"completed"})
    assert final.output_text == "".join(f"w{n} " for n in range(10))
    assert final.usage is not None and final.usage.output_tokens > 0
    assert len(fake_upstream.requests) == 1


async def test_cancel_closes_the_upstream_and_ends_cancelled(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(slow_reply(words=400, delay=0.05))
    created = await sdk.responses.create(model=MODEL, input="a long one", background=True)
    await wait_for_status(sdk, created.id, {"in_progress"})
    # In progress may come before the upstream has the request; cancel once it has.
    await asyncio.wait_for(fake_upstream.arrived.wait(), timeout=5)
    cancelled = await sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    async with asyncio.timeout(5):
        await fake_upstream.stream_abandoned.wait()
    again = await sdk.responses.retrieve(created.id)
    assert again.status == "cancelled"
    # Cancelling what has ended changes nothing.
    assert (await sdk.responses.cancel(created.id)).status == "cancelled"
    # Its stream ends with the one final event, response.failed saying cancelled.
    events = [event async for event in await sdk.responses.retrieve(created.id, stream=True)]
    assert_ends(events, "response.failed")
    assert events[-1].response.status == "cancelled"


async def test_stream_resumes_after_any_event_and_follows_live(
    sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(slow_reply(words=30, delay=0.03))
    created = await sdk.responses.create(
        model=MODEL, input="stream me", background=True, stream=True
    )
    first: list[Any] = []
    async for event in created:
        first.append(event)
        if len(first) == 6:
            break  # the client drops its connection; the response goes on
    response_id = first[0].response.id
    resumed = await sdk.responses.retrieve(response_id, stream=True, starting_after=5)
    rest = [event async for event in resumed]
    numbers = [event.sequence_number for event in first + rest]
    assert numbers == list(range(len(numbers))), "every event once, in order"
    assert_ends(rest)
    text = "".join(e.delta for e in first + rest if e.type == "response.output_text.delta")
    assert text == "".join(f"w{n} " for n in range(30))
    # Once ended, the same events are read back from the store.
    again = [
        event.model_dump()
        async for event in await sdk.responses.retrieve(response_id, stream=True, starting_after=2)
    ]
    assert again == [event.model_dump() for event in (first + rest)[3:]]


async def test_background_requires_store(bridge: TestClient, fake_upstream: FakeUpstream) -> None:
    response = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": "x", "background": True, "store": False}
    )
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "background"
    assert fake_upstream.requests == []


async def test_only_background_responses_are_cancelled(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(thinking_text_reply([], ["ok"]))
    created = await (await bridge.post("/v1/responses", json={"model": MODEL, "input": "x"})).json()
    response = await bridge.post(f"/v1/responses/{created['id']}/cancel")
    assert response.status == 400
    missing = await bridge.post("/v1/responses/resp_nope/cancel")
    assert missing.status == 404


WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


async def foreground_response(bridge: TestClient, fake_upstream: FakeUpstream) -> dict[str, Any]:
    """A stored response (not a background one) with reasoning, text and a tool call."""
    fake_upstream.script(
        tool_call_reply(
            "Weather wanted.", [("call_s", "get_weather", ['{"city":', '"Oslo"}'])], "Checking."
        )
    )
    created = await bridge.post(
        "/v1/responses", json={"model": MODEL, "input": "Weather?", "tools": [WEATHER]}
    )
    body: dict[str, Any] = await created.json()
    assert [item["type"] for item in body["output"]] == ["reasoning", "message", "function_call"]
    return body


async def test_a_foreground_response_reads_back_as_the_stream_that_made_it(
    bridge: TestClient, fake_upstream: FakeUpstream
) -> None:
    """Stored without its events: told as the events that stream it, from response.created
    to its final event, and from any event on."""
    created = await foreground_response(bridge, fake_upstream)
    events = await read_events(await bridge.get(f"/v1/responses/{created['id']}?stream=true"))
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert_ends(events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["response"] == created
    assert {
        "response.reasoning_text.delta",
        "response.output_text.delta",
        "response.function_call_arguments.done",
    } <= set(kinds)
    later = await read_events(
        await bridge.get(f"/v1/responses/{created['id']}?stream=true&starting_after=5")
    )
    assert later == events[6:]
    bad = await bridge.get(f"/v1/responses/{created['id']}?stream=true&starting_after=x")
    assert bad.status == 400


def without_parsed(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Output items as a stream helper gives them, less the empty fields it adds
    (`parsed`, `parsed_arguments`, and nulls for fields the bridge left out)."""
    return [
        {
            key: [{k: v for k, v in part.items() if v is not None} for part in value]
            if key == "content"
            else value
            for key, value in item.items()
            if value is not None
        }
        for item in output
    ]


async def test_openai_python_reads_a_stored_response_back_as_a_stream(
    bridge_server: TestServer, sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(
        tool_call_reply("Weather wanted.", [("call_s", "get_weather", ['{"city":"Oslo"}'])], "Ok.")
    )
    created = await sdk.responses.create(model=MODEL, input="Weather?", tools=[WEATHER])  # type: ignore[list-item]
    events = [event async for event in await sdk.responses.retrieve(created.id, stream=True)]
    assert events[0].type == "response.created"
    assert_ends(events)
    async with sdk.responses.stream(response_id=created.id) as stream:
        final = await stream.get_final_response()
    # The helper's parsed response: the same items (its output text parts gain `parsed`).
    assert (
        without_parsed(final.model_dump(mode="json", exclude_none=True)["output"])
        == (created.model_dump(mode="json", exclude_none=True)["output"])
    )
    assert final.output_text == "Ok."


@pytest.mark.parametrize("package", ["openai", "openai6"], ids=["openai-node-7", "openai-node-6"])
async def test_openai_node_reads_a_stored_response_back_as_a_stream(
    bridge_server: TestServer, sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream, package: str
) -> None:
    """openai-node's responses.stream({response_id}) threw "expected 'response.created'
    event" when the stream was one response.completed."""
    binary = node()
    if not (REPO / "node_modules" / package).exists():
        pytest.fail(f"npm package {package} is missing")
    fake_upstream.script(
        tool_call_reply("Weather wanted.", [("call_s", "get_weather", ['{"city":"Oslo"}'])], "Ok.")
    )
    created = await sdk.responses.create(model=MODEL, input="Weather?", tools=[WEATHER])  # type: ignore[list-item]
    process = await asyncio.create_subprocess_exec(
        binary,
        str(JS / "stream_stored.mjs"),
        str(bridge_server.make_url("/v1")),
        created.id,
        package,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await output_of(process, 60)
    result = json.loads(out.decode().splitlines()[-1]) if out else {"error": err.decode()}
    assert "error" not in result, result
    assert result["types"][0] == "response.created"
    assert (
        without_parsed(result["final"]["output"])
        == (created.model_dump(mode="json", exclude_none=True)["output"])
    )
    assert result["text"] == "Ok."


async def test_another_client_cannot_see_or_cancel_a_background_response(
    aiohttp_server: Any, fake_upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    monkeypatch.setenv("BRIDGE_KEYS", "key-a key-b")
    config = bridge_config(fake_upstream.url, server='api_keys_env = "BRIDGE_KEYS"', store=store)
    server: TestServer = await aiohttp_server(
        create_app(config, {"fake": "k"}, client_keys=("key-a", "key-b"))
    )
    fake_upstream.script(slow_reply(words=20))
    base = str(server.make_url("/v1"))
    owner = openai.AsyncOpenAI(api_key="key-a", base_url=base)
    other = openai.AsyncOpenAI(api_key="key-b", base_url=base)
    created = await owner.responses.create(model=MODEL, input="mine", background=True)
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.cancel(created.id)
    final = await wait_for_status(owner, created.id, {"completed"})
    assert final.output_text.startswith("w0 ")
    await owner.close()
    await other.close()


async def test_shutdown_ends_a_running_background_response_failed(
    aiohttp_server: Any, fake_upstream: FakeUpstream
) -> None:
    config = bridge_config(fake_upstream.url, server="drain_seconds = 0.2")
    app = create_app(config, {"fake": "k"})
    server: TestServer = await aiohttp_server(app)
    fake_upstream.script(slow_reply(words=400))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            server.make_url("/v1/responses"),
            json={"model": MODEL, "input": "x", "background": True},
        ) as response:
            created = await response.json()
        await asyncio.sleep(0.3)
    await server.close()
    restarted: TestServer = await aiohttp_server(create_app(config, {"fake": "k"}))
    url = restarted.make_url(f"/v1/responses/{created['id']}")
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json()
    assert body["status"] == "failed"
    assert "shutting down" in body["error"]["message"]


async def test_kill_9_leaves_no_background_response_in_progress(
    bridge_process: BridgeProcess, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.script(slow_reply(words=400))
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{bridge_process.url}/v1/responses",
            json={"model": MODEL, "input": "x", "background": True},
        ) as response:
            created = await response.json()
        assert created["status"] == "queued"
        await asyncio.sleep(0.3)
        await bridge_process.kill()
        await bridge_process.start()
        async with session.get(f"{bridge_process.url}/v1/responses/{created['id']}") as response:
            body = await response.json()
        assert body["status"] == "failed", json.dumps(body)[:500]
        assert "stopped while this background response was running" in body["error"]["message"]


@pytest.mark.parametrize("package", ["openai", "openai6"], ids=["openai-node-7", "openai-node-6"])
async def test_openai_node_polls_resumes_and_cancels(
    bridge_server: TestServer, fake_upstream: FakeUpstream, package: str
) -> None:
    binary = node()
    if not (REPO / "node_modules" / package).exists():
        pytest.fail(f"npm package {package} is missing")
    words = 20
    fake_upstream.script(
        slow_reply(words, 0.02), slow_reply(words, 0.02), slow_reply(words=2000, delay=0.05)
    )
    process = await asyncio.create_subprocess_exec(
        binary,
        str(JS / "background.mjs"),
        str(bridge_server.make_url("/v1")),
        MODEL,
        "".join(f"w{n} " for n in range(words)),
        package,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await output_of(process, 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    results = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert [r["mode"] for r in results] == ["poll", "resume", "cancel"], err.decode()[-2000:]
    assert all(r["ok"] for r in results), results
    assert results[1]["first"] == 5, "the helper resumed after the fifth event"


async def test_an_orphan_is_reaped_and_the_runs_of_this_bridge_are_not(
    bridge_server: TestServer, sdk: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    """A response stored as running that no bridge runs (its process died) is marked failed
    when read; a run of this bridge stays as it is meanwhile."""
    from bridge.app_keys import STORE
    from bridge.records import record_turn
    from bridge.scope import Scope
    from bridge.wire.events import ResponseObject
    from bridge.wire.responses import ResponsesRequest

    store = bridge_server.app[STORE]
    orphan = ResponseObject(
        # Made now: the bridge's pruner deletes what is older than max_age_days.
        id="resp_" + "0d" * 16,
        created_at=int(time.time()),
        model=MODEL,
        status="queued",
        background=True,
    )
    request = ResponsesRequest(model=MODEL, input="left behind", background=True)
    await store.save_turn(record_turn(request, orphan, Scope()))
    fake_upstream.script(slow_reply(words=200))
    running = await sdk.responses.create(model=MODEL, input="mine", background=True)
    await wait_for_status(sdk, running.id, {"in_progress"})

    reaped = await sdk.responses.retrieve(orphan.id)
    assert reaped.status == "failed"
    assert reaped.error is not None and "stopped while" in reaped.error.message
    # The row of this bridge's own run was not touched.
    stored = json.loads(await store.get_response(running.id) or b"{}")
    assert stored["status"] == "queued"
    await sdk.responses.cancel(running.id)


async def test_reads_right_after_a_restart_serve_what_the_restart_decided(
    fake_upstream: FakeUpstream, aiohttp_client: Any, opened_store: Any, store: str
) -> None:
    """Background responses a stopped bridge left queued are marked failed by the restart;
    a GET that arrives while that is being written serves the failure, never "queued"
    (the restart's reap and the GET's own raced: 19 of 20 GETs said queued)."""
    from bridge.records import record_turn
    from bridge.scope import Scope
    from bridge.wire.events import ResponseObject
    from bridge.wire.responses import ResponsesRequest

    left = [f"resp_{number:032x}" for number in range(1, 21)]
    request = ResponsesRequest(model=MODEL, input="left behind", background=True)
    for response_id in left:
        queued = ResponseObject(
            id=response_id,
            created_at=int(time.time()),
            model=MODEL,
            status="queued",
            background=True,
        )
        await opened_store.save_turn(record_turn(request, queued, Scope()))
    await opened_store.close()  # the bridge that left them stops
    restarted = await aiohttp_client(create_app(bridge_config(fake_upstream.url, store=store)))
    answers = await asyncio.gather(*(restarted.get(f"/v1/responses/{rid}") for rid in left))
    statuses = [(await answer.json()).get("status", await answer.text()) for answer in answers]
    assert statuses == ["failed"] * len(left)
