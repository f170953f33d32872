"""The stream translator run on Chat chunks, its events read back as a client decodes
them from the wire, and the compact golden form the translation tests compare."""

from __future__ import annotations

import json
from typing import Any

from bridge.sse import encode_frames
from bridge.translate.stream import StreamTranslator
from bridge.translate.tools import ToolMap
from bridge.wire.chat import CHUNK_DECODER
from bridge.wire.events import ResponseObject


def translator(
    tool_map: ToolMap | None = None, encrypted: bool = False, summary: bool = False
) -> StreamTranslator:
    """A translator for one response, as a turn makes it."""
    response = ResponseObject(id="resp_1", created_at=1, model="m")
    return StreamTranslator(
        response,
        tool_map or ToolMap(),
        include_encrypted_reasoning=encrypted,
        reasoning_summary=summary,
    )


def run(
    t: StreamTranslator, chunks: list[dict[str, Any]], finish: bool = True
) -> list[dict[str, Any]]:
    """All events as the client would decode them from the wire."""
    events = t.start()
    for payload in chunks:
        events += t.feed(CHUNK_DECODER.decode(json.dumps(payload)))
    if finish:
        events += t.finish()
    return wire_events(encode_frames(events))


def wire_events(frames: bytes) -> list[dict[str, Any]]:
    """Encoded SSE frames decoded; each frame's `event:` line names its event's type."""
    decoded = []
    for frame in frames.decode().split("\n\n"):
        if not frame:
            continue
        event_line, data_line = frame.split("\n")
        event = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {event['type']}"
        decoded.append(event)
    return decoded


def summary(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A compact golden form: type plus the field that matters for each event."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        kind = e["type"].removeprefix("response.")
        if "item" in e:
            out.append((kind, e["output_index"], e["item"]["type"]))
        elif "delta" in e:
            out.append((kind, e["output_index"], e["delta"]))
        elif "response" in e:
            out.append((kind, e["response"]["status"]))
        else:
            out.append((kind, e["output_index"]))
    return out
