"""Fixtures: the fake upstream and the bridge in front of it, both real aiohttp servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.config import Config, parse_config
from tests.fake_upstream import FakeUpstream
from tests.processes import BridgeProcess, free_port

MODEL = "deepseek-v4-pro"


def bridge_config(
    upstream_url: str, *, server: str = "", store: str = "", upstream: str = "", model: str = ""
) -> Config:
    """A config for the bridge in front of a fake upstream at `upstream_url`; the keyword
    arguments are TOML lines added to those tables."""
    return parse_config(
        f"""
[server]
{server}

[store]
{store}

[upstream]
idle_timeout = 5.0
connect_timeout = 2.0
{upstream or "max_retries = 0  # tests of retries turn them on themselves"}

[providers.fake]
base_url = "{upstream_url}/v1"

[models."{MODEL}"]
provider = "fake"
upstream_model = "fake-thinker"
{model}
""",
        "test-config.toml",
    )


@pytest.fixture(autouse=True)
def state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's database goes to its own directory ([store] path is relative to it)."""
    directory = tmp_path / "state"
    monkeypatch.setenv("STATE_DIRECTORY", str(directory))
    return directory


@pytest.fixture
async def fake_upstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> FakeUpstream:
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
async def bridge(
    fake_upstream: FakeUpstream, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> TestClient:
    app = create_app(bridge_config(fake_upstream.url))
    return await aiohttp_client(app)


@pytest.fixture
async def bridge_server(
    fake_upstream: FakeUpstream, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> TestServer:
    """The bridge on a real loopback port, for clients such as the openai SDK."""
    return await aiohttp_server(create_app(bridge_config(fake_upstream.url)))


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
