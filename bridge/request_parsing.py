"""A client's request body -> a typed request and its input items; a large one off the
event loop, in short steps (pure but for the thread)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from bridge.errors import ApiError
from bridge.letting_go import empty_in_steps
from bridge.lone_surrogates import replace_lone_surrogates
from bridge.wire import validation_error_parts
from bridge.wire.responses import ResponsesRequest, input_items

_REQUEST_DECODER = msgspec.json.Decoder(ResponsesRequest)
# A request whose body is this large or more is decoded item by item in a thread, and
# does its other CPU-bound steps (translating, shaping, encoding) in threads too, so other
# streams go on meanwhile (a 50 MB one takes seconds). Below, on the loop is quicker and
# short enough, long lists of items, messages or tools still going to threads by their
# count: for a 5 MB Codex conversation, decoding takes 2.7 ms in one pass (item by item,
# 1.5x that), and each thread's hand-off costs more than it spares; 8 MiB of the
# smallest items (262,144) take 60 ms to decode.
LARGE_REQUEST = 8 * 1024 * 1024


def parse_request(body: bytes) -> tuple[ResponsesRequest, list[Any]]:
    """The request body as a typed request and its input as items; ApiError 400 naming the
    field otherwise."""
    try:
        request = _REQUEST_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        message, path = validation_error_parts(exc)
        param = path or None
        text = f"Invalid value for '{param}': {message}" if param else message
        raise ApiError.invalid(text, param) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        repaired = replace_lone_surrogates(body) if isinstance(exc, msgspec.DecodeError) else None
        if repaired is not None:
            return parse_request(repaired)
        raise ApiError.invalid(f"The body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError.invalid("The body is nested too deeply", code="invalid_json") from None
    return request, input_items(request)


class _RawInput(ResponsesRequest):
    """The request with its input items left undecoded, for decoding one at a time."""

    input: str | list[msgspec.Raw] | None = None


_RAW_INPUT = msgspec.json.Decoder(_RawInput)
_ITEM = msgspec.json.Decoder(Any)


def _parse_large(body: bytes) -> tuple[ResponsesRequest, list[Any]]:
    """parse_request in short steps: one scan of the body, then each item on its own, so a
    thread doing it lets the event loop in between (one decode of everything would hold
    the interpreter for the whole body)."""
    try:
        raw = _RAW_INPUT.decode(body)
        items = [_ITEM.decode(item) for item in raw.input] if isinstance(raw.input, list) else None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return parse_request(body)  # the same error, worded as for any body
    fields = msgspec.structs.asdict(raw)
    if items is not None and isinstance(raw.input, list):
        empty_in_steps(raw.input)  # the items' raw JSON, no longer needed
    fields["input"] = raw.input if items is None else items
    request = ResponsesRequest(**fields)
    return request, input_items(request)


async def parse_request_off_loop(body: bytes) -> tuple[ResponsesRequest, list[Any]]:
    """parse_request; in a thread, in short steps, for a large body, so other streams go
    on meanwhile."""
    if len(body) < LARGE_REQUEST:
        return parse_request(body)
    return await asyncio.to_thread(_parse_large, body)
