"""The real Codex CLI in tests: a CODEX_HOME of its own pointed at a bridge, Codex runs,
and the tool-loop task several tests give it, with readers of what reached the upstream."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit

from bridge import codex_config
from bridge.config import Config
from bridge.config_load import parse_config
from tests.conftest import MODEL
from tests.fake_upstream import Reply, thinking_text_reply, tool_call_reply
from tests.processes import BridgeProcess, output_of

CODEX_TIMEOUT = 90.0
CLIENT_KEY_ENV = "BRIDGE_TEST_CLIENT_KEY"


@dataclass
class CodexResult:
    """What a Codex run ended with: its exit code, its output and how long it took."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class CodexHome:
    """A CODEX_HOME of its own, pointed at a bridge, and a working directory."""

    def __init__(self, codex: str, root: Path, bridge_url: str) -> None:
        self.codex = codex
        self.home = root / "codex-home"
        self.workdir = root / "work"
        self.home.mkdir()
        self.workdir.mkdir()
        self.bridge_url = bridge_url
        self.write_config()

    def write_config(
        self, catalog: Path | None = None, *, default_retries: bool = False, idle_ms: int = 30000
    ) -> None:
        """Codex's config; `default_retries` keeps Codex's own retry settings (5 stream
        retries with backoff), as a user has them."""
        lines = [
            f'model = "{MODEL}"',
            'model_provider = "bridge"',
        ]
        if catalog is not None:
            lines.append(f"model_catalog_json = {json.dumps(str(catalog))}")
        lines += [
            "[model_providers.bridge]",
            'name = "bridge"',
            f'base_url = "{self.bridge_url}/v1"',
            f'env_key = "{CLIENT_KEY_ENV}"',
            'wire_api = "responses"',
            f"stream_idle_timeout_ms = {idle_ms}",
        ]
        if not default_retries:
            lines += ["request_max_retries = 0", "stream_max_retries = 0"]
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    async def run(self, *args: str) -> CodexResult:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
        env.update(
            {
                "CODEX_HOME": str(self.home),
                CLIENT_KEY_ENV: "test-client-key",
                # The variable `codex-config` names.
                codex_config.CLIENT_KEY_ENV: "test-client-key",
            }
        )
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            self.codex,
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            *args,
            cwd=self.workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await output_of(process, CODEX_TIMEOUT)
        assert process.returncode is not None and err is not None
        return CodexResult(
            process.returncode, out.decode(), err.decode(), time.monotonic() - started
        )


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message of a Chat Completions request ("" if none)."""
    for message in reversed(body["messages"]):
        if message["role"] == "user":
            content = message["content"]
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def replayed_assistant(body: dict[str, Any], call_id: str) -> dict[str, Any]:
    """The assistant message of a Chat Completions request that made the call `call_id`."""
    messages: list[dict[str, Any]] = body["messages"]
    for message in messages:
        if message["role"] == "assistant" and any(
            call["id"] == call_id for call in message.get("tool_calls") or ()
        ):
            return message
    raise AssertionError(f"no assistant message with call {call_id} was sent upstream")


# ---- the WebSocket mode (supports_websockets = true, as codex-config writes it) ----------------


def config_on_port(config_file: Path, port: int) -> Config:
    """The bridge's config file as `serve --port PORT` runs it, read by the users' parser
    with [server] port set (codex-config writes the URL from it)."""
    document = tomlkit.parse(config_file.read_text())
    server = document.get("server")
    if server is None:
        server = tomlkit.table()
        document["server"] = server
    server["port"] = port
    return parse_config(tomlkit.dumps(document), str(config_file))


def websocket_home(
    codex: str,
    root: Path,
    bridge: BridgeProcess,
    config_file: Path,
    catalog: Path | None,
    *,
    default_retries: bool = False,
) -> CodexHome:
    """A CODEX_HOME whose provider section is the one `codex-config` prints."""
    home = CodexHome(codex, root, bridge.url)
    config = config_on_port(config_file, bridge.port)
    snippet = codex_config.provider_snippet(config, MODEL, catalog)
    assert "supports_websockets = true" in snippet
    if not default_retries:
        # Appended keys land in the provider's table, the snippet's last.
        snippet += "request_max_retries = 0\nstream_max_retries = 0\n"
    (home.home / "config.toml").write_text(snippet)
    return home


def socket_turns(log: Path) -> list[dict[str, str]]:
    """The bridge's access-log lines for WebSocket turns, as key=value fields."""
    turns = []
    for line in log.read_text().splitlines():
        if " WS /v1/responses " not in line:
            continue
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        fields["status"] = line.split(" WS /v1/responses ")[1].split()[0]
        turns.append(fields)
    return turns


# ---- the tool-loop task several tests give Codex -------------------------------------------------

PARALLEL_REASONING = "Two files first, in parallel: two exec_command calls."
PATCH_REASONING = "Now patch the third file in with apply_patch."
PATCH = "*** Begin Patch\n*** Add File: third.txt\n+patched over the socket\n*** End Patch\n"


def tool_loop(body: dict[str, Any]) -> Reply:
    """The task: parallel shell calls, then apply_patch, then the answer."""
    last = body["messages"][-1]
    if last["role"] == "tool" and last["tool_call_id"] == "call_ap":
        return thinking_text_reply(["All three exist."], ["Made three files."])
    if last["role"] == "tool":
        return tool_call_reply(
            PATCH_REASONING, [("call_ap", "apply_patch", [json.dumps({"input": PATCH})])]
        )
    if "make three files" in last_user_text(body):
        return tool_call_reply(
            PARALLEL_REASONING,
            [
                ("call_p1", "exec_command", [json.dumps({"cmd": "printf 1 > one.txt"})]),
                ("call_p2", "exec_command", [json.dumps({"cmd": "printf 2 > two.txt"})]),
            ],
        )
    return thinking_text_reply(["Recall."], ["I made one.txt, two.txt and third.txt."])
