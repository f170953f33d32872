"""Fixtures: the fake upstream and the bridge in front of it, both real aiohttp servers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.config import Config
from bridge.config_load import parse_config
from bridge.event_loop import loop_factory
from bridge.providers import PROFILE_NAMES
from bridge.sse import SSEParser
from bridge.store.backends import open_store
from bridge.store.protocol import Opening, Store
from bridge.store.statements import execute, fetch
from tests.fake_upstream import FakeUpstream
from tests.postgres import PASSWORD as PG_PASSWORD
from tests.postgres import Cluster
from tests.processes import REPO, BridgeProcess, free_port

MODEL = "deepseek-v4-pro"
# The profiles of providers reached over HTTP (the demo answers inside the bridge).
UPSTREAM_PROFILES = tuple(name for name in PROFILE_NAMES if name != "demo")


def carried_error(event: Any) -> str:
    """What a terminal event's response says went wrong: its status, error and
    incomplete_details (an error event's own error), for an assertion's message."""
    if not isinstance(event, dict):  # an SDK event object
        event = event.model_dump() if hasattr(event, "model_dump") else vars(event)
    response = event.get("response") or {}
    return json.dumps(
        {
            "type": event.get("type"),
            "status": response.get("status"),
            "error": response.get("error") or event.get("error"),
            "incomplete_details": response.get("incomplete_details"),
        }
    )


def assert_ends(events: Any, expected: str = "response.completed") -> Any:
    """That a stream (its events, or its last event) ended with `expected`; when not, the
    failure names the event it ended with and the error its response carried."""
    final = events[-1] if isinstance(events, list) else events
    kind = final.get("type") if isinstance(final, dict) else getattr(final, "type", None)
    assert kind == expected, f"expected {expected}, the stream ended with {carried_error(final)}"
    return final


async def read_events(response: ClientResponse) -> list[dict[str, Any]]:
    """A streamed answer's events, decoded: a 200 event stream ending with `[DONE]`."""
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    parser = SSEParser()
    events = parser.feed(await response.read()) + parser.finish()
    return decode_stream([event.data for event in events])


def decode_stream(data: list[bytes]) -> list[dict[str, Any]]:
    """A stream's event payloads, decoded; it ends with the `[DONE]` sentinel (and has it
    nowhere else)."""
    assert data and data[-1] == b"[DONE]", data[-1:]
    assert b"[DONE]" not in data[:-1]
    return [json.loads(payload) for payload in data[:-1]]


# The [upstream] lines every test bridge starts from; a key the test gives replaces its line.
UPSTREAM_DEFAULTS = {
    "idle_timeout": "5.0",
    "connect_timeout": "2.0",
    "max_retries": "0",  # tests of retries turn them on themselves
}


def bridge_config(
    upstream_url: str,
    *,
    server: str = "",
    store: str = "",
    upstream: str = "",
    websocket: str = "",
    debug: str = "",
    provider: str = "",
    model: str = "",
    extra: str = "",
) -> Config:
    """A config for the bridge in front of a fake upstream at `upstream_url`, through the
    parser users' configs go through; the keyword arguments are TOML lines added to those
    tables (`extra`: whole tables at the end)."""
    given = tomllib.loads(upstream)
    defaults = "\n".join(f"{k} = {v}" for k, v in UPSTREAM_DEFAULTS.items() if k not in given)
    # Written only when given, so that `extra` may still hold these tables whole.
    tables = "".join(
        f"[{name}]\n{lines}\n\n"
        for name, lines in (("websocket", websocket), ("debug", debug))
        if lines
    )
    return parse_config(
        f"""
[server]
{server}

[store]
{store}

[upstream]
{defaults}
{upstream}

{tables}
[providers.fake]
base_url = "{upstream_url}/v1"
{provider}

[models."{MODEL}"]
provider = "fake"
upstream_model = "fake-thinker"
{model}
{extra}
""",
        "test-config.toml",
    )


@pytest.fixture(autouse=True)
def state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's database goes to its own directory ([store] path is relative to it)."""
    directory = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(directory))
    return directory


async def locked(database: Path) -> sqlite3.Connection:
    """Another process's exclusive lock on a SQLite file, as its own connection (roll back
    and close it to let go); taken off the loop, so the bridge's own work goes on."""
    blocker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")
    return blocker


@pytest.fixture
async def fake_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> FakeUpstream:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


# The environment variable the PostgreSQL tests keep the test server's password in.
PG_PASSWORD_ENV = "RB_TEST_PG_PASSWORD"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]] | None:
    """The tests run on the loop the bridge runs on (bridge.event_loop)."""
    factory = loop_factory()
    return {"uvloop": factory} if factory is not None else None


