"""Lone UTF-16 surrogate escapes in a client's JSON, replaced with U+FFFD (pure).

JavaScript strings are UTF-16: one cut in the middle of an emoji (a tool output truncated
to a length, a stream split between the two halves) keeps half of a surrogate pair, and
`JSON.stringify` writes it as an escape such as `\\ud83d`. That is valid JSON text but no
Unicode string, and msgspec refuses it ("Input data was truncated"). Replacing the half
with U+FFFD, as a UTF-8 decoder does with a broken sequence, keeps the request: refusing it
would make a client that replays its whole history (Codex) fail every later turn on that
one tool output.
"""

from __future__ import annotations

import re

# \uD800-\uDFFF: a high (D800-DBFF) or low (DC00-DFFF) surrogate, as an escape.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_REPLACEMENT = rb"\ufffd"
_BACKSLASH = 0x5C


def _is_escape(body: bytes, start: int) -> bool:
    """Whether the backslash at `start` begins an escape (it is not itself escaped)."""
    count = 0
    position = start - 1
    while position >= 0 and body[position] == _BACKSLASH:
        count += 1
        position -= 1
    return count % 2 == 0


def _is_high(escape: bytes) -> bool:
    return escape[3:4] in (b"8", b"9", b"a", b"b", b"A", b"B")


def replace_lone_surrogates(body: bytes) -> bytes | None:
    """The JSON text with every unpaired surrogate escape replaced by `\\ufffd`; None when
    it has none (then it is not what made a decoder refuse it)."""
    escapes = [m for m in _SURROGATE.finditer(body) if _is_escape(body, m.start())]
    out = bytearray()
    last = 0
    changed = False
    index = 0
    while index < len(escapes):
        match = escapes[index]
        escape = match.group()
        following = escapes[index + 1] if index + 1 < len(escapes) else None
        if (
            _is_high(escape)
            and following is not None
            and following.start() == match.end()
            and not _is_high(following.group())
        ):
            index += 2  # a pair: one character
            continue
        out += body[last : match.start()]
        out += _REPLACEMENT
        last = match.end()
        changed = True
        index += 1
    if not changed:
        return None
    out += body[last:]
    return bytes(out)
