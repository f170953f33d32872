"""Running as a service: sd_notify, graceful shutdown, readiness, client keys, logs."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.app_keys import STORE
from bridge.config import ConfigError
from bridge.config_env import check_exposure, is_loopback
from bridge.config_load import parse_config
from bridge.notify import Notifier
from bridge.store.sqlite_driver import transaction
from tests.conftest import MODEL, bridge_config, ready_again
from tests.fake_upstream import FakeUpstream, thinking_text_reply
from tests.processes import REPO, BridgeProcess, free_port

ClientFactory = Callable[..., Awaitable[TestClient]]


# ---- sd_notify ----------------------------------------------------------------------


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    def close(self) -> None:
        self.sock.close()

    def messages(self) -> list[str]:
        received = []
        while True:
            try:
                received.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return received

    async def wait_for(self, line: str) -> list[str]:
        """Messages until one holds `line` (at most 10 s)."""
        seen: list[str] = []
        for _ in range(200):
            seen += self.messages()
            if any(line in message.splitlines() for message in seen):
                return seen
            await asyncio.sleep(0.05)
        raise AssertionError(f"{line} not received; got {seen}")


def test_notifier_is_a_no_op_without_notify_socket() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_seconds is None


def test_notifier_path_and_abstract_sockets(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    listener = NotifySocket(path)
    name = f"responses-bridge-test-{tmp_path.name}"
    abstract = NotifySocket("\0" + name)
    try:
        assert Notifier({"NOTIFY_SOCKET": path}).notify("READY=1", "STATUS=up") is True
        assert listener.messages() == ["READY=1\nSTATUS=up"]
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).notify("WATCHDOG=1") is True
        assert abstract.messages() == ["WATCHDOG=1"]
    finally:
        listener.close()
        abstract.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_seconds == 2.0
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None


def write_bridge_config(tmp_path: Path, upstream_url: str, server: str = "") -> Path:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"[server]\n{server}\n"
        f'[store]\npath = "{tmp_path / "state" / "bridge.db"}"\n'
        f'[providers.fake]\nbase_url = "{upstream_url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\n'
    )
    return config


@pytest.fixture
async def notify_socket(tmp_path: Path) -> AsyncIterator[tuple[str, NotifySocket]]:
    path = str(tmp_path / "systemd-notify.sock")
    listener = NotifySocket(path)
    try:
        yield path, listener
    finally:
        listener.close()


async def test_service_tells_systemd_ready_watchdog_and_stopping(
    tmp_path: Path, fake_upstream: FakeUpstream, notify_socket: tuple[str, NotifySocket]
) -> None:
    path, listener = notify_socket
    bridge = BridgeProcess(
        write_bridge_config(tmp_path, fake_upstream.url),
        free_port(),
        env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": None},
        log_level=None,
    )
    try:
        await bridge.spawn()
        seen = await listener.wait_for("READY=1")
        # READY means listening: the health check answers at once.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{bridge.url}/healthz") as health,
        ):
            assert health.status == 200
        seen += await listener.wait_for("WATCHDOG=1")
        assert bridge.process is not None
        bridge.process.send_signal(signal.SIGTERM)
        seen += await listener.wait_for("STOPPING=1")
        assert await asyncio.wait_for(bridge.process.wait(), 15) == 0
    finally:
        await bridge.stop()
    lines = [line for message in seen for line in message.splitlines()]
    assert lines.index("READY=1") < lines.index("STOPPING=1")


# ---- graceful shutdown ---------------------------------------------------------------


async def _stream_until_first_delta(url: str, session: aiohttp.ClientSession) -> Any:
    response = await session.post(
        f"{url}/v1/responses", json={"model": MODEL, "input": "long answer", "stream": True}
    )
    await response.content.readuntil(b"response.output_text.delta")
    return response


def _events(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[len("data: ") :])
        for line in raw.decode().splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


@pytest.mark.parametrize(("drain", "outcome"), [(5.0, "completed"), (0.5, "failed")])
async def test_sigterm_drains_open_streams(
    tmp_path: Path, fake_upstream: FakeUpstream, drain: float, outcome: str
) -> None:
    # Ten text chunks 0.2 s apart: two seconds of answer after the first delta.
    reply = thinking_text_reply([], [f"part {i} " for i in range(10)])
    reply.frame_delay = 0.2
    fake_upstream.script(reply)
    config = write_bridge_config(tmp_path, fake_upstream.url, f"drain_seconds = {drain}")
    bridge = BridgeProcess(config, free_port())
    try:
        await bridge.start()
        async with aiohttp.ClientSession() as session:
            response = await _stream_until_first_delta(bridge.url, session)
            assert bridge.process is not None
            bridge.process.send_signal(signal.SIGTERM)
            rest = await asyncio.wait_for(response.content.read(), drain + 10)
            # Listening stopped at once: a new connection is refused.
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"{bridge.url}/healthz")
        assert await asyncio.wait_for(bridge.process.wait(), 15) == 0
    finally:
        await bridge.stop()
    final = _events(rest)[-1]
    assert final["type"] == f"response.{outcome}"
    if outcome == "failed":
        assert "shutting down" in final["response"]["error"]["message"]
    else:
        assert final["response"]["output"][0]["content"][0]["text"].startswith("part 0 part 1")
    # The database was flushed and closed: the response is there, as it ended.
    with sqlite3.connect(tmp_path / "state" / "bridge.db") as db:
        stored = db.execute(
            "SELECT status FROM responses WHERE id = ?", (final["response"]["id"],)
        ).fetchone()
        assert stored == (outcome,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ---- readiness -----------------------------------------------------------------------


def rename_table(database: Path, old: str, new: str) -> None:
    with sqlite3.connect(database) as db:
        db.execute(f"ALTER TABLE {old} RENAME TO {new}")


async def test_a_long_write_of_the_bridges_own_is_no_locked_database(bridge: TestClient) -> None:
    # Under 64 fast streams the writer's thread, kept waiting for the GIL by a busy loop,
    # held the write lock past what /readyz's probe waits for it (250 ms): a quarter of the
    # /readyz answers were 503 "database is locked", from a bridge writing every turn.
    assert (await bridge.get("/readyz")).status == 200
    store = bridge.server.app[STORE]  # type: ignore[union-attr]

    def long_write(db: sqlite3.Connection) -> None:
        with transaction(db):
            time.sleep(0.8)

    writing = asyncio.ensure_future(store._write_raw(long_write))
    await asyncio.sleep(0.2)
    ready = await bridge.get("/readyz")
    body = await ready.json()
    await writing
    assert ready.status == 200, body
    assert body["database"] == "ok"


async def test_readyz_reports_a_database_that_cannot_be_written(
    bridge: TestClient, fake_upstream: FakeUpstream, state_directory: Path
) -> None:
    ready = await bridge.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"
    # Break the schema behind the bridge's back: the next turn cannot be stored. (In a
    # thread: the bridge's own writes must go on meanwhile, as with another process.)
    await asyncio.to_thread(rename_table, state_directory / "bridge.db", "responses", "gone")
    fake_upstream.script(thinking_text_reply([], ["still answered"]))
    answered = await bridge.post("/v1/responses", json={"model": MODEL, "input": "x"})
    assert answered.status == 200  # the answer reaches the client all the same
    assert (await answered.json())["output"][0]["content"][0]["text"] == "still answered"
    unready = await bridge.get("/readyz")
    assert unready.status == 503
    assert "last write failed" in (await unready.json())["database"]
    # Once the fault is gone, readiness returns without another turn (a balancer that took
    # the bridge out sends none), and the turn that waited in the spool is stored.
    await asyncio.to_thread(rename_table, state_directory / "bridge.db", "gone", "responses")
    await ready_again(bridge.get)
    answer = await answered.json()
    assert (await bridge.get(f"/v1/responses/{answer['id']}")).status == 200


# ---- client keys and exposure --------------------------------------------------------


async def test_client_keys_are_required_when_configured(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    app = create_app(bridge_config(fake_upstream.url), client_keys=("key-one", "key-two"))
    client = await aiohttp_client(app)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-one"}):
        refused = await client.get("/v1/models", headers=headers)
        assert refused.status == 401
        assert (await refused.json())["error"]["code"] == "invalid_api_key"
    accepted = await client.get("/v1/models", headers={"Authorization": "Bearer key-two"})
    assert accepted.status == 200
    assert (await client.get("/healthz")).status == 200  # liveness needs no key
    assert (await client.get("/readyz")).status == 200


def test_client_keys_come_from_the_environment() -> None:
    from bridge.config_env import resolve_client_keys

    config = parse_config('[server]\napi_keys_env = "BRIDGE_KEYS"\n', "c.toml")
    assert resolve_client_keys(config, {"BRIDGE_KEYS": "a, b  c"}) == ("a", "b", "c")
    with pytest.raises(ConfigError, match="BRIDGE_KEYS"):
        resolve_client_keys(config, {})


def test_listening_beyond_loopback_needs_keys_or_consent() -> None:
    config = parse_config("", "c.toml")
    for host in ("127.0.0.1", "127.8.9.10", "::1", "localhost"):
        assert is_loopback(host)
        check_exposure(config, host, ())
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        check_exposure(config, "0.0.0.0", ())
    check_exposure(config, "0.0.0.0", ("a-key",))
    allowed = parse_config("[server]\nallow_remote_without_auth = true\n", "c.toml")
    check_exposure(allowed, "0.0.0.0", ())


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    import subprocess

    config = write_bridge_config(tmp_path, "http://127.0.0.1:9")
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--config", str(config), "--host", "0.0.0.0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 3
    assert "refusing to listen on 0.0.0.0" in result.stderr


async def test_client_key_is_forwarded_only_when_the_provider_opts_in(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    for forward, expected in (("false", "Bearer provider-key"), ("true", "Bearer users-own-key")):
        config = bridge_config(fake_upstream.url, provider=f"forward_client_key = {forward}")
        client = await aiohttp_client(create_app(config, {"fake": "provider-key"}))
        fake_upstream.script(thinking_text_reply([], ["x"]))
        await (
            await client.post(
                "/v1/responses",
                json={"model": MODEL, "input": "x"},
                headers={"Authorization": "Bearer users-own-key"},
            )
        ).read()
        assert fake_upstream.headers[-1]["Authorization"] == expected


async def test_a_cookie_one_client_was_given_never_goes_with_another_clients_request(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    """The provider's connection pool is shared, its cookies are not: a cookie set on one
    client's answer (a load balancer's affinity, a CDN's bot check) would otherwise go
    upstream with every later request, whoever sends it. (Addressed by name: a cookie jar
    takes no cookies from an IP address.)"""
    by_name = fake_upstream.url.replace("127.0.0.1", "localhost")
    config = bridge_config(by_name, provider="forward_client_key = true")
    client = await aiohttp_client(create_app(config, {}))
    given = thinking_text_reply([], ["x"])
    given.headers["Set-Cookie"] = "affinity=alice-node-7; Path=/; Max-Age=3600"
    fake_upstream.script(given, thinking_text_reply([], ["y"]))
    for key in ("alice-key", "bob-key"):
        response = await client.post(
            "/v1/responses",
            json={"model": MODEL, "input": "x"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status == 200, await response.text()
        answer = await response.json()
        assert answer["status"] == "completed", answer.get("error")
    assert fake_upstream.headers[1]["Authorization"] == "Bearer bob-key"
    assert "Cookie" not in fake_upstream.headers[1], fake_upstream.headers[1]["Cookie"]


# ---- logs ----------------------------------------------------------------------------


async def test_logs_never_hold_the_api_key_and_bodies_only_when_asked(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-very-secret-4242"
    for log_bodies in (False, True):
        config = bridge_config(fake_upstream.url, server=f"log_bodies = {str(log_bodies).lower()}")
        client = await aiohttp_client(create_app(config, {"fake": secret}))
        fake_upstream.script(thinking_text_reply(["thought"], ["the private answer"]))
        caplog.clear()
        with caplog.at_level("DEBUG"):
            await (
                await client.post(
                    "/v1/responses", json={"model": MODEL, "input": "my private question"}
                )
            ).read()
        text = "\n".join(record.getMessage() for record in caplog.records)
        assert secret not in text
        assert ("my private question" in text) is log_bodies
        assert ("the private answer" in text) is log_bodies
