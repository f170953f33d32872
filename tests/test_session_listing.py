"""`sessions list` and `sessions export` as a person uses them after real turns."""

from __future__ import annotations

import asyncio
import shlex
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from bridge.app import create_app
from bridge.config_load import parse_config
from tests.conftest import assert_ends
from tests.processes import REPO, output_of

CONFIG = """
[store]
path = "{database}"

[providers.demo]
profile = "demo"

[models.demo]
provider = "demo"
"""


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bridge", "sessions", *args, "--config", str(config)),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await output_of(process, 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def until_final(ws: Any) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = await ws.receive_json()
        if event["type"] in ("response.completed", "response.failed", "error"):
            return event


async def test_codex_warm_ups_are_marked_in_the_list(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(database=tmp_path / "bridge.db"))
    client = await aiohttp_client(create_app(parse_config(config.read_text(), str(config))))
    ws = await client.ws_connect("/v1/responses")
    await ws.send_json(
        {"type": "response.create", "model": "demo", "input": "hi", "generate": False}
    )
    warm = await until_final(ws)
    assert_ends(warm)
    warm_id = warm["response"]["id"]
    await ws.send_json(
        {
            "type": "response.create",
            "model": "demo",
            "input": "hi",
            "previous_response_id": warm_id,
        }
    )
    real = await until_final(ws)
    assert_ends(real)
    await ws.close()
    code, out, err = await cli(config, "list")
    assert code == 0, err
    lines = {line.split()[2]: line for line in out.splitlines()[1:]}
    assert lines[warm_id].split()[4] == "warm-up"
    assert lines[real["response"]["id"]].split()[4] == "completed"


async def test_export_into_a_reader_that_stops_early_is_quiet(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """`sessions export ID | head`: no BrokenPipe traceback, exit 0."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(database=tmp_path / "bridge.db"))
    client = await aiohttp_client(create_app(parse_config(config.read_text(), str(config))))
    long_input = "many words " * 30_000  # far more than a pipe holds
    response = await client.post("/v1/responses", json={"model": "demo", "input": long_input})
    assert response.status == 200
    response_id = (await response.json())["id"]
    command = (
        f"{shlex.quote(sys.executable)} -m bridge sessions export {response_id} "
        f"--config {shlex.quote(str(config))} | head -c 100"
    )
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-o",
        "pipefail",
        "-c",
        command,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await output_of(process, 60)
    assert out.startswith(b"{") and len(out) == 100
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert process.returncode == 0, err.decode()
