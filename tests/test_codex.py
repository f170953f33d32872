"""The real Codex CLI through the bridge, against a strict thinking-model fake upstream.

Needs `@openai/codex@0.169.0` (`npm install --no-save @openai/codex@0.169.0` in the repo puts
it in node_modules/, where .ci/run installs it). Without it these tests skip, unless
REQUIRE_CODEX=1 (set by .ci/run) makes a missing Codex a failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bridge import codex_config
from bridge.app import create_app
from bridge.config_load import load_config
from tests.codex_cli import (
    PARALLEL_REASONING,
    PATCH_REASONING,
    CodexHome,
    last_user_text,
    replayed_assistant,
    socket_turns,
    tool_loop,
    websocket_home,
)
from tests.conftest import MODEL, bridge_config
from tests.fake_upstream import FakeUpstream, Reply, thinking_text_reply, tool_call_reply
from tests.processes import BridgeProcess, free_port


def tool_result(body: dict[str, Any], call_id: str) -> str:
    for message in body["messages"]:
        if message["role"] == "tool" and message["tool_call_id"] == call_id:
            return str(message["content"])
    raise AssertionError(f"no tool message for {call_id} was sent upstream")


def tool_names(body: dict[str, Any]) -> set[str]:
    return {tool["function"]["name"] for tool in body.get("tools", [])}


Responder = Callable[[dict[str, Any]], Reply]


def scripted(task: str, first: Reply, after_tool: Reply) -> Responder:
    """The task gets `first`; the turn after a tool result gets `after_tool`; others: text."""

    def respond(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return after_tool
        if task in last_user_text(body):
            return first
        return thinking_text_reply([], ["ok"])

    return respond


@pytest.fixture
async def bridge_url(
    fake_upstream: FakeUpstream, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> str:
    server = await aiohttp_server(create_app(bridge_config(fake_upstream.url)))
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def codex_home(codex: str, tmp_path: Path, bridge_url: str) -> CodexHome:
    return CodexHome(codex, tmp_path, bridge_url)


def requests_after_tool(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [body for body in fake.requests if body["messages"][-1]["role"] == "tool"]


async def test_a_shell_tool_turn(codex_home: CodexHome, fake_upstream: FakeUpstream) -> None:
    reasoning = "The user wants two files; two printf calls through exec_command, in parallel."
    fake_upstream.responder = scripted(
        "make the files",
        tool_call_reply(
            reasoning,
            [
                ("call_sh1", "exec_command", [json.dumps({"cmd": "printf hi > made.txt"})]),
                ("call_sh2", "exec_command", [json.dumps({"cmd": "printf yo > also.txt"})]),
            ],
        ),
        thinking_text_reply(["It worked."], ["Created made.txt and also.txt for you."]),
    )
    result = await codex_home.run("-m", MODEL, "make the files made.txt and also.txt")
    assert result.returncode == 0, result.output
    assert (codex_home.workdir / "made.txt").read_text() == "hi"
    assert (codex_home.workdir / "also.txt").read_text() == "yo"
    assert "Created made.txt and also.txt for you." in result.stdout
    (follow_up,) = requests_after_tool(fake_upstream)
    assistant = replayed_assistant(follow_up, "call_sh1")
    assert assistant["reasoning_content"] == reasoning
    # Both parallel calls come back in one assistant message, their results after it.
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_sh1", "call_sh2"]
    tool_messages = follow_up["messages"][-2:]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_sh1", "call_sh2"]
    assert "exec_command" in tool_names(follow_up)


async def write_catalog(
    codex: str, codex_home: CodexHome, fake: FakeUpstream, tmp_path: Path, context_window: int
) -> None:
    """The catalog `codex-config` writes, for a bridge config with this context window."""
    config_file = tmp_path / "bridge.toml"
    config_file.write_text(
        f'[providers.fake]\nbase_url = "{fake.url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\ncontext_window = {context_window}\n'
    )
    catalog = tmp_path / "catalog.json"
    exit_code = codex_config.run(
        load_config(config_file), model=None, catalog_path=catalog, codex=codex
    )
    assert exit_code == 0
    codex_home.write_config(catalog)


async def test_b_apply_patch_as_a_custom_tool(
    codex_home: CodexHome, fake_upstream: FakeUpstream, tmp_path: Path, codex: str
) -> None:
    await write_catalog(codex, codex_home, fake_upstream, tmp_path, 64000)
    patch = "*** Begin Patch\n*** Add File: patched.txt\n+patched by the model\n*** End Patch\n"
    fake_upstream.responder = scripted(
        "patch it",
        tool_call_reply(
            "A new file: apply_patch.", [("call_ap", "apply_patch", [json.dumps({"input": patch})])]
        ),
        thinking_text_reply([], ["Patched."]),
    )
    result = await codex_home.run("-m", MODEL, "patch it: add patched.txt")
    assert result.returncode == 0, result.output
    assert "fallback metadata" not in result.output
    assert (codex_home.workdir / "patched.txt").read_text() == "patched by the model\n"
    first = fake_upstream.requests[0]
    apply_patch = next(t for t in first["tools"] if t["function"]["name"] == "apply_patch")
    assert apply_patch["function"]["parameters"]["required"] == ["input"]
    (follow_up,) = requests_after_tool(fake_upstream)
    replayed = replayed_assistant(follow_up, "call_ap")["tool_calls"][0]["function"]
    assert json.loads(replayed["arguments"]) == {"input": patch}
    assert "patched.txt" in tool_result(follow_up, "call_ap")


async def test_c_resume_after_the_bridge_was_killed(
    codex: str, tmp_path: Path, bridge_process: BridgeProcess, fake_upstream: FakeUpstream
) -> None:
    home = CodexHome(codex, tmp_path, bridge_process.url)
    reasoning = "List the directory first; exec_command with ls."
    fake_upstream.responder = scripted(
        "look around",
        tool_call_reply(reasoning, [("call_ls", "exec_command", [json.dumps({"cmd": "ls"})])]),
        thinking_text_reply(["Nothing much."], ["The directory is empty."]),
    )
    first = await home.run("-m", MODEL, "look around")
    assert first.returncode == 0, first.output

    await bridge_process.kill()
    await bridge_process.start()

    fake_upstream.responder = scripted(
        "what did you find",
        thinking_text_reply(["Recall."], ["I found an empty directory."]),
        thinking_text_reply([], ["-"]),
    )
    second = await home.run("resume", "--last", "what did you find")
    assert second.returncode == 0, second.output
    assert "I found an empty directory." in second.stdout
    resumed = next(b for b in fake_upstream.requests if "what did you find" in last_user_text(b))
    assert replayed_assistant(resumed, "call_ls")["reasoning_content"] == reasoning


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            Reply(
                status=429,
                error_body={"error": {"message": "Rate limit reached for requests"}},
                headers={"Retry-After": "2"},
            ),
            "rate limit exceeded: upstream: rate limit reached for requests. please try again "
            "in 2 seconds.",
        ),
        (
            Reply(
                status=400,
                error_body={
                    "error": {
                        "message": "This model's maximum context length is 65536 tokens. "
                        "However, you requested 70000 tokens."
                    }
                },
            ),
            "ran out of room in the model's context window",
        ),
    ],
    ids=["rate-limit", "context-overflow"],
)
async def test_d_upstream_errors_are_codex_errors(
    codex_home: CodexHome, fake_upstream: FakeUpstream, reply: Reply, expected: str
) -> None:
    fake_upstream.responder = lambda body: reply
    result = await codex_home.run("-m", MODEL, "anything")
    assert result.returncode == 1, result.output
    assert expected in result.output.lower()
    assert result.seconds < 10, "Codex gives up at once (retries are off), it does not hang"


async def test_e_namespaced_call_returns_with_its_namespace(
    codex_home: CodexHome, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.responder = scripted(
        "close the helper",
        tool_call_reply(
            "Close agent nobody.",
            [("call_ns", "multi_agent_v1__close_agent", [json.dumps({"target": "nobody"})])],
        ),
        thinking_text_reply([], ["Closed (or there was nothing to close)."]),
    )
    result = await codex_home.run("-m", MODEL, "close the helper agent")
    assert result.returncode == 0, result.output
    first = fake_upstream.requests[0]
    assert "multi_agent_v1__close_agent" in tool_names(first)
    (follow_up,) = requests_after_tool(fake_upstream)
    call = replayed_assistant(follow_up, "call_ns")["tool_calls"][0]["function"]
    # Codex replayed it as close_agent in namespace multi_agent_v1, flattened again.
    assert call["name"] == "multi_agent_v1__close_agent"
    output = tool_result(follow_up, "call_ns")
    # The multi-agent handler itself answered: the call was routed by name and namespace.
    assert output.startswith("invalid agent id nobody"), output


async def test_f_codex_compaction_goes_through_the_bridge(
    codex_home: CodexHome, fake_upstream: FakeUpstream, tmp_path: Path, codex: str
) -> None:
    """Near the context window Codex compacts with an ordinary /responses call."""
    await write_catalog(codex, codex_home, fake_upstream, tmp_path, 8000)
    reasoning = "Run true, then see."
    full = 7800  # prompt tokens reported upstream: past Codex's compaction threshold

    def respond(body: dict[str, Any]) -> Reply:
        if "CONTEXT CHECKPOINT COMPACTION" in last_user_text(body):
            return thinking_text_reply(["Summarize."], ["Ran `true`; nothing else to do."])
        if body["messages"][-1]["role"] == "tool":
            return thinking_text_reply([], ["Done after compaction."], prompt_tokens=full)
        if "keep going" in last_user_text(body):
            return tool_call_reply(
                reasoning,
                [("call_cp", "exec_command", [json.dumps({"cmd": "true"})])],
                prompt_tokens=full,
            )
        return thinking_text_reply([], ["Done after compaction."])

    fake_upstream.responder = respond
    result = await codex_home.run("-m", MODEL, "keep going")
    assert result.returncode == 0, result.output
    assert "context compacted" in result.output
    compaction = next(
        body
        for body in fake_upstream.requests
        if "CONTEXT CHECKPOINT COMPACTION" in last_user_text(body)
    )
    assert replayed_assistant(compaction, "call_cp")["reasoning_content"] == reasoning


async def test_f2_codex_under_the_name_azure_asks_for_remote_compaction_and_is_told_no(
    codex_home: CodexHome, fake_upstream: FakeUpstream, tmp_path: Path, codex: str
) -> None:
    """Codex 0.169.0 compacts remotely ("v2") for a provider named azure: a /responses
    request ending in a compaction_trigger item, whose answer must be one compaction item.
    The bridge refuses it with a 400 that says why, which Codex shows; the model is not
    asked (docs/codex.md, Compaction)."""
    await write_catalog(codex, codex_home, fake_upstream, tmp_path, 8000)
    config = codex_home.home / "config.toml"
    config.write_text(
        config.read_text()
        .replace('model_provider = "bridge"', 'model_provider = "azure"')
        .replace("[model_providers.bridge]", "[model_providers.azure]")
        .replace('name = "bridge"', 'name = "azure"')
    )
    full = 7800  # prompt tokens reported upstream: past Codex's compaction threshold

    def respond(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "tool":
            return thinking_text_reply([], ["Done."], prompt_tokens=full)
        return tool_call_reply(
            "Run true.",
            [("call_az", "exec_command", [json.dumps({"cmd": "true"})])],
            prompt_tokens=full,
        )

    fake_upstream.responder = respond
    result = await codex_home.run("-m", MODEL, "keep going")
    assert "compaction_trigger items (remote compaction) are not supported" in result.output
    # The compaction request never reached the model.
    (asked,) = fake_upstream.requests  # the task's first turn; Codex then stopped
    assert "keep going" in last_user_text(asked)


# ---- errors as Codex acts on them, at its default retry settings ------------------------------


async def test_g_a_short_provider_outage_is_retried_until_it_passes(
    codex_home: CodexHome, fake_upstream: FakeUpstream
) -> None:
    """A 3-second overload: the bridge's own retries and then Codex's (server_error) ride it
    out; server_is_overloaded would have ended the turn at once."""
    codex_home.write_config(default_retries=True)
    started = time.monotonic()

    def respond(body: dict[str, Any]) -> Reply:
        if time.monotonic() - started < 3.0:
            return Reply(status=503, error_body={"error": {"message": "Server is busy"}})
        return thinking_text_reply([], ["Back again."])

    fake_upstream.responder = respond
    result = await codex_home.run("-m", MODEL, "hello")
    assert result.returncode == 0, result.output
    assert "Back again." in result.stdout
    assert len(fake_upstream.requests) > 1


@pytest.mark.parametrize(
    ("status", "message", "shown"),
    [
        (401, "Authentication Fails (no such user)", "rejected the bridge's API key"),
        (400, "Invalid request: unknown field 'frobnicate'", "unknown field 'frobnicate'"),
        (404, "Not Found", "base_url"),
    ],
    ids=["auth", "bad-request", "not-found"],
)
async def test_h_a_request_the_provider_refuses_is_shown_once_not_retried(
    codex_home: CodexHome, fake_upstream: FakeUpstream, status: int, message: str, shown: str
) -> None:
    codex_home.write_config(default_retries=True)
    fake_upstream.responder = lambda body: Reply(
        status=status, error_body={"error": {"message": message}}
    )
    result = await codex_home.run("-m", MODEL, "hello")
    assert result.returncode == 1, result.output
    assert shown in result.output
    assert message.split(":")[0] in result.output  # the provider's own words
    assert "Reconnecting" not in result.output
    assert len(fake_upstream.requests) == 1
    if status in (401, 404):
        assert fake_upstream.url in result.output  # what was tried


async def test_i_heartbeats_keep_codex_waiting_through_a_long_pause(
    codex: str,
    tmp_path: Path,
    fake_upstream: FakeUpstream,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    """Codex's idle timer (here 1.5 s) counts events; a model silent for 4 s in the middle
    of its answer is bridged by heartbeats (every 0.3 s here)."""
    config = bridge_config(fake_upstream.url, server="heartbeat_interval = 0.3")
    server = await aiohttp_server(create_app(config))
    home = CodexHome(codex, tmp_path, str(server.make_url("")).rstrip("/"))
    home.write_config(idle_ms=1500)
    frames = thinking_text_reply(["Long thought."], ["Worth ", "the wait."]).frames
    fake_upstream.responder = lambda body: Reply(frames, pauses={3: 4.0})
    result = await home.run("-m", MODEL, "take your time")
    assert result.returncode == 0, result.output
    assert "Worth the wait." in result.stdout


# ---- the WebSocket mode (supports_websockets = true, as codex-config writes it) ----------------


def bridge_config_file(
    root: Path, fake: FakeUpstream, websocket: str = "", server: str = ""
) -> Path:
    config = root / "bridge.toml"
    config.write_text(
        f"[server]\n{server}\n"
        f'[store]\npath = "{root / "state" / "bridge.db"}"\n'
        f"[websocket]\n{websocket}\n"
        f'[providers.fake]\nbase_url = "{fake.url}/v1"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\ncontext_window = 64000\n'
    )
    return config


def posted_turns(log: Path) -> int:
    return sum(" POST /v1/responses " in line for line in log.read_text().splitlines())


async def test_j_a_tool_loop_over_the_socket_sends_only_new_items_and_survives_kill_9(
    codex: str, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    config_file = bridge_config_file(tmp_path, fake_upstream)
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(config_file, free_port(), log=log, log_level="info")
    catalog = tmp_path / "catalog.json"
    assert (
        codex_config.run(load_config(config_file), model=None, catalog_path=catalog, codex=codex)
        == 0
    )
    await bridge.start()
    try:
        home = websocket_home(codex, tmp_path, bridge, config_file, catalog)
        fake_upstream.responder = tool_loop
        first = await home.run("-m", MODEL, "make three files")
        assert first.returncode == 0, first.output
        assert "Made three files." in first.stdout
        assert (home.workdir / "one.txt").read_text() == "1"
        assert (home.workdir / "two.txt").read_text() == "2"
        assert (home.workdir / "third.txt").read_text() == "patched over the socket\n"
        # Every replayed tool-call turn reached the strict upstream with its reasoning.
        final = fake_upstream.requests[-1]
        assert replayed_assistant(final, "call_p1")["reasoning_content"] == PARALLEL_REASONING
        assert [c["id"] for c in replayed_assistant(final, "call_p1")["tool_calls"]] == [
            "call_p1",
            "call_p2",
        ]
        assert replayed_assistant(final, "call_ap")["reasoning_content"] == PATCH_REASONING
        # All of it over the socket; the turns after the first brought only their new items.
        turns = socket_turns(log)
        assert posted_turns(log) == 0
        real = [t for t in turns if t["model"] != "None" and t["tokens"] != "0+0"]
        assert len(real) == 3, turns
        for follow_up in real[1:]:
            assert follow_up["history"] == "kept", turns
            assert int(follow_up["items"]) <= 2, turns  # the tool outputs

        await bridge.kill()
        await bridge.start()
        second = await home.run("resume", "--last", "what did you make")
        assert second.returncode == 0, second.output
        assert "I made one.txt, two.txt and third.txt." in second.stdout
        resumed = fake_upstream.requests[-1]
        assert "what did you make" in last_user_text(resumed)
        assert replayed_assistant(resumed, "call_p1")["reasoning_content"] == PARALLEL_REASONING
        assert replayed_assistant(resumed, "call_ap")["reasoning_content"] == PATCH_REASONING
        # A new socket after the restart: Codex's warm-up (its developer message), then the
        # whole conversation once, continuing the warm-up.
        warm_up, resumed_turn = socket_turns(log)[len(turns) :]
        assert warm_up["tokens"] == "0+0" and warm_up["history"] == "-", warm_up
        assert resumed_turn["history"] == "kept" and int(resumed_turn["items"]) > 10
    finally:
        await bridge.stop()


async def test_k_a_conversation_the_bridge_no_longer_has_is_sent_again_by_codex(
    codex: str, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    """previous_response_not_found: Codex opens a new socket and sends everything."""
    # No conversation fits: every follow-up names a response the socket did not keep.
    config_file = bridge_config_file(tmp_path, fake_upstream, "cache_bytes = 1")
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(config_file, free_port(), log=log, log_level="info")
    await bridge.start()
    try:
        # Codex sends everything again as a retry of the turn: its own retry settings.
        home = websocket_home(codex, tmp_path, bridge, config_file, None, default_retries=True)
        reasoning = "One shell call, then answer."
        fake_upstream.responder = scripted(
            "count files",
            tool_call_reply(reasoning, [("call_c", "exec_command", [json.dumps({"cmd": "ls"})])]),
            thinking_text_reply(["Counted."], ["There are no files."]),
        )
        result = await home.run("-m", MODEL, "count files")
        assert result.returncode == 0, result.output
        assert "There are no files." in result.stdout
        (follow_up,) = requests_after_tool(fake_upstream)
        assert replayed_assistant(follow_up, "call_c")["reasoning_content"] == reasoning
        turns = socket_turns(log)
        refused = [t for t in turns if t["outcome"] == "previous_response_not_found"]
        assert refused, turns
        assert posted_turns(log) == 0  # it stayed on WebSockets
    finally:
        await bridge.stop()


async def test_k2_a_failed_continuation_is_retried_by_codex_with_everything(
    codex: str, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    """The follow-up turn after a tool call fails upstream (503, past the bridge's own two
    retries), which makes the socket forget the response it continued (the specification's
    eviction): Codex retries on a new socket with the whole conversation, and the task
    completes."""
    config_file = bridge_config_file(tmp_path, fake_upstream)
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(config_file, free_port(), log=log, log_level="info")
    await bridge.start()
    try:
        home = websocket_home(codex, tmp_path, bridge, config_file, None, default_retries=True)
        reasoning = "One shell call, then answer."
        failures = [Reply(status=503, error_body={"error": {"message": "Server is busy"}})] * 3

        def respond(body: dict[str, Any]) -> Reply:
            if body["messages"][-1]["role"] == "tool":
                if failures:
                    return failures.pop()
                return thinking_text_reply(["Counted."], ["There are no files."])
            if "count files" in last_user_text(body):
                return tool_call_reply(
                    reasoning, [("call_f", "exec_command", [json.dumps({"cmd": "ls"})])]
                )
            return thinking_text_reply([], ["ok"])

        fake_upstream.responder = respond
        result = await home.run("-m", MODEL, "count files")
        assert result.returncode == 0, result.output
        assert "There are no files." in result.stdout
        final = fake_upstream.requests[-1]
        assert replayed_assistant(final, "call_f")["reasoning_content"] == reasoning
        turns = socket_turns(log)
        failed = [t["outcome"] for t in turns].index("failed")
        retried = turns[failed + 1]
        # Codex retries on a new socket with everything (the failed one's cache is moot).
        assert retried["request"].split("#")[0] != turns[failed]["request"].split("#")[0]
        assert (retried["outcome"], retried["history"]) == ("completed", "-"), turns
        assert posted_turns(log) == 0
    finally:
        await bridge.stop()


async def test_l_when_every_socket_is_taken_codex_uses_http(
    codex: str, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    config_file = bridge_config_file(tmp_path, fake_upstream, "max_connections = 1")
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(config_file, free_port(), log=log, log_level="info")
    await bridge.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{bridge.url}/v1/responses"),  # the one socket allowed
        ):
            home = websocket_home(codex, tmp_path, bridge, config_file, None, default_retries=True)
            fake_upstream.responder = lambda body: thinking_text_reply([], ["Over HTTP."])
            result = await home.run("-m", MODEL, "hello")
        assert result.returncode == 0, result.output
        assert "Over HTTP." in result.stdout
        assert posted_turns(log) == 1
        assert socket_turns(log) == []
        # At once: one refused upgrade, not Codex's retries of it (about 7 s).
        upgrades = [
            line for line in log.read_text().splitlines() if "GET /v1/responses 426" in line
        ]
        assert len(upgrades) == 1, upgrades
    finally:
        await bridge.stop()


async def test_m_heartbeats_keep_codex_waiting_on_the_socket(
    codex: str, tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    """Codex's idle timer (1.5 s here) on a socket, a model silent for 4 s mid-answer."""
    config_file = bridge_config_file(tmp_path, fake_upstream, server="heartbeat_interval = 0.3")
    log = tmp_path / "bridge.log"
    bridge = BridgeProcess(config_file, free_port(), log=log, log_level="info")
    await bridge.start()
    try:
        home = websocket_home(codex, tmp_path, bridge, config_file, None)
        codex_config_file = home.home / "config.toml"
        text = codex_config_file.read_text()
        codex_config_file.write_text(
            text.replace("stream_idle_timeout_ms = 300000", "stream_idle_timeout_ms = 1500")
        )
        frames = thinking_text_reply(["Long thought."], ["Worth ", "the wait."]).frames
        fake_upstream.responder = lambda body: Reply(frames, pauses={3: 4.0})
        result = await home.run("-m", MODEL, "take your time")
        assert result.returncode == 0, result.output
        assert "Worth the wait." in result.stdout
        assert len(fake_upstream.requests) == 1  # no retry: the socket never went idle
        assert posted_turns(log) == 0
    finally:
        await bridge.stop()
