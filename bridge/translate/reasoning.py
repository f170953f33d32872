"""The bridge's `encrypted_content` for reasoning items: an opaque, versioned carrier.

Codex replays reasoning items verbatim, and older builds drop `content` on replay, so the
reasoning text also travels in `encrypted_content`, with the provider's own
`reasoning_details` when there are any (OpenRouter wants them back unchanged). It is not
secret (the client already saw the text); it only has to survive the round trip and be
recognised as ours. rb1: the text alone; rb2: JSON with text and details.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Sequence
from typing import Any

import msgspec

_TEXT_ONLY = "rb1."
_WITH_DETAILS = "rb2."
Details = list[dict[str, Any]]


class Reasoning(msgspec.Struct, frozen=True):
    """A turn's reasoning: its text, and the provider's structured details if any."""

    text: str
    details: Details | None = None


_REASONING = msgspec.json.Decoder(Reasoning)


def _pack(prefix: str, data: bytes) -> str:
    return prefix + base64.urlsafe_b64encode(zlib.compress(data, 6)).decode("ascii")


def encode_reasoning(text: str, details: Details | None = None) -> str:
    """Pack reasoning into the versioned carrier string."""
    if details:
        return _pack(_WITH_DETAILS, msgspec.json.encode(Reasoning(text, details)))
    return _pack(_TEXT_ONLY, text.encode("utf-8"))


def decode_reasoning(value: str) -> Reasoning | None:
    """The reasoning inside a carrier string, or None if it is not one of ours."""
    prefix = value[:4]
    if prefix not in (_TEXT_ONLY, _WITH_DETAILS):
        return None
    try:
        data = zlib.decompress(base64.urlsafe_b64decode(value[4:]))
        if prefix == _TEXT_ONLY:
            return Reasoning(data.decode("utf-8"))
        return _REASONING.decode(data)
    except (binascii.Error, ValueError, zlib.error, msgspec.DecodeError):
        return None


def merge_details(parts: list[Details]) -> Details:
    """Streamed reasoning_details fragments as one list: entries with the same `index` are
    one entry, their text fields joined (OpenRouter streams them piece by piece)."""
    merged: dict[Any, dict[str, Any]] = {}
    for fragment in parts:
        for position, entry in enumerate(fragment):
            key = entry.get("index", f"@{len(merged)}:{position}")
            current = merged.get(key)
            if current is None:
                merged[key] = dict(entry)
                continue
            for name, value in entry.items():
                if name in ("text", "summary", "data") and isinstance(value, str):
                    # A fragment may have sent the field as null first.
                    previous = current.get(name)
                    current[name] = (previous if isinstance(previous, str) else "") + value
                elif value is not None:
                    current[name] = value
    return list(merged.values())


def turn_fingerprint(text: str, call_ids: Sequence[str]) -> str:
    """A stable id for an assistant turn: its text and tool call ids, hashed.

    The same turn gives the same fingerprint in every process (unlike `hash()`), whether
    computed from the streamed answer or from the turn as a client replays it.
    """
    digest = hashlib.sha256(b"turn-v1\x00")
    digest.update(text.encode("utf-8"))
    for call_id in call_ids:
        digest.update(b"\x00")
        digest.update(call_id.encode("utf-8"))
    return digest.hexdigest()[:32]
