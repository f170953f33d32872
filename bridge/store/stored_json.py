"""Stored JSON as the API serves it: a response with its tool list put back and every field a
response has today (for responses older releases stored too), an input item with its id."""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.records import normalize_input_item
from bridge.translate.text_echo import echo_text
from bridge.translate.tool_list import echo_tools
from bridge.wire.events import ResponseObject

ITEM = msgspec.json.Decoder(dict[str, Any])
_ITEMS = msgspec.json.Decoder(list[dict[str, Any]])
_TOOLS = msgspec.json.Decoder(list[msgspec.Raw])
# Response fields once null when the request did not set them, numbers now (the defaults
# of bridge.wire.events.ResponseObject).
_RESPONSE = msgspec.json.Decoder(ResponseObject)
_NULL = msgspec.Raw(b"null")
_NUMBER_DEFAULTS: dict[str, float | int] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "top_logprobs": 0,
}
_ENCODER = msgspec.json.Encoder()


class _Output(msgspec.Struct):
    output: list[dict[str, Any]] = []


class _RawOutput(msgspec.Struct):
    output: list[msgspec.Raw] = []


_OUTPUT = msgspec.json.Decoder(_Output)
_RAW_OUTPUT = msgspec.json.Decoder(_RawOutput)


def with_tools(body: bytes, tools: bytes | None, tools_hash: bytes | None) -> bytes:
    """A stored response object as served: its tool list put back (kept once, by digest,
    as the request sent it; `tools` is that list, None when it is gone) and every field a
    response has today, for responses stored by older releases too."""
    fields = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    for name, default in _NUMBER_DEFAULTS.items():
        if bytes(fields.get(name, _NULL)) == bytes(_NULL):
            # Null in responses stored before the field was a number.
            fields[name] = msgspec.Raw(_ENCODER.encode(default))
    _drop_old_nulls(fields)
    try:
        response = _RESPONSE.decode(_ENCODER.encode(fields))
    except msgspec.ValidationError:
        return bytes(body)  # not a response this release wrote: served as it was kept
    if tools_hash is not None:
        response.tools = echo_tools(_TOOLS.decode(tools)) if tools else []
    return _ENCODER.encode(response)


def _drop_old_nulls(fields: dict[str, msgspec.Raw]) -> None:
    """Nulls that older releases stored where the specification allows only a value or no
    field: a reasoning item's encrypted_content, text.verbosity and the text format's
    unused fields."""
    output = fields.get("output")
    if output is not None and b'"encrypted_content":null' in bytes(output):
        items = _ITEMS.decode(output)
        for item in items:
            if item.get("encrypted_content", "") is None:
                del item["encrypted_content"]
        fields["output"] = msgspec.Raw(_ENCODER.encode(items))
    text = fields.get("text")
    if text is not None and bytes(text) != bytes(_NULL):
        fields["text"] = msgspec.Raw(_ENCODER.encode(echo_text(ITEM.decode(text))))


def render_item(item_id: str, body: bytes | str) -> dict[str, Any]:
    """A stored input item as the API lists it."""
    return normalize_input_item(ITEM.decode(body), item_id)


def output_items(response: bytes) -> list[dict[str, Any]]:
    """A stored response's output items."""
    return _OUTPUT.decode(response).output


def output_item(response: bytes, position: int) -> bytes | None:
    """The JSON of a stored response's output item at `position` (None: it has fewer)."""
    output = _RAW_OUTPUT.decode(response).output
    return bytes(output[position]) if 0 <= position < len(output) else None