# The databases the store runs on.
BACKENDS = ["sqlite", "postgres"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of the store itself (through the `opened_store` fixture) runs on each
    backend; so does every test that uses the store through a bridge (the `store` fixture)
    in a module that sets STORE_BACKENDS."""
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        return
    backends = getattr(metafunc.module, "STORE_BACKENDS", None)
    if "opened_store" in metafunc.fixturenames:
        backends = BACKENDS
    if backends and "store" in metafunc.fixturenames:
        metafunc.parametrize("store", backends, indirect=True)


@pytest.fixture
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The [store] lines of the bridge's config: "" (SQLite) unless the test runs on
    PostgreSQL too (see pytest_generate_tests), then a new database on the test server."""
    backend = getattr(request, "param", "sqlite")
    if backend != "postgres":
        return ""
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv(PG_PASSWORD_ENV, PG_PASSWORD)
    return f'url = "{url}"\npassword_env = "{PG_PASSWORD_ENV}"'


@pytest.fixture
async def opened_store(store: str, state_directory: Path) -> AsyncIterator[Store]:
    """The store itself (bridge.store.protocol.Store), opened as `serve` opens it, on a new
    SQLite file or PostgreSQL database: each test that takes it runs on both."""
    config = parse_config(f"[store]\n{store}", "test-config.toml")
    opened = await open_store(
        config,
        os.environ,
        opening=Opening.SERVE_MIGRATING,
        path=state_directory / "bridge.db",
        check=False,
    )
    try:
        yield opened
    finally:
        await opened.close()


async def database_rows(store: Store, sql: str, *params: Any) -> list[Any]:
    """Rows as the database holds them (SQL in the store's dialect-neutral form, `?`
    placeholders), read on the store's own connection, on either backend: for what the
    protocol does not show."""
    found = await store._read(fetch(sql, params))  # type: ignore[attr-defined]
    return [tuple(row) for row in found]


async def change_rows(store: Store, sql: str, *params: Any) -> int:
    """Rows changed behind the store's back (as database_rows reads them): how many."""
    changed: int = await store._write(lambda: execute(sql, params))  # type: ignore[attr-defined]
    return changed


@pytest.fixture
async def bridge(
    fake_upstream: FakeUpstream, aiohttp_client: Callable[..., Awaitable[TestClient]], store: str
) -> TestClient:
    app = create_app(bridge_config(fake_upstream.url, store=store))
    return await aiohttp_client(app)


@pytest.fixture
async def bridge_server(
    fake_upstream: FakeUpstream, aiohttp_server: Callable[..., Awaitable[TestServer]], store: str
) -> TestServer:
    """The bridge on a real loopback port, for clients such as the openai SDK."""
    return await aiohttp_server(create_app(bridge_config(fake_upstream.url, store=store)))


@pytest.fixture
async def sdk(bridge_server: TestServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official openai SDK pointed at the bridge."""
    async with openai.AsyncOpenAI(
        base_url=str(bridge_server.make_url("/v1")), api_key="unused", max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def bridge_process(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> AsyncIterator[BridgeProcess]:
    """The bridge as its own process (`python -m bridge serve`), killable and restartable."""
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "state" / "bridge.db"}"\n'
        f'[providers.fake]\nbase_url = "{fake_upstream.url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\n'
    )
    bridge = BridgeProcess(config, free_port())
    try:
        await bridge.start()
        yield bridge
    finally:
        await bridge.stop()


def codex_binary() -> str | None:
    """The Codex CLI: $CODEX_BIN, else the one npm put in node_modules/, else on PATH."""
    configured = os.environ.get("CODEX_BIN")
    if configured:
        return configured
    local = REPO / "node_modules" / ".bin" / "codex"
    if local.exists():
        return str(local)
    return shutil.which("codex")


@pytest.fixture(scope="module")
def codex() -> str:
    """The Codex CLI; its tests skip without it, unless REQUIRE_CODEX=1 (.ci/run)."""
    binary = codex_binary()
    if binary is None:
        message = "Codex CLI not installed (npm install --no-save @openai/codex@0.169.0)"
        if os.environ.get("REQUIRE_CODEX") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return binary


# The JavaScript clients' scripts (run with node, from the repository, where npm put them).
JS = Path(__file__).parent / "js"


def node() -> str:
    """node, with npm's JavaScript clients in the repository (openai's stands for them); the
    tests that use them skip without them, unless REQUIRE_JS_CLIENTS=1 (.ci/run)."""
    binary = shutil.which("node")
    missing = binary is None or not (REPO / "node_modules" / "openai").exists()
    if missing:
        message = (
            "node and npm's openai, ai, @ai-sdk/openai are needed (npm install --no-save "
            "openai@7 openai6@npm:openai@6.46.0 ai@7 @ai-sdk/openai@4)"
        )
        if os.environ.get("REQUIRE_JS_CLIENTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    assert binary is not None
    return binary


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server for this test process (each xdist worker starts its own).
    Missing PostgreSQL skips the tests that need it, unless REQUIRE_POSTGRES=1 (.ci/run)."""
    # Directly under the temporary directory: as root the server runs as `postgres`, which
    # cannot enter pytest's private directories.
    root = Path(tempfile.mkdtemp(prefix="rb-postgres-"))
    cluster = Cluster(root)
    problem = cluster.start()
    if problem is not None:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL could not start: {problem}")
        pytest.skip(f"PostgreSQL could not start: {problem}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A new empty database on the test cluster (its URL, no password in it)."""
    return postgres_cluster.create_database()


# How long a bridge may take to say ready again once its database works (its health task
# tries every second).
READY_AGAIN_SECONDS = 5.0


async def ready_again(get: Callable[[str], Any], seconds: float = READY_AGAIN_SECONDS) -> float:
    """Poll /readyz through `get` (a TestClient's or a session's, taking a path or a URL)
    until it answers 200, with no other request meanwhile; the seconds it took."""
    started = time.monotonic()
    body: Any = None
    while time.monotonic() - started < seconds:
        async with get("/readyz") as response:
            body = await response.json()
            if response.status == 200:
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz not ready {seconds}s after the fault ended: {body}")
