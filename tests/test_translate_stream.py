"""Chat chunks -> Responses events: golden sequences and the invariants clients rely on."""

from __future__ import annotations

import itertools
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import ApiError
from bridge.sse import SSEParser, encode_frames
from bridge.translate.reasoning import decode_reasoning
from bridge.translate.tools import ToolMap, ToolRef
from bridge.wire.chat import CHUNK_DECODER
from tests.conftest import assert_ends
from tests.fake_upstream import chunk, usage_chunk
from tests.translator_runs import run, summary, translator, wire_events


def check_invariants(events: list[dict[str, Any]]) -> None:
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    announced: dict[int, str] = {}
    for e in events:
        if e["type"] == "response.output_item.added":
            assert e["output_index"] == len(announced), "output_index grows by one per item"
            announced[e["output_index"]] = e["item"]["id"]
        elif "output_index" in e:
            assert e["output_index"] in announced, f"{e['type']} before its item was added"
            item_id = e.get("item_id") or e["item"]["id"]
            assert item_id == announced[e["output_index"]], "ids are stable"


def test_reasoning_then_text_golden() -> None:
    events = run(
        translator(),
        [
            chunk({"role": "assistant", "reasoning_content": "Thin"}),
            chunk({"reasoning_content": "king"}),
            chunk({"content": "Hi"}),
            chunk({"content": " there"}),
            chunk(finish_reason="stop"),
            usage_chunk(prompt=10, completion=5, cached=4, reasoning=3),
        ],
    )
    check_invariants(events)
    assert summary(events) == [
        ("created", "in_progress"),
        ("in_progress", "in_progress"),
        ("output_item.added", 0, "reasoning"),
        ("content_part.added", 0),
        ("reasoning_text.delta", 0, "Thin"),
        ("reasoning_text.delta", 0, "king"),
        ("reasoning_text.done", 0),
        ("content_part.done", 0),
        ("output_item.done", 0, "reasoning"),
        ("output_item.added", 1, "message"),
        ("content_part.added", 1),
        ("output_text.delta", 1, "Hi"),
        ("output_text.delta", 1, " there"),
        ("output_text.done", 1),
        ("content_part.done", 1),
        ("output_item.done", 1, "message"),
        ("completed", "completed"),
    ]
    added = events[2]["item"]
    assert added["content"] == [] and added["status"] == "in_progress"
    assert events[6]["text"] == "Thinking"
    assert events[13]["text"] == "Hi there"
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["content"] == [{"type": "reasoning_text", "text": "Thinking"}]
    assert "encrypted_content" not in final["output"][0]
    assert final["output"][1]["content"][0]["text"] == "Hi there"
    assert final["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 15,
    }
    assert events[0]["response"]["output"] == []


def test_encrypted_reasoning_carries_the_text() -> None:
    events = run(
        translator(encrypted=True),
        [
            chunk({"reasoning_content": "secret plan"}),
            chunk({"content": "ok"}),
            chunk(None, "stop"),
        ],
    )
    item = events[-1]["response"]["output"][0]
    carried = decode_reasoning(item["encrypted_content"])
    assert carried is not None and carried.text == "secret plan" and carried.details is None


def test_parallel_tool_calls_stream_arguments_as_they_arrive() -> None:
    events = run(
        translator(),
        [
            chunk({"reasoning_content": "plan"}),
            chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "f"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "g"}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
            chunk(finish_reason="tool_calls"),
        ],
    )
    check_invariants(events)
    assert summary(events)[8:] == [
        ("output_item.added", 1, "function_call"),
        ("function_call_arguments.delta", 1, '{"x"'),
        ("function_call_arguments.delta", 1, ": 1}"),
        ("output_item.added", 2, "function_call"),
        ("function_call_arguments.delta", 2, "{}"),
        ("function_call_arguments.done", 1),
        ("output_item.done", 1, "function_call"),
        ("function_call_arguments.done", 2),
        ("output_item.done", 2, "function_call"),
        ("completed", "completed"),
    ]
    calls = events[-1]["response"]["output"][1:]
    assert [(c["call_id"], c["name"], c["arguments"]) for c in calls] == [
        ("call_a", "f", '{"x": 1}'),
        ("call_b", "g", "{}"),
    ]


def test_arguments_before_the_name_wait_for_the_announcement() -> None:
    events = run(
        translator(),
        [
            chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": '{"a":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "2}"}}]}),
            chunk(finish_reason="tool_calls"),
        ],
    )
    check_invariants(events)
    assert summary(events)[2:5] == [
        ("output_item.added", 0, "function_call"),
        ("function_call_arguments.delta", 0, '{"a":'),
        ("function_call_arguments.delta", 0, "2}"),
    ]


