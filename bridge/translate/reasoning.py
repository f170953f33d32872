"""The bridge's `encrypted_content` for reasoning items: an opaque, versioned carrier.

Codex replays reasoning items verbatim, and older builds drop `content` on replay, so the
reasoning text also travels in `encrypted_content`. It is not secret (the client already
saw the text); it only has to survive the round trip and be recognised as ours.
"""

from __future__ import annotations

import base64
import binascii
import zlib

_PREFIX = "rb1."


def encode_reasoning(text: str) -> str:
    """Pack reasoning text into the versioned carrier string."""
    packed = zlib.compress(text.encode("utf-8"), 6)
    return _PREFIX + base64.urlsafe_b64encode(packed).decode("ascii")


def decode_reasoning(value: str) -> str | None:
    """The reasoning text inside a carrier string, or None if it is not one of ours."""
    if not value.startswith(_PREFIX):
        return None
    try:
        packed = base64.urlsafe_b64decode(value[len(_PREFIX) :])
        return zlib.decompress(packed).decode("utf-8")
    except (binascii.Error, ValueError, zlib.error):
        return None
