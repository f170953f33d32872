"""Stream quirks: <think> tags, DSML tool calls, and the switches that turn each off."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.app import create_app
from bridge.config import QuirksConfig
from bridge.translate.quirks import DsmlToolCalls, ThinkTags, parse_dsml
from tests.conftest import MODEL, UPSTREAM_PROFILES, assert_ends, bridge_config, read_events
from tests.fake_upstream import (
    DONE,
    KIMI_MISSING_REASONING,
    FakeUpstream,
    Reply,
    chunk,
    sse,
    tool_call_reply,
    usage_chunk,
)
from tests.translator_runs import run, summary, translator

DSML_SAMPLE = (
    "Let me check.\n"
    "<｜DSML｜tool_calls>\n"
    '<｜DSML｜invoke name="exec_command">\n'
    '<｜DSML｜parameter name="cmd" string="true">ls -la</｜DSML｜parameter>\n'
    '<｜DSML｜parameter name="timeout" string="false">30</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n"
    '<｜DSML｜invoke name="read">\n'
    '<｜DSML｜parameter name="path" string="true">a "b".txt</｜DSML｜parameter>\n'
    "</｜DSML｜invoke>\n"
    "</｜DSML｜tool_calls>"
)


def split_feed(feed: Callable[[str], Any], text: str, cut: int) -> list[Any]:
    return [feed(text[:cut]), feed(text[cut:])]


# ---- <think> ------------------------------------------------------------------------


def think_split(text: str, cut: int) -> list[tuple[str, str]]:
    tags = ThinkTags()
    segments = tags.feed(text[:cut]) + tags.feed(text[cut:]) + tags.finish()
    merged: list[tuple[str, str]] = []
    for kind, piece in segments:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + piece)
        else:
            merged.append((kind, piece))
    return merged


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "<think>plan it</think>\n\nThe answer.",
            [("reasoning", "plan it"), ("text", "The answer.")],
        ),
        ("  \n<think>a < b</think>ok", [("reasoning", "a < b"), ("text", "ok")]),
        ("No tags here <think>x</think>", [("text", "No tags here <think>x</think>")]),
        ("<thinking>not a tag</thinking>", [("text", "<thinking>not a tag</thinking>")]),
        ("<think>never closed", [("reasoning", "never closed")]),
        ("  ", [("text", "  ")]),
    ],
)
def test_think_tags_at_every_split(text: str, expected: list[tuple[str, str]]) -> None:
    for cut in range(len(text) + 1):
        assert think_split(text, cut) == expected, cut


# ---- DSML ---------------------------------------------------------------------------


def test_dsml_sample_becomes_tool_calls() -> None:
    calls = parse_dsml(DSML_SAMPLE)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("exec_command", {"cmd": "ls -la", "timeout": 30}),
        ("read", {"path": 'a "b".txt'}),
    ]


@pytest.mark.parametrize("bar", ["‖", "｜｜", "|"])
def test_dsml_bar_variants_and_spaces(bar: str) -> None:
    markup = (
        f'<{bar}DSML{bar} calls>\n<{bar}DSML{bar} invoke name="read">\n'
        f'<{bar}DSML{bar} parameter name="path" string="true">/x</{bar}DSML{bar} parameter>\n'
        f"</{bar}DSML{bar} invoke>\n</{bar}DSML{bar} calls>"
    )
    calls = parse_dsml(markup)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("read", {"path": "/x"})]


def test_dsml_split_anywhere_gives_the_same_calls_and_text() -> None:
    for cut in range(len(DSML_SAMPLE) + 1):
        extractor = DsmlToolCalls()
        shown = extractor.feed(DSML_SAMPLE[:cut]) + extractor.feed(DSML_SAMPLE[cut:])
        leftover, calls = extractor.finish()
        assert shown + leftover == "Let me check.\n", cut
        assert [c.name for c in calls] == ["exec_command", "read"], cut


def test_ordinary_angle_brackets_are_not_held_back() -> None:
    extractor = DsmlToolCalls()
    assert extractor.feed("a <") == "a "
    assert extractor.feed(" b and <c>") == "< b and <c>"
    assert extractor.finish() == ("", [])


def test_unreadable_markup_is_given_back_as_text() -> None:
    extractor = DsmlToolCalls()
    assert extractor.feed("x <｜DSML｜tool_calls> garbage") == "x "
    assert extractor.finish() == ("<｜DSML｜tool_calls> garbage", [])


# ---- in the stream translator -------------------------------------------------------


def test_dsml_in_content_becomes_function_call_items() -> None:
    pieces = [DSML_SAMPLE[i : i + 9] for i in range(0, len(DSML_SAMPLE), 9)]
    events = run(
        translator(),
        [
            chunk({"reasoning_content": "think"}),
            *[chunk({"content": p}) for p in pieces],
            chunk(None, "stop"),
        ],
    )
    final = events[-1]["response"]
    assert final["status"] == "completed", final.get("error")
    kinds = [item["type"] for item in final["output"]]
    assert kinds == ["reasoning", "message", "function_call", "function_call"]
    assert final["output"][1]["content"][0]["text"] == "Let me check.\n"
    assert "DSML" not in json.dumps([e for e in events if "delta" in e])
    call = final["output"][2]
    assert call["name"] == "exec_command"
    assert json.loads(call["arguments"]) == {"cmd": "ls -la", "timeout": 30}
    assert call["call_id"].startswith("call_")


def test_think_tags_in_content_become_reasoning() -> None:
    events = run(
        translator(),
        [
            chunk({"content": "<thi"}),
            chunk({"content": "nk>Let me see"}),
            chunk({"content": ".</think>\n\nHello"}),
            chunk(None, "stop"),
        ],
    )
    assert summary(events)[2:] == [
        ("output_item.added", 0, "reasoning"),
        ("content_part.added", 0),
        ("reasoning_text.delta", 0, "Let me see"),
        ("reasoning_text.delta", 0, "."),
        ("reasoning_text.done", 0),
        ("content_part.done", 0),
        ("output_item.done", 0, "reasoning"),
        ("output_item.added", 1, "message"),
        ("content_part.added", 1),
        ("output_text.delta", 1, "Hello"),
        ("output_text.done", 1),
        ("content_part.done", 1),
        ("output_item.done", 1, "message"),
        ("completed", "completed"),
    ]


def quirks_off(**off: bool) -> QuirksConfig:
    return QuirksConfig(**{name: False for name in off})


def test_each_quirk_can_be_turned_off() -> None:
    from bridge.translate.stream import StreamTranslator
    from bridge.translate.tools import ToolMap
    from bridge.wire.chat import CHUNK_DECODER
    from bridge.wire.events import ResponseObject

    def final(quirks: QuirksConfig, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        t = StreamTranslator(
            ResponseObject(id="r", created_at=1, model="m"), ToolMap(), quirks=quirks
        )
        t.start()
        for c in chunks:
            t.feed(CHUNK_DECODER.decode(json.dumps(c)))
        events = t.finish()
        return json.loads(json.dumps(__import__("msgspec").to_builtins(events[-1])))["response"]

    think = [chunk({"content": "<think>x</think>y"}), chunk(None, "stop")]
    assert [o["type"] for o in final(QuirksConfig(), think)["output"]] == ["reasoning", "message"]
    off = final(quirks_off(think_tags=True), think)["output"]
    assert off[0]["content"][0]["text"] == "<think>x</think>y"

    dsml = [chunk({"content": DSML_SAMPLE}), chunk(None, "stop")]
    off = final(quirks_off(dsml_tool_calls=True), dsml)["output"]
    assert [o["type"] for o in off] == ["message"]

    alias = [chunk({"reasoning": "r", "content": "t"}), chunk(None, "stop")]
    assert [o["type"] for o in final(QuirksConfig(), alias)["output"]] == ["reasoning", "message"]
    assert [o["type"] for o in final(quirks_off(reasoning_alias=True), alias)["output"]] == [
        "message"
    ]

    repeated = [
        chunk(
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}]}
        ),
        chunk(
            {"tool_calls": [{"index": 0, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}
        ),
        chunk(None, "tool_calls"),
    ]
    assert len(final(QuirksConfig(), repeated)["output"]) == 2
    assert len(final(quirks_off(repeated_call_id=True), repeated)["output"]) == 1

    empty = [
        chunk(
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": ""}}]}
        ),
        chunk(None, "tool_calls"),
    ]
    assert final(QuirksConfig(), empty)["output"][0]["arguments"] == "{}"
    assert final(quirks_off(empty_arguments=True), empty)["output"][0]["arguments"] == ""


# ---- per profile, through the service -----------------------------------------------

ClientFactory = Callable[..., Awaitable[TestClient]]


async def client_for(
    aiohttp_client: ClientFactory, fake: FakeUpstream, profile: str, **quirks: bool
) -> TestClient:
    lines = [f'profile = "{profile}"']
    lines += [f"quirks.{name} = {str(value).lower()}" for name, value in quirks.items()]
    config = bridge_config(fake.url, provider="\n".join(lines))
    return await aiohttp_client(create_app(config))


def documented_stream(profile: str) -> list[bytes]:
    """A reasoning-then-answer stream in the shape each provider documents."""
    if profile == "llamacpp":  # no reasoning parser: the tags stay in content
        deltas = [
            {"content": "<think>"},
            {"content": "Two words."},
            {"content": "</think>Hi there"},
        ]
    elif profile in ("vllm", "ollama", "openrouter"):
        deltas = [{"reasoning": "Two "}, {"reasoning": "words."}, {"content": "Hi there"}]
    elif profile == "gemini":
        # Thought summaries inside content, flagged, the closing tag opening the answer (the
        # shape of captures quoted in discuss.ai.google.dev/t/127400 and coder/coder's
        # internal/googleopenai fixtures); usage on every chunk.
        thought = {"google": {"thought": True}}
        deltas = [
            {"role": "assistant", "content": "<thought>Two ", "extra_content": thought},
            {"role": "assistant", "content": "words.", "extra_content": thought},
            {"role": "assistant", "content": "</thought>Hi there"},
        ]
    elif profile == "minimax":
        # reasoning_split: the thinking in reasoning_details (MiniMax's OpenAI API docs).
        detail = {"type": "reasoning.text", "id": "reasoning-text-1"}
        detail |= {"format": "MiniMax-response-v1", "index": 0}
        deltas = [
            {"role": "assistant", "reasoning_details": [{**detail, "text": "Two "}]},
            {"role": "assistant", "reasoning_details": [{**detail, "text": "words."}]},
            {"role": "assistant", "content": "Hi there"},
        ]
    else:
        deltas = [
            {"role": "assistant", "content": "", "reasoning_content": "Two "},
            {"reasoning_content": "words."},
            {"content": "Hi there"},
        ]
    frames = [sse(chunk(d)) for d in deltas]
    return [*frames, sse(chunk(None, "stop")), sse(usage_chunk()), DONE]


@pytest.mark.parametrize("profile", UPSTREAM_PROFILES)
async def test_documented_stream_of_each_profile(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory, profile: str
) -> None:
    client = await client_for(aiohttp_client, fake_upstream, profile)
    fake_upstream.script(Reply(documented_stream(profile)))
    response = await client.post(
        "/v1/responses", json={"model": MODEL, "input": "hi", "stream": True}
    )
    events = await read_events(response)
    final = events[-1]["response"]
    assert_ends(events)
    assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": "Two words."}]
    assert final["output"][1]["content"][0]["text"] == "Hi there"


async def test_missing_done_switch(
    fake_upstream: FakeUpstream, aiohttp_client: ClientFactory
) -> None:
    frames = [sse(chunk({"content": "x"})), sse(chunk(None, "stop"))]
    lenient = await client_for(aiohttp_client, fake_upstream, "openai")
    fake_upstream.script(Reply(frames))
    events = await read_events(
        await lenient.post("/v1/responses", json={"model": MODEL, "input": "hi", "stream": True})
    )
    assert_ends(events)
    strict = await client_for(aiohttp_client, fake_upstream, "openai", missing_done=False)
    fake_upstream.script(Reply(frames))
    events = await read_events(
        await strict.post("/v1/responses", json={"model": MODEL, "input": "hi", "stream": True})
    )
    assert_ends(events, "response.failed")
    assert "[DONE]" in events[-1]["response"]["error"]["message"]


# ---- replays: each thinking provider's own error when reasoning is missing ------------


@pytest.mark.parametrize(
    ("profile", "field", "error"),
    [
        (
            "deepseek",
            "reasoning_content",
            "The `reasoning_content` in the thinking mode must be passed back to the API.",
        ),
        ("kimi", "reasoning_content", KIMI_MISSING_REASONING),
        ("vllm", "reasoning", "reasoning missing at message {index}"),
    ],
)
async def test_replay_per_thinking_provider(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: ClientFactory,
    profile: str,
    field: str,
    error: str,
) -> None:
    fake = FakeUpstream(reasoning_field=field, missing_reasoning=error)
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    client = await client_for(aiohttp_client, fake, profile)
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    bare = [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c_unknown", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c_unknown", "output": "x"},
    ]
    # Nothing anywhere: the provider's own words reach the client, nothing invented.
    failed = await client.post(
        "/v1/responses", json={"model": MODEL, "input": bare, "tools": tools}
    )
    assert failed.status == 400
    assert (await failed.json())["error"]["message"] == (
        "upstream: " + error.format(index=1) + " (HTTP 400)"
    )
    # A turn the bridge saw: replayed without its reasoning item, restored from the store.
    fake.script(tool_call_reply("why f", [("c_seen", "f", ["{}"])]), tool_call_reply("again", []))
    first = await (
        await client.post("/v1/responses", json={"model": MODEL, "input": "go", "tools": tools})
    ).json()
    replay = [
        {"role": "user", "content": "go"},
        first["output"][-1],
        {"type": "function_call_output", "call_id": "c_seen", "output": "x"},
    ]
    ok = await client.post("/v1/responses", json={"model": MODEL, "input": replay, "tools": tools})
    assert ok.status == 200, await ok.text()
    assistant = fake.requests[-1]["messages"][1]
    assert assistant[field] == "why f"
    other = {"reasoning_content", "reasoning"} - {field}
    assert not other & set(assistant)


# ---- OpenRouter: reasoning_details go back unchanged ---------------------------------

DETAIL_FRAGMENTS = [
    [{"type": "reasoning.text", "text": "Check ", "index": 0, "format": "anthropic-claude-v1"}],
    [{"type": "reasoning.text", "text": "the weather.", "index": 0}],
    [{"type": "reasoning.text", "signature": "sig-abc", "index": 0}],
    [{"type": "reasoning.encrypted", "data": "opaque==", "index": 1}],
]
MERGED_DETAILS = [
    {
        "type": "reasoning.text",
        "text": "Check the weather.",
        "index": 0,
        "format": "anthropic-claude-v1",
        "signature": "sig-abc",
    },
    {"type": "reasoning.encrypted", "data": "opaque==", "index": 1},
]


def openrouter_tool_turn() -> Reply:
    frames = [
        sse(chunk({"reasoning": "Check ", "reasoning_details": DETAIL_FRAGMENTS[0]})),
        sse(chunk({"reasoning": "the weather.", "reasoning_details": DETAIL_FRAGMENTS[1]})),
        sse(chunk({"reasoning_details": DETAIL_FRAGMENTS[2]})),
        sse(chunk({"reasoning_details": DETAIL_FRAGMENTS[3]})),
        sse(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_or",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ]
                }
            )
        ),
        sse(chunk(None, "tool_calls")),
        DONE,
    ]
    return Reply(frames)


async def test_openrouter_reasoning_details_round_trip(
    aiohttp_server: Callable[..., Awaitable[TestServer]], aiohttp_client: ClientFactory
) -> None:
    fake = FakeUpstream(reasoning_field="reasoning_details", missing_reasoning="details missing")
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    client = await client_for(aiohttp_client, fake, "openrouter")
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    fake.script(openrouter_tool_turn())
    first = await (
        await client.post(
            "/v1/responses", json={"model": MODEL, "input": "weather?", "tools": tools}
        )
    ).json()
    reasoning, call = first["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Check the weather."}]
    # Not asked for, but the details must survive the client's replay.
    assert reasoning["encrypted_content"].startswith("rb2.")

    output = {"type": "function_call_output", "call_id": "call_or", "output": "sunny"}
    for replayed in ([reasoning, call], [call]):  # verbatim, then without the reasoning item
        fake.script(tool_call_reply("x", []))
        replay = [{"role": "user", "content": "weather?"}, *replayed, output]
        response = await client.post(
            "/v1/responses", json={"model": MODEL, "input": replay, "tools": tools}
        )
        assert response.status == 200, await response.text()
        assistant = fake.requests[-1]["messages"][1]
        assert assistant["reasoning_details"] == MERGED_DETAILS
        assert "reasoning_content" not in assistant and "reasoning" not in assistant
