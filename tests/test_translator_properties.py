"""The stream translator over arbitrary chunk shapes: whatever an upstream sends that decodes,
the translator raises nothing but ApiError, and the events it makes are well formed."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bridge.config import QuirksConfig
from bridge.errors import ApiError
from bridge.translate.stream import StreamTranslator
from bridge.translate.tools import ToolMap, ToolRef
from bridge.wire.chat import CHUNK_DECODER
from bridge.wire.events import ResponseObject

small_text = st.text(max_size=12)
maybe_text = st.none() | small_text | st.sampled_from(["<think>", "</think>", "<｜DSML｜", "{"])
maybe_int = st.none() | st.integers(min_value=-2, max_value=4)

details = st.lists(
    st.fixed_dictionaries(
        {"index": st.none() | st.integers(0, 1)},
        optional={
            "type": st.sampled_from(["reasoning.text", "reasoning.summary", "odd"]),
            "text": st.none() | small_text | st.integers(0, 2),
            "summary": st.none() | small_text,
            "data": st.none() | small_text | st.lists(st.integers(), max_size=2),
            "format": st.none() | small_text,
        },
    ),
    max_size=3,
)
tool_call = st.fixed_dictionaries(
    {},
    optional={
        "index": maybe_int,
        "id": st.none() | st.sampled_from(["call_a", "call_b", "functions.f:0", ""]),
        "type": st.none() | st.just("function"),
        "function": st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "name": st.none() | st.sampled_from(["f", "custom", "ns__g", "", "unknown"]),
                "arguments": maybe_text,
            },
        ),
    },
)
usage = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": maybe_int,
        "completion_tokens": maybe_int,
        "total_tokens": maybe_int,
        "cached_tokens": maybe_int,
        "prompt_tokens_details": st.none() | st.fixed_dictionaries({"cached_tokens": maybe_int}),
        "completion_tokens_details": st.none()
        | st.fixed_dictionaries({"reasoning_tokens": maybe_int}),
    },
)
delta = st.fixed_dictionaries(
    {},
    optional={
        "role": st.none() | st.just("assistant"),
        "content": maybe_text,
        "reasoning_content": maybe_text,
        "reasoning": maybe_text,
        "refusal": maybe_text,
        "reasoning_details": st.none() | details,
        "tool_calls": st.none() | st.lists(tool_call, max_size=3),
    },
)
choice = st.fixed_dictionaries(
    {},
    optional={
        "index": maybe_int,
        "delta": st.none() | delta,
        "finish_reason": st.none()
        | st.sampled_from(["stop", "length", "tool_calls", "content_filter", "odd"]),
        "usage": st.none() | usage,
    },
)
chunk = st.fixed_dictionaries(
    {}, optional={"choices": st.lists(choice, max_size=2), "usage": st.none() | usage}
)
# An error inside the stream ends it: at most one, last.
error_chunk = st.fixed_dictionaries(
    {
        "error": st.fixed_dictionaries(
            {}, optional={"message": st.none() | small_text, "code": maybe_int | small_text}
        )
    }
)
stream = st.tuples(st.lists(chunk, max_size=12), st.lists(error_chunk, max_size=1)).map(
    lambda parts: parts[0] + parts[1]
)


def new_translator(quirks: QuirksConfig) -> StreamTranslator:
    tools = ToolMap()
    tools.add(ToolRef("f"))
    tools.add(ToolRef("custom", kind="custom"))
    tools.add(ToolRef("g", namespace="ns"))
    return StreamTranslator(
        ResponseObject(id="resp_p", created_at=0, model="m"),
        tools,
        include_encrypted_reasoning=True,
        reasoning_summary=True,
        quirks=quirks,
        clock=lambda: 1.0,
        new_id=lambda prefix: f"{prefix}_x",
    )


def check_well_formed(events: list[Any]) -> None:
    """Numbering, item lifecycle and the terminal event."""
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.__struct_config__.tag for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    terminal = {"response.completed", "response.incomplete", "response.failed"}
    assert kinds[-1] in terminal and not terminal & set(kinds[:-1])
    added: set[int] = set()
    done: set[int] = set()
    for event in events[2:-1]:
        index = getattr(event, "output_index", None)
        if index is None:
            continue
        tag = event.__struct_config__.tag
        if tag == "response.output_item.added":
            assert index == len(added) and index not in added
            added.add(index)
        else:
            assert index in added and index not in done, tag
            if tag == "response.output_item.done":
                done.add(index)
    if kinds[-1] != "response.failed":
        assert added == done  # every item ends; a failed turn leaves them partial


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(  # the campaign's finds: a null detail text, then text at the same index ...
    chunks=[
        {"choices": [{"delta": {"reasoning_details": [{"index": 0, "text": None}]}}]},
        {"choices": [{"delta": {"reasoning_details": [{"index": 0, "text": "t"}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
    ],
    think=True,
    dsml=True,
    moved=True,
)
@example(  # ... and a null tool-call index
    chunks=[
        {"choices": [{"delta": {"tool_calls": [{"index": None, "id": "call_a"}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": None, "function": {"name": "f"}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
    ],
    think=False,
    dsml=False,
    moved=True,
)
@given(
    chunks=stream,
    think=st.booleans(),
    dsml=st.booleans(),
    moved=st.booleans(),
)
def test_any_chunks_translate_without_surprises(
    chunks: list[dict[str, Any]], think: bool, dsml: bool, moved: bool
) -> None:
    quirks = QuirksConfig(think_tags=think, dsml_tool_calls=dsml, repeated_call_id=moved)
    translator = new_translator(quirks)
    events = translator.start()
    failed = False
    for payload in chunks:
        try:
            decoded = CHUNK_DECODER.decode(msgspec.json.encode(payload))
        except msgspec.DecodeError:
            continue  # the relay turns these into a malformed-chunk failure
        try:
            translator.add(decoded)
        except ApiError as exc:
            events += translator.take() + translator.fail(exc)
            failed = True
            break
        events += translator.take()
    if not failed:
        events += translator.finish()
    check_well_formed(events)