def test_a_name_streamed_in_pieces_is_announced_whole() -> None:
    tool_map = ToolMap()
    tool_map.add(ToolRef("get_weather"))
    events = run(
        translator(tool_map),
        [
            chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "get_"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"name": "weather"}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "d", "function": {"name": "get_"}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"name": "weather"}}]}),
            chunk(finish_reason="tool_calls"),
        ],
    )
    check_invariants(events)
    added = [e["item"]["name"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["get_weather", "get_weather"]
    done = [e["item"]["name"] for e in events if e["type"] == "response.output_item.done"]
    assert done == ["get_weather", "get_weather"]
    output = events[-1]["response"]["output"]
    assert [(o["call_id"], o["arguments"]) for o in output] == [
        ("c", '{"city":"Oslo"}'),
        ("d", "{}"),
    ]


def test_zero_argument_call_completes_with_empty_object() -> None:
    events = run(
        translator(),
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c", "function": {"name": "f", "arguments": ""}}
                    ]
                }
            ),
            chunk(finish_reason="tool_calls"),
        ],
    )
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert done["arguments"] == "{}"
    assert events[-1]["response"]["output"][0]["arguments"] == "{}"


def test_whole_call_in_one_delta_and_reused_index() -> None:
    events = run(
        translator(),
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}
                    ]
                }
            ),
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c2", "function": {"name": "g", "arguments": "{}"}}
                    ]
                }
            ),
            chunk(finish_reason="tool_calls"),
        ],
    )
    check_invariants(events)
    output = events[-1]["response"]["output"]
    assert [(o["call_id"], o["name"]) for o in output] == [("c1", "f"), ("c2", "g")]


def test_namespaced_call_comes_back_with_its_namespace() -> None:
    tool_map = ToolMap()
    flat = tool_map.add(ToolRef("spawn_agent", "multi_agent_v1"))
    events = run(
        translator(tool_map),
        [
            chunk(
                {
                    "tool_calls": [
                        {"index": 0, "id": "c", "function": {"name": flat, "arguments": "{}"}}
                    ]
                }
            ),
            chunk(finish_reason="tool_calls"),
        ],
    )
    item = events[-1]["response"]["output"][0]
    assert (item["name"], item["namespace"]) == ("spawn_agent", "multi_agent_v1")


def test_custom_tool_call_streams_its_input() -> None:
    tool_map = ToolMap()
    tool_map.add(ToolRef("apply_patch", kind="custom"))
    patch = '*** Begin Patch\n*** Add File: "q".txt\n+tab\there\n*** End Patch\n'
    arguments = json.dumps({"input": patch})
    pieces = [arguments[i : i + 7] for i in range(0, len(arguments), 7)]
    chunks = [chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "apply_patch"}}]})]
    chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces]
    events = run(translator(tool_map), [*chunks, chunk(finish_reason="tool_calls")])
    check_invariants(events)
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert len(deltas) > 3, "input is streamed, not buffered to the end"
    assert "".join(deltas) == patch
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert done["input"] == patch
    item = events[-1]["response"]["output"][0]
    assert item["type"] == "custom_tool_call"
    assert (item["name"], item["call_id"], item["input"]) == ("apply_patch", "c", patch)


def test_custom_tool_raw_text_arguments_are_the_input() -> None:
    tool_map = ToolMap()
    tool_map.add(ToolRef("apply_patch", kind="custom"))
    raw = "*** Begin Patch\n*** End Patch\n"
    events = run(
        translator(tool_map),
        [
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c",
                            "function": {"name": "apply_patch", "arguments": raw},
                        }
                    ]
                }
            ),
            chunk(finish_reason="tool_calls"),
        ],
    )
    deltas = [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"]
    assert "".join(deltas) == raw
    assert events[-1]["response"]["output"][0]["input"] == raw


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_truncated_answers_are_incomplete(finish: str, reason: str) -> None:
    events = run(translator(), [chunk({"content": "partial"}), chunk(finish_reason=finish)])
    assert_ends(events, "response.incomplete")
    assert events[-1]["response"]["status"] == "incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": reason}
    assert not any(e["type"] == "response.completed" for e in events)


def test_stream_without_finish_reason_fails() -> None:
    events = run(translator(), [chunk({"content": "partial"})])
    check_invariants(events)
    assert_ends(events, "response.failed")
    assert events[-1]["response"]["error"]["code"] == "server_error"
    assert "finish_reason" in events[-1]["response"]["error"]["message"]
    assert not any(e["type"] in ("response.completed", "response.output_item.done") for e in events)


