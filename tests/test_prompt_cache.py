"""Providers bill a cached prompt prefix at a fraction of the price: over a long session every
upstream request must begin with the previous one, byte for byte.

A Codex-shaped session (store false, the whole conversation sent again each turn with its
reasoning items, Codex's headers and tools) of 200 upstream requests runs through the bridge
for each provider profile, against that provider's strict fake where there is one. Each
request's messages, up to the end of the previous request's, are the previous request's
bytes, and everything after the messages is the same every time.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.app import create_app
from tests.conftest import MODEL, UPSTREAM_PROFILES, bridge_config
from tests.fake_upstream import FakeUpstream, Reply
from tests.provider_fakes import Call, DeepSeek, Gemini, Kimi, MiniMax, StrictProvider

ClientFactory = Callable[..., Awaitable[TestClient]]
FIXTURE = Path(__file__).parent / "fixtures" / "codex-0.169.0" / "tool-turn-2.request.json"
ROUNDS = 100  # a tool call and a text answer each: 200 upstream requests
# Where the messages end in the bridge's upstream body (the keys after them come in order).
MESSAGES_END = b'],"stream":'


def codex_request() -> tuple[dict[str, Any], dict[str, str]]:
    recorded = json.loads(FIXTURE.read_text())
    body = recorded["body"]
    headers = {
        name: value
        for name, value in recorded["headers"].items()
        if name.lower() in ("session-id", "thread-id", "x-client-request-id", "originator")
    }
    # The conversation starts after Codex's own developer and user context messages.
    body["input"] = [item for item in body["input"] if item.get("type") == "message"][:3]
    body["model"] = MODEL
    body["stream"] = False  # the upstream request is the same; the answer is easier to read
    return body, headers


class Session:
    """The model's side of the session, in the provider's own stream shape."""

    def __init__(self, profile: str) -> None:
        self.rules: StrictProvider
        if profile == "gemini":
            self.rules = Gemini()
        elif profile == "minimax":
            self.rules = MiniMax()
        elif profile == "kimi":
            self.rules = Kimi()
        else:
            self.rules = DeepSeek()
        self.strict = profile in ("deepseek", "kimi", "gemini", "minimax")
        self.profile = profile

    def reply(self, body: dict[str, Any], number: int) -> Reply:
        rules = self.rules
        last = body["messages"][-1]
        # Every fifth tool call comes without reasoning, as DeepSeek V4 sometimes answers.
        thinking = "" if number % 5 == 0 else f"Step {number}: look at file {number}."
        if last["role"] == "tool":
            text = f"File {number} holds what was expected."
            if isinstance(rules, Gemini):
                return rules.turn(thought=thinking, text=text)
            if isinstance(rules, MiniMax):
                return rules.turn(body, reasoning=thinking or "Done.", text=text)
            assert isinstance(rules, DeepSeek)
            return rules.turn(reasoning=thinking, text=text)
        command = json.dumps({"cmd": f"cat file{number}.txt"})
        calls = [Call(f"call_{number}_a", "exec_command", command)]
        if number % 3 == 0:
            calls.append(Call(f"call_{number}_b", "exec_command", command))
        if isinstance(rules, Gemini):
            return rules.turn(thought=thinking, calls=calls)
        if isinstance(rules, MiniMax):
            return rules.turn(body, reasoning=thinking or "Go.", calls=calls)
        assert isinstance(rules, DeepSeek)
        return rules.turn(reasoning=thinking, calls=calls)


@pytest.mark.parametrize("profile", UPSTREAM_PROFILES)
async def test_a_200_request_session_is_a_growing_byte_prefix(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, profile: str
) -> None:
    session = Session(profile)
    if session.strict:
        fake_upstream.rules = session.rules
    else:
        fake_upstream.require_reasoning = False
    fake_upstream.record = False
    fake_upstream.record_bytes = True
    config = bridge_config(fake_upstream.url, provider=f'profile = "{profile}"')
    bridge = await aiohttp_client(create_app(config))
    body, headers = codex_request()
    conversation: list[dict[str, Any]] = list(body["input"])
    for number in range(ROUNDS):
        conversation.append(
            {"type": "message", "role": "user", "content": f"Now look at file {number}."}
        )
        for _ in range(2):  # the tool call, then the answer after its output
            request = {**body, "input": conversation}
            fake_upstream.responder = lambda sent, n=number: session.reply(sent, n)
            response = await bridge.post("/v1/responses", json=request, headers=headers)
            answer = await response.json()
            assert answer.get("status") == "completed", json.dumps(answer)[:800]
            conversation += answer["output"]
            conversation += [
                {"type": "function_call_output", "call_id": item["call_id"], "output": "ok\n" * 20}
                for item in answer["output"]
                if item["type"] == "function_call"
            ]
    if session.strict:
        assert session.rules.refused == []
    bodies = fake_upstream.bodies
    assert len(bodies) == 2 * ROUNDS
    for number, (earlier, later) in enumerate(itertools.pairwise(bodies)):
        head, tail = split(earlier)
        next_head, next_tail = split(later)
        assert next_head.startswith(head), first_difference(head, next_head, number)
        assert next_tail == tail, (number, tail[:300], next_tail[:300])


def split(body: bytes) -> tuple[bytes, bytes]:
    """The body up to the end of its last message, and the rest."""
    cut = body.rindex(MESSAGES_END)
    return body[:cut], body[cut:]


def first_difference(earlier: bytes, later: bytes, number: int) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(earlier, later, strict=False)) if a != b),
        min(len(earlier), len(later)),
    )
    return (
        f"request {number + 1} differs from request {number} at byte {at}: "
        f"{earlier[at - 120 : at + 120]!r} became {later[at - 120 : at + 120]!r}"
    )
