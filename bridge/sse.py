"""Server-sent events by hand: the incremental parser of an upstream's byte stream, and the
one encoder of the bridge's own events."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from bridge.wire.events import ResponseEvent

__all__ = ["DONE", "SSEEvent", "SSEParser", "SSEProtocolError", "encode_frames"]

# The sentinel the Open Responses specification ends a stream with (OpenAI's own streams
# end with it too; every SDK and Codex skip it).
DONE = b"data: [DONE]\n\n"
_ENCODER = msgspec.json.Encoder()


def encode_frames(events: Iterable[ResponseEvent]) -> bytes:
    """Events as SSE frames (`event:` and `data:` lines), ready for one write."""
    buffer = bytearray()
    for event in events:
        buffer += event.frame_prefix
        _ENCODER.encode_into(event, buffer, -1)
        buffer += b"\n\n"
    return bytes(buffer)


_BOM = b"\xef\xbb\xbf"
_CR = 0x0D
_LF = 0x0A
_COLON = 0x3A


class SSEProtocolError(ValueError):
    """The upstream event stream cannot be parsed safely."""


class SSEEvent(msgspec.Struct, frozen=True, gc=False):
    """One dispatched event: its data lines joined with LF, plus its event and id fields."""

    data: bytes
    event: str | None = None
    id: str | None = None


class SSEParser:
    """Incremental parser: feed it bytes as they arrive, get complete events back."""

    __slots__ = (
        "_at_start",
        "_data",
        "_data_len",
        "_event",
        "_id",
        "_max_event_bytes",
        "_max_line_bytes",
        "_pending_cr",
        "_tail",
        "_tail_len",
        "_whole_limit",
    )

    def __init__(
        self, *, max_line_bytes: int = 16 * 1024 * 1024, max_event_bytes: int = 16 * 1024 * 1024
    ) -> None:
        self._max_line_bytes = max_line_bytes
        # One event's data lines together (a stream of data: lines without a blank line
        # would otherwise grow without end).
        self._max_event_bytes = max_event_bytes
        # The longest `data: ` line the whole-events path takes (longer: line by line).
        self._whole_limit = min(max_line_bytes, max_event_bytes + 6)
        self._data_len = 0
        self._at_start = True
        self._pending_cr = False
        self._tail: list[bytes] = []
        self._tail_len = 0
        self._data: list[bytes] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Return all events completed by this chunk, in order."""
        if (
            chunk.endswith(b"\n\n")
            and not self._at_start
            and not self._tail
            and not self._data
            and not self._pending_cr
            and self._event is None
            and self._id is None
            and b"\r" not in chunk
        ):
            end = len(chunk) - 2
            if chunk.find(b"\n", 0, end) < 0:
                # One event, a paced provider's every read: taken here (anything but a
                # `data: ` line within the limit goes line by line below).
                if chunk.startswith(b"data: ") and end <= self._whole_limit:
                    return [SSEEvent(chunk[6:end])]
            else:
                whole = self._whole_events(chunk)
                if whole is not None:
                    return whole
        if self._at_start:
            # Only a BOM prefix is ever held in the tail while at the start.
            head = b"".join(self._tail) + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._tail = [head] if head else []
                return []
            self._at_start = False
            self._tail = []
            chunk = head[len(_BOM) :] if head.startswith(_BOM) else head
        if not chunk:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if chunk[0] == _LF:
                # The LF of a CRLF split across two chunks: the CR already ended the line.
                chunk = chunk[1:]
                if not chunk:
                    return []

        lines = chunk.splitlines()
        last = chunk[-1]
        rest: bytes | None = None
        if last == _CR:
            self._pending_cr = True
        elif last != _LF:
            rest = lines.pop()
        limit = self._max_line_bytes
        if self._tail and lines:
            self._tail.append(lines[0])
            lines[0] = b"".join(self._tail)
            self._tail = []
            self._tail_len = 0
            if len(lines[0]) > limit:
                raise SSEProtocolError(f"SSE line longer than {limit} bytes")
        if rest is not None:
            self._tail.append(rest)
            self._tail_len += len(rest)
            if self._tail_len > limit:
                raise SSEProtocolError(f"SSE line longer than {limit} bytes")
        if len(chunk) > limit and any(len(line) > limit for line in lines):
            raise SSEProtocolError(f"SSE line longer than {limit} bytes")
        return self._process(lines)

    def _whole_events(self, chunk: bytes) -> list[SSEEvent] | None:
        """The events of a chunk that holds only whole one-line `data: ` events, as
        providers write them, with nothing pending before it; None for anything else (a
        comment, another field, a multi-line or over-long event), which the line by line
        parse below takes instead."""
        limit = self._whole_limit
        events: list[SSEEvent] = []
        for piece in chunk[:-2].split(b"\n\n"):
            if not piece:
                continue  # a blank line more: it only ends an event that is not there
            if not piece.startswith(b"data: ") or b"\n" in piece or len(piece) > limit:
                return None
            events.append(SSEEvent(piece[6:]))
        return events

    def finish(self) -> list[SSEEvent]:
        """Flush a last unterminated line and undispatched event, then reset for a new stream."""
        lines = [b"".join(self._tail)] if self._tail and not self._at_start else []
        lines.append(b"")
        events = self._process(lines)
        self._at_start = True
        self._pending_cr = False
        self._tail = []
        self._tail_len = 0
        return events

    def _process(self, lines: list[bytes]) -> list[SSEEvent]:
        """Apply complete lines to the pending event, collecting the events they dispatch."""
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    joined = data[0] if len(data) == 1 else b"\n".join(data)
                    events.append(SSEEvent(joined, self._event, self._id))
                    data.clear()
                    self._data_len = 0
                self._event = None
                self._id = None
            elif line.startswith(b"data: "):
                # _add_data, written out: this is every event of every stream.
                value = line[6:]
                size = self._data_len + len(value) + (1 if data else 0)
                if size > self._max_event_bytes:
                    raise SSEProtocolError(f"SSE event larger than {self._max_event_bytes} bytes")
                self._data_len = size
                data.append(value)
            elif line[0] != _COLON:
                self._field(line)
        return events

    def _add_data(self, value: bytes) -> None:
        # The event's data as it is handed on: its lines joined by newlines.
        self._data_len += len(value) + (1 if self._data else 0)
        if self._data_len > self._max_event_bytes:
            raise SSEProtocolError(f"SSE event larger than {self._max_event_bytes} bytes")
        self._data.append(value)

    def _field(self, line: bytes) -> None:
        """Apply one `name: value` line other than the common `data: ` form."""
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._add_data(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")
