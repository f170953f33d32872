"""Streams the value of `{"input": "..."}` out of JSON arguments as they arrive.

A custom tool (Codex's apply_patch) is offered upstream as a function whose arguments
are `{"input": "<text>"}`; its text is forwarded to the client while it is generated,
so this decodes that one JSON string incrementally, escapes split across chunks included.
"""

from __future__ import annotations

import json
import re

_HEAD = re.compile(r'\s*\{\s*"input"\s*:\s*"')
_PLAIN = re.compile(r'[^\\"]+')
_COMPACT_HEAD = '{"input":"'
_SIMPLE_ESCAPES = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


class StringFieldStream:
    """Feed argument fragments; get back the decoded text of the `input` string so far."""

    __slots__ = ("_buffer", "_high_surrogate", "_state")

    def __init__(self) -> None:
        self._buffer = ""
        # "head": before the string; "string": inside it; "done"; "off": not that shape.
        self._state = "head"
        self._high_surrogate: str | None = None

    @property
    def active(self) -> bool:
        """False once the arguments turned out not to start with `{"input": "`."""
        return self._state != "off"

    def feed(self, fragment: str) -> str:
        if self._state in ("done", "off"):
            return ""
        self._buffer += fragment
        if self._state == "head":
            match = _HEAD.match(self._buffer)
            if match is None:
                compact = "".join(self._buffer.split())
                if not _COMPACT_HEAD.startswith(compact):
                    self._state = "off"
                return ""
            self._buffer = self._buffer[match.end() :]
            self._state = "string"
        return self._decode()

    def _decode(self) -> str:
        text = self._buffer
        out: list[str] = []
        i = 0
        end = len(text)
        while i < end:
            plain = _PLAIN.match(text, i)
            if plain is not None:
                self._flush_surrogate(out)
                out.append(plain.group())
                i = plain.end()
            if i >= end:
                break
            if text[i] == '"':
                self._flush_surrogate(out)
                self._state = "done"
                i = end
                break
            # A backslash escape: wait until it is complete.
            if i + 1 >= end:
                break
            marker = text[i + 1]
            if marker == "u":
                if i + 6 > end:
                    break
                code = int(text[i + 2 : i + 6], 16) if _is_hex(text[i + 2 : i + 6]) else 0xFFFD
                i += 6
                self._append_code_unit(code, out)
                continue
            self._flush_surrogate(out)
            out.append(_SIMPLE_ESCAPES.get(marker, marker))
            i += 2
        self._buffer = text[i:]
        return "".join(out)

    def _append_code_unit(self, code: int, out: list[str]) -> None:
        if 0xD800 <= code < 0xDC00:
            self._flush_surrogate(out)
            self._high_surrogate = chr(code)
            return
        if 0xDC00 <= code < 0xE000 and self._high_surrogate is not None:
            pair = self._high_surrogate + chr(code)
            self._high_surrogate = None
            out.append(pair.encode("utf-16", "surrogatepass").decode("utf-16"))
            return
        self._flush_surrogate(out)
        out.append(chr(code) if not 0xD800 <= code < 0xE000 else "\ufffd")

    def _flush_surrogate(self, out: list[str]) -> None:
        if self._high_surrogate is not None:
            out.append("\ufffd")
            self._high_surrogate = None


def _is_hex(value: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in value)


def custom_tool_input(arguments: str) -> str:
    """The final input text of a custom tool call from its complete arguments.

    Models sometimes ignore the one-parameter schema and send the raw text as the
    arguments; that text is then the input.
    """
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict):
        value = parsed.get("input")
        if isinstance(value, str):
            return value
    if isinstance(parsed, str):
        return parsed
    return arguments
