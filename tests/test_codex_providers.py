"""The real Codex CLI against strict fakes of DeepSeek, Gemini 3 and MiniMax M2.

Each fake refuses a replayed turn whose reasoning (Gemini: whose thought signature) is
missing or altered, as its provider does (tests/provider_fakes.py); a Codex session that
goes on through here is one the real provider would have kept taking.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from bridge import codex_config
from bridge.app import create_app
from bridge.config_load import load_config
from tests.codex_cli import (
    CodexHome,
    last_user_text,
    replayed_assistant,
    socket_turns,
    websocket_home,
)
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, Reply
from tests.processes import BridgeProcess, free_port
from tests.provider_fakes import Call, DeepSeek, Gemini, MiniMax, StrictProvider


def shell(command: str) -> str:
    return json.dumps({"cmd": command})


async def test_deepseek_a_reasoning_less_tool_turn_and_the_effort_toggle(
    codex: str,
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    """DeepSeek V4 answers a tool call with an empty reasoning_content and nothing more;
    later turns, at effort "none" (thinking disabled) and back at "high", must all be
    taken."""
    rules = DeepSeek()
    fake_upstream.rules = rules
    config = bridge_config(fake_upstream.url, provider='profile = "deepseek"')
    server = await aiohttp_server(create_app(config))
    home = CodexHome(codex, tmp_path, str(server.make_url("")).rstrip("/"))

    def respond(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return rules.turn(reasoning="It is made.", text="Made a.txt.")
        task = last_user_text(body)
        if "make a" in task:
            return rules.turn(calls=[Call("call_a", "exec_command", shell("printf a > a.txt"))])
        if "make b" in task:
            return rules.turn(calls=[Call("call_b", "exec_command", shell("printf b > b.txt"))])
        return rules.turn(reasoning="Recall both.", text="I made a.txt and b.txt.")

    fake_upstream.responder = respond
    first = await home.run("-m", MODEL, "make a")
    assert first.returncode == 0, first.output
    assert (home.workdir / "a.txt").read_text() == "a"
    second = await home.run("-c", 'model_reasoning_effort="none"', "resume", "--last", "make b")
    assert second.returncode == 0, second.output
    assert (home.workdir / "b.txt").read_text() == "b"
    toggled = next(b for b in fake_upstream.requests if "make b" in last_user_text(b))
    assert toggled["thinking"] == {"type": "disabled"}, toggled.get("reasoning_effort")
    third = await home.run("-c", 'model_reasoning_effort="high"', "resume", "--last", "recap")
    assert third.returncode == 0, third.output
    assert "I made a.txt and b.txt." in third.stdout
    last = fake_upstream.requests[-1]
    assert last["thinking"] == {"type": "enabled"}
    assert replayed_assistant(last, "call_a")["reasoning_content"] == ""
    assert replayed_assistant(last, "call_b")["reasoning_content"] == ""
    assert rules.refused == []


def loop(rules: StrictProvider) -> Callable[[dict[str, Any]], Reply]:
    """Parallel shell calls, then apply_patch, then the answer; a recap when resumed."""
    patch = "*** Begin Patch\n*** Add File: third.txt\n+patched\n*** End Patch\n"

    def turn(
        body: dict[str, Any], thought: str, calls: list[Call] | None, text: str | None
    ) -> Reply:
        if isinstance(rules, Gemini):
            return rules.turn(thought=thought, calls=calls, text=text)
        assert isinstance(rules, MiniMax)
        return rules.turn(body, reasoning=thought, calls=calls, text=text)

    def respond(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]
        if last["role"] == "tool" and last["tool_call_id"] == "call_ap":
            return turn(body, "All three exist.", None, "Made three files.")
        if last["role"] == "tool":
            return turn(
                body,
                "Now the third with apply_patch.",
                [Call("call_ap", "apply_patch", json.dumps({"input": patch}))],
                None,
            )
        if "make three files" in last_user_text(body):
            return turn(
                body,
                "Two files first, in parallel.",
                [
                    Call("call_p1", "exec_command", shell("printf 1 > one.txt")),
                    Call("call_p2", "exec_command", shell("printf 2 > two.txt")),
                ],
                None,
            )
        return turn(body, "Recall.", None, "I made one.txt, two.txt and third.txt.")

    return respond


@pytest.mark.parametrize("provider", ["gemini", "minimax"])
@pytest.mark.parametrize("transport", ["websocket", "http"])
async def test_a_tool_loop_survives_kill_9_and_resume(
    codex: str, tmp_path: Path, fake_upstream: FakeUpstream, provider: str, transport: str
) -> None:
    rules: StrictProvider = Gemini() if provider == "gemini" else MiniMax()
    fake_upstream.rules = rules
    fake_upstream.responder = loop(rules)
    config_file = tmp_path / "bridge.toml"
    config_file.write_text(
        f'[store]\npath = "{tmp_path / "state" / "bridge.db"}"\n'
        f'[providers.fake]\nbase_url = "{fake_upstream.url}/v1"\nprofile = "{provider}"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\ncontext_window = 64000\n'
    )
    catalog = tmp_path / "catalog.json"
    config = load_config(config_file)
    assert codex_config.run(config, model=None, catalog_path=catalog, codex=codex) == 0
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(config_file, free_port(), log=log, log_level="info")
    await bridge.start()
    try:
        if transport == "websocket":
            home = websocket_home(codex, tmp_path, bridge, config_file, catalog)
        else:
            home = CodexHome(codex, tmp_path, bridge.url)
            home.write_config(catalog)
        first = await home.run("-m", MODEL, "make three files")
        assert first.returncode == 0, first.output
        assert "Made three files." in first.stdout
        assert (home.workdir / "third.txt").read_text() == "patched\n"
        if transport == "websocket":
            assert [t for t in socket_turns(log) if t["tokens"] != "0+0"], log.read_text()
        await bridge.kill()
        await bridge.start()
        second = await home.run("resume", "--last", "what did you make")
        assert second.returncode == 0, second.output
        assert "I made one.txt, two.txt and third.txt." in second.stdout
        resumed = fake_upstream.requests[-1]
        for call_id in ("call_p1", "call_ap"):
            assistant = replayed_assistant(resumed, call_id)
            if isinstance(rules, Gemini):
                signature = assistant["tool_calls"][0]["extra_content"]["google"]
                assert signature["thought_signature"] == rules.signatures[call_id]
            else:
                assert isinstance(rules, MiniMax)
                assert assistant["reasoning_details"] == rules.details_of_call[call_id]
        assert rules.refused == []
    finally:
        await bridge.stop()
