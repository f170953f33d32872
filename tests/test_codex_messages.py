"""What the real Codex prints when its setup is wrong, as the README's table quotes it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from bridge import codex_config
from bridge.config_env import CLIENT_KEY_ENV
from bridge.config_load import parse_config
from tests.processes import REPO, free_port, output_of

README = (REPO / "README.md").read_text()
REFUSED = "Reconnecting... waiting for network"
MISSING_KEY = f"Missing environment variable: `{CLIENT_KEY_ENV}`"
SECONDS = 30.0


async def codex_until(codex: str, home: Path, wanted: str, **env: str) -> str:
    """Run `codex exec` until it prints `wanted` or ends (bounded); what it printed."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    environ.pop(CLIENT_KEY_ENV, None)
    environ.update(CODEX_HOME=str(home), **env)
    process = await asyncio.create_subprocess_exec(
        codex,
        *("exec", "--skip-git-repo-check", "hi"),
        cwd=home,
        env=environ,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Its own process group: npm's `codex` starts the real binary as a child, which
        # holds the output pipe; both are stopped together.
        start_new_session=True,
    )
    assert process.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(SECONDS):
            while wanted.encode() not in seen:
                line = await process.stdout.readline()
                if not line:
                    break
                seen += line
    except TimeoutError:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        # To the pipe's end, which closes it (uvloop warns at loop close about one left open).
        rest, _ = await output_of(process, 10)
        seen += rest
    return seen.decode(errors="replace")


def codex_home(tmp_path: Path, port: int) -> Path:
    """A Codex set up by codex-config for a bridge on `port` (without the WebSocket mode,
    whose fallback first takes five slow retries)."""
    config = parse_config(f"[server]\nport = {port}\n[websocket]\nenabled = false\n{DEMO}")
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(codex_config.provider_snippet(config, "demo", None))
    return home


DEMO = '[providers.demo]\nprofile = "demo"\n[models.demo]\nprovider = "demo"\n'


async def test_codex_at_a_port_nothing_listens_on(codex: str, tmp_path: Path) -> None:
    home = codex_home(tmp_path, free_port())
    said = await codex_until(codex, home, REFUSED, **{CLIENT_KEY_ENV: "local"})
    assert REFUSED in said, said[-2000:]
    assert f"`{REFUSED}`" in README


async def test_codex_without_the_client_key_variable(codex: str, tmp_path: Path) -> None:
    home = codex_home(tmp_path, free_port())
    said = await codex_until(codex, home, MISSING_KEY)
    assert MISSING_KEY in said, said[-2000:]
    assert f"`Missing environment variable: {CLIENT_KEY_ENV}`" in README
