"""Tests for the incremental SSE parser in bridge.sse."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.sse import SSEEvent, SSEParser, SSEProtocolError


def parse(*chunks: bytes, max_line_bytes: int | None = None) -> list[SSEEvent]:
    """Feed chunks in order to a fresh parser, then finish it."""
    parser = SSEParser() if max_line_bytes is None else SSEParser(max_line_bytes=max_line_bytes)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.finish())
    return events


def feed_only(*chunks: bytes) -> list[SSEEvent]:
    """Feed chunks to a fresh parser without finishing, returning only dispatched events."""
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


# A DeepSeek-style chat-completions stream: keep-alive comments, CRLF, non-ASCII content.
CHAT_STREAM = (
    b": keep-alive\r\n\r\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\r\n'
    b"\r\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"h\xc3\xa9llo \xe4\xb8\x96"}}]}\r\n'
    b"\r\n"
    b": keep-alive\r\n\r\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":" \xf0\x9f\x8e\x89"}}]}\r\n'
    b"\r\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\r\n'
    b"\r\n"
    b"data: [DONE]\r\n\r\n"
)
CHAT_EVENTS = [
    SSEEvent(b'{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'),
    SSEEvent(
        '{"id":"c1","choices":[{"index":0,"delta":{"content":"héllo 世"}}]}'.encode(),
    ),
    SSEEvent('{"id":"c1","choices":[{"index":0,"delta":{"content":" 🎉"}}]}'.encode()),
    SSEEvent(b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'),
    SSEEvent(b"[DONE]"),
]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(eol: bytes) -> None:
    stream = b"data: a" + eol + eol + b"data: b" + eol + eol
    assert feed_only(stream) == [SSEEvent(b"a"), SSEEvent(b"b")]


def test_mixed_line_endings_in_one_stream() -> None:
    stream = b"data: a\r\n\ndata: b\r\rdata: c\n\r\n"
    assert feed_only(stream) == [SSEEvent(b"a"), SSEEvent(b"b"), SSEEvent(b"c")]


def test_crlf_split_across_chunks_is_one_line_ending() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SSEEvent(b"a\nb")]
    assert parser.feed(b"\n") == []
    assert parser.finish() == []


def test_crlf_split_with_empty_chunk_between() -> None:
    assert feed_only(b"data: a\r", b"", b"\n", b"data: b\r\n\r\n") == [SSEEvent(b"a\nb")]


def test_lone_cr_then_lf_in_next_chunk_is_not_an_extra_blank_line() -> None:
    # If the split LF were counted as a line ending, "a" would be dispatched on its own.
    assert feed_only(b"data: a\r", b"\ndata: b\n\n") == [SSEEvent(b"a\nb")]


def test_multi_line_data_is_joined_with_lf() -> None:
    stream = b"data: first\ndata:\ndata: third\n\n"
    assert feed_only(stream) == [SSEEvent(b"first\n\nthird")]


def test_comments_are_ignored() -> None:
    stream = b": keep-alive\n\n:\ndata: x\n: in the middle\ndata: y\n\n: keep-alive\n\n"
    assert feed_only(stream) == [SSEEvent(b"x\ny")]


def test_event_and_id_fields() -> None:
    stream = (
        b"event: response.created\nid: 7\ndata: {}\n\n"
        b"data: plain\n\n"
        b"event: first\nevent: second\nid: 1\nid: 2\ndata: z\n\n"
    )
    assert feed_only(stream) == [
        SSEEvent(b"{}", event="response.created", id="7"),
        SSEEvent(b"plain"),
        SSEEvent(b"z", event="second", id="2"),
    ]


def test_event_without_data_is_dropped_and_its_fields_do_not_leak() -> None:
    stream = b"event: ping\nid: 9\n\ndata: x\n\n"
    assert feed_only(stream) == [SSEEvent(b"x")]


def test_id_containing_nul_is_ignored() -> None:
    stream = b"id: good\nid: b\x00d\ndata: x\n\n"
    assert feed_only(stream) == [SSEEvent(b"x", id="good")]


def test_field_without_colon_has_empty_value() -> None:
    assert feed_only(b"data\ndata\n\n") == [SSEEvent(b"\n")]
    assert feed_only(b"event\ndata: x\n\n") == [SSEEvent(b"x", event="")]


def test_no_space_after_colon_and_only_one_space_removed() -> None:
    stream = b"data:x\nevent:e\n\ndata:  two spaces\n\n"
    assert feed_only(stream) == [SSEEvent(b"x", event="e"), SSEEvent(b" two spaces")]


def test_retry_and_unknown_fields_are_ignored() -> None:
    stream = b"retry: 1000\nfoo: bar\nDATA: upper\ndata: x\n\n"
    assert feed_only(stream) == [SSEEvent(b"x")]


def test_last_event_without_blank_line_is_flushed_by_finish() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: b\n") == [SSEEvent(b"a")]
    assert parser.finish() == [SSEEvent(b"b")]


def test_done_without_final_newline_is_flushed_by_finish() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: [DONE]") == [SSEEvent(b"a")]
    assert parser.finish() == [SSEEvent(b"[DONE]")]


def test_finish_keeps_event_and_id_of_flushed_event() -> None:
    assert parse(b"event: done\nid: 3\ndata: x") == [SSEEvent(b"x", event="done", id="3")]


def test_finish_on_empty_or_complete_stream_yields_nothing() -> None:
    assert parse() == []
    assert parse(b"data: a\n\n", b": bye") == [SSEEvent(b"a")]


def test_finish_resets_the_parser_for_a_new_stream() -> None:
    parser = SSEParser()
    parser.feed(b"event: e\ndata: half")
    assert parser.finish() == [SSEEvent(b"half", event="e")]
    assert parser.feed(b"\xef\xbb\xbfdata: new\n\n") == [SSEEvent(b"new")]


def test_every_two_chunk_split_of_a_chat_stream() -> None:
    assert parse(CHAT_STREAM) == CHAT_EVENTS
    for cut in range(len(CHAT_STREAM) + 1):
        head, tail = CHAT_STREAM[:cut], CHAT_STREAM[cut:]
        assert parse(head, tail) == CHAT_EVENTS, f"split at byte {cut}"


def test_every_three_chunk_split_of_a_small_stream() -> None:
    stream = b"event: e\r\ndata: \xc3\xa9\r\n\r\ndata: [DONE]\r\n\r\n"
    expected = [SSEEvent("é".encode(), event="e"), SSEEvent(b"[DONE]")]
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1):
            chunks = stream[:first], stream[first:second], stream[second:]
            assert parse(*chunks) == expected, f"split at {first}, {second}"


def test_byte_by_byte_feeding() -> None:
    assert parse(*(CHAT_STREAM[i : i + 1] for i in range(len(CHAT_STREAM)))) == CHAT_EVENTS


def test_utf8_character_split_across_chunks() -> None:
    snowman = "☃".encode()  # three bytes
    parser = SSEParser()
    assert parser.feed(b"event: " + snowman[:1]) == []
    assert parser.feed(snowman[1:] + b"\ndata: " + snowman[:2]) == []
    assert parser.feed(snowman[2:] + b"\n\n") == [SSEEvent(snowman, event="☃")]


def test_invalid_utf8_in_event_name_is_replaced() -> None:
    assert feed_only(b"event: a\xffb\ndata: \xff\n\n") == [SSEEvent(b"\xff", event="a\ufffdb")]


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 4])
def test_leading_bom_is_skipped(cut: int) -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert parse(stream[:cut], stream[cut:]) == [SSEEvent(b"x")]


def test_only_one_leading_bom_is_skipped() -> None:
    # A second BOM makes the first field name "\ufeffdata", an unknown field.
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n") == [SSEEvent(b"y")]


def test_bom_after_the_start_is_not_skipped() -> None:
    assert parse(b"data: x\n\n\xef\xbb\xbfdata: y\n\n") == [SSEEvent(b"x")]


def test_partial_bom_prefix_that_is_not_a_bom_is_kept() -> None:
    assert parse(b"\xef", b"\xbbdata: x\n\ndata: y\n\n") == [SSEEvent(b"y")]
    assert parse(b"d", b"ata: x\n\n") == [SSEEvent(b"x")]


def test_over_long_line_in_one_chunk_raises() -> None:
    parser = SSEParser(max_line_bytes=64)
    with pytest.raises(SSEProtocolError, match="longer than 64 bytes"):
        parser.feed(b"data: " + b"x" * 100 + b"\n\n")


def test_over_long_line_arriving_in_pieces_raises_before_its_end() -> None:
    parser = SSEParser(max_line_bytes=64)
    assert parser.feed(b"data: " + b"x" * 30) == []
    assert parser.feed(b"x" * 28) == []  # exactly 64 bytes buffered: still allowed
    with pytest.raises(SSEProtocolError):
        parser.feed(b"x")


def test_over_long_line_completed_by_a_chunk_raises() -> None:
    parser = SSEParser(max_line_bytes=64)
    assert parser.feed(b"data: " + b"x" * 50) == []
    with pytest.raises(SSEProtocolError):
        parser.feed(b"x" * 20 + b"\n\n")


def test_line_of_exactly_the_limit_is_accepted() -> None:
    line = b"data: " + b"x" * 58
    assert parse(line + b"\n\n", max_line_bytes=64) == [SSEEvent(b"x" * 58)]
    assert parse(line[:10], line[10:] + b"\n\n", max_line_bytes=64) == [SSEEvent(b"x" * 58)]


def test_long_line_in_many_pieces_is_reassembled() -> None:
    pieces = [b"data: "] + [b"0123456789abcdef"] * 4096 + [b"\n\n"]
    assert parse(*pieces) == [SSEEvent(b"0123456789abcdef" * 4096)]


def test_error_is_a_value_error() -> None:
    assert issubclass(SSEProtocolError, ValueError)


def test_many_events_in_one_chunk() -> None:
    stream = b"".join(b'data: {"n":%d}\n\n' % n for n in range(1000))
    events = feed_only(stream)
    assert events == [SSEEvent(b'{"n":%d}' % n) for n in range(1000)]


def test_events_are_immutable_values() -> None:
    event = SSEEvent(b"x", event="e", id="1")
    assert event == SSEEvent(b"x", "e", "1")
    assert hash(event) == hash(SSEEvent(b"x", "e", "1"))
    with pytest.raises(AttributeError):
        event.data = b"y"  # type: ignore[misc]


# Property test: chunk boundaries never change the parsed events.

_LINE_TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]))
_EVENT = st.tuples(
    st.text(st.characters(blacklist_characters="\r", blacklist_categories=["Cs"])),
    st.none() | _LINE_TEXT,
    st.none() | _LINE_TEXT.filter(lambda s: "\0" not in s),
)


def serialize(
    events: list[tuple[str, str | None, str | None]],
    eol: str,
    *,
    bom: bool,
    comments: bool,
    ending: str,
) -> bytes:
    """Write events as an event stream the way a provider would."""
    out: list[str] = ["\ufeff"] if bom else []
    for data, event, id_ in events:
        if comments:
            out.append(": keep-alive" + eol)
        if event is not None:
            out.append("event: " + event + eol)
        if id_ is not None:
            out.append("id: " + id_ + eol)
        out.extend("data: " + line + eol for line in data.split("\n"))
        out.append(eol)
    text = "".join(out)
    if ending != "complete" and events:
        text = text.removesuffix(eol)  # the final blank line
        if ending == "no_newline":
            text = text.removesuffix(eol)  # and the last line's own ending
    return text.encode()


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(_EVENT, max_size=8),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    comments=st.booleans(),
    ending=st.sampled_from(["complete", "no_blank_line", "no_newline"]),
    data=st.data(),
)
def test_any_chunking_yields_the_original_events(
    events: list[tuple[str, str | None, str | None]],
    eol: str,
    bom: bool,
    comments: bool,
    ending: str,
    data: st.DataObject,
) -> None:
    stream = serialize(events, eol, bom=bom, comments=comments, ending=ending)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts"))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    whole = parse(stream)
    assert parse(*chunks) == whole
    assert whole == [SSEEvent(data.encode(), event=event, id=id_) for data, event, id_ in events]