def test_error_object_inside_the_stream_raises_a_classified_error() -> None:
    t = translator()
    t.start()
    t.feed(CHUNK_DECODER.decode(json.dumps(chunk({"content": "x"}))))
    with pytest.raises(ApiError) as caught:
        t.feed(
            CHUNK_DECODER.decode(
                json.dumps({"error": {"message": "This model's maximum context length is 10"}})
            )
        )
    assert caught.value.code == "context_length_exceeded"
    failed = wire_events(encode_frames(t.fail(caught.value)))
    assert_ends(failed[0], "response.failed")
    assert failed[0]["response"]["error"]["code"] == "context_length_exceeded"


def test_heartbeat_is_an_in_progress_event_in_sequence() -> None:
    t = translator()
    start = t.start()
    beat = t.heartbeat()
    more = t.feed(CHUNK_DECODER.decode(json.dumps(chunk({"content": "x"}))))
    numbers = [e.sequence_number for e in [*start, beat, *more]]
    assert numbers == list(range(len(numbers)))
    assert msgspec.json.decode(msgspec.json.encode(beat))["type"] == "response.in_progress"


def test_deepseek_cache_hit_tokens_count_as_cached() -> None:
    events = run(
        translator(),
        [
            chunk({"content": "x"}, "stop"),
            {
                "choices": [],
                "usage": {"prompt_tokens": 9, "completion_tokens": 1, "prompt_cache_hit_tokens": 8},
            },
        ],
    )
    usage = events[-1]["response"]["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == 8
    assert usage["total_tokens"] == 10


def _upstream_bytes() -> bytes:
    payloads = [
        chunk({"role": "assistant", "reasoning_content": "Plan: é∑ "}),
        chunk({"reasoning_content": "then act"}),
        chunk({"content": "Calling 😀"}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"k": "v'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"}'}}]}),
        chunk(finish_reason="tool_calls"),
        usage_chunk(),
    ]
    lines = [b": keep-alive\r\n\r\n"] + [
        b"data: " + json.dumps(p, ensure_ascii=False).encode() + b"\r\n\r\n" for p in payloads
    ]
    return b"".join(lines) + b"data: [DONE]"


def _translate_split(data: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    t = translator()
    parser = SSEParser()
    events = t.start()
    bounds = [0, *sorted(set(cuts)), len(data)]
    sse_events = []
    for start, end in itertools.pairwise(bounds):
        sse_events += parser.feed(data[start:end])
    sse_events += parser.finish()
    for event in sse_events:
        if event.data != b"[DONE]":
            events += t.feed(CHUNK_DECODER.decode(event.data))
    events += t.finish()
    return [_without_ids(e) for e in wire_events(encode_frames(events))]


def _without_ids(event: Any) -> Any:
    """The event without what differs between runs: random ids and the clock."""
    if isinstance(event, dict):
        return {
            k: _without_ids(v)
            for k, v in event.items()
            if k not in ("id", "item_id", "completed_at")
        }
    if isinstance(event, list):
        return [_without_ids(v) for v in event]
    return event


UPSTREAM = _upstream_bytes()
WHOLE = _translate_split(UPSTREAM, [])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(UPSTREAM) - 1), max_size=40))
def test_any_split_of_the_upstream_stream_translates_the_same(cuts: list[int]) -> None:
    assert _translate_split(UPSTREAM, cuts) == WHOLE


def test_the_split_property_sees_the_whole_answer() -> None:
    final = WHOLE[-1]["response"]
    assert final["status"] == "completed", final.get("error")
    assert final["output"][1]["content"][0]["text"] == "Calling 😀"
    assert final["output"][2]["arguments"] == '{"k": "v"}'


def test_reasoning_mirrored_as_a_summary() -> None:
    events = run(
        translator(summary=True),
        [
            chunk({"reasoning_content": "Plan "}),
            chunk({"reasoning_content": "it."}),
            chunk({"content": "ok"}, "stop"),
        ],
    )
    check_invariants(events)
    kinds = [e["type"].removeprefix("response.") for e in events[2:10]]
    assert kinds == [
        "output_item.added",
        "reasoning_summary_part.added",
        "content_part.added",
        "reasoning_summary_text.delta",
        "reasoning_text.delta",
        "reasoning_summary_text.delta",
        "reasoning_text.delta",
        "reasoning_summary_text.done",
    ]
    summary_deltas = [e for e in events if e["type"] == "response.reasoning_summary_text.delta"]
    assert [e["summary_index"] for e in summary_deltas] == [0, 0]
    item = events[-1]["response"]["output"][0]
    assert item["summary"] == [{"type": "summary_text", "text": "Plan it."}]
    assert item["content"] == [{"type": "reasoning_text", "text": "Plan it."}]
