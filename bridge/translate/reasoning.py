"""The bridge's `encrypted_content` for reasoning items: an opaque, versioned carrier.

Codex replays reasoning items verbatim, and older builds drop `content` on replay, so the
reasoning text also travels in `encrypted_content`. It is not secret (the client already
saw the text); it only has to survive the round trip and be recognised as ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import zlib
from collections.abc import Sequence

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
