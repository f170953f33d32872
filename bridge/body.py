"""An upstream request body kept as the pieces it was encoded in.

A turn on a WebSocket reuses the encoded messages of the conversation so far, so its body
is a few new pieces around many old ones. Joining them into one buffer would copy the
whole conversation on every turn; the payload here writes them as they are, with the
Content-Length of their sum (no chunked encoding, which some local servers refuse).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

# Pieces are handed to the transport in runs of about this many bytes: one write per
# message would cost a system call each; one write for everything, a copy of it all.
WRITE_BYTES = 256 * 1024


class UpstreamBody:
    """The JSON body of an upstream request, as the pieces that make it up in order."""

    __slots__ = ("pieces", "size")

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = tuple(pieces)
        self.size = sum(len(piece) for piece in self.pieces)

    @classmethod
    def of(cls, data: bytes) -> UpstreamBody:
        return cls((data,))

    @classmethod
    def in_runs(cls, pieces: Sequence[bytes]) -> UpstreamBody:
        """The pieces with each run of small ones joined into one of about WRITE_BYTES:
        the same body in a few hundred pieces instead of millions (what a thread does for a
        very long conversation, so that writing it is a few steps on the event loop)."""
        runs: list[bytes] = []
        run: list[bytes] = []
        run_bytes = 0
        for piece in pieces:
            if len(piece) >= WRITE_BYTES:
                if run:
                    runs.append(b"".join(run))
                    run, run_bytes = [], 0
                runs.append(piece)
                continue
            run.append(piece)
            run_bytes += len(piece)
            if run_bytes >= WRITE_BYTES:
                runs.append(b"".join(run))
                run, run_bytes = [], 0
        if run:
            runs.append(b"".join(run))
        return cls(runs)

    def as_bytes(self) -> bytes:
        """The whole body in one buffer (a copy: for logs and tests)."""
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)

    def payload(self) -> Payload:
        """A fresh aiohttp payload for one attempt (a retry sends the same pieces again)."""
        return _PiecesPayload(self)


class _PiecesPayload(Payload):
    _autoclose = True

    def __init__(self, body: UpstreamBody) -> None:
        super().__init__(body, content_type="application/json")
        self._body = body
        self._size = body.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self._body.as_bytes().decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self._body.as_bytes()

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        remaining = content_length
        run: list[bytes] = []
        run_bytes = 0
        for piece in self._body.pieces:
            if remaining is not None:
                if remaining <= 0:
                    break
                piece = piece[:remaining]
                remaining -= len(piece)
            if len(piece) >= WRITE_BYTES:
                # Large enough on its own: written as it is, without a copy.
                if run:
                    await writer.write(b"".join(run))
                    run, run_bytes = [], 0
                await writer.write(piece)
                continue
            run.append(piece)
            run_bytes += len(piece)
            if run_bytes >= WRITE_BYTES:
                await writer.write(b"".join(run))
                run, run_bytes = [], 0
        if run:
            await writer.write(b"".join(run))


def join_messages(head: bytes, messages: Sequence[bytes], tail: bytes) -> list[bytes]:
    """The pieces of `{...,"messages":[m1,m2,...],...}` around already encoded messages."""
    pieces: list[Any] = [head, b'"messages":[']
    for index, message in enumerate(messages):
        if index:
            pieces.append(b",")
        pieces.append(message)
    pieces.append(b"]")
    pieces.append(tail)
    return pieces


# A conversation's encoded messages are kept in pieces of about this size: a handful for a
# long conversation, each turn joining only its own new messages into them.
SEGMENT_BYTES = 1024 * 1024
# ... or of at most this many messages.
SEGMENT_MESSAGES = 256


def extend_pieces(pieces: Sequence[bytes], messages: Sequence[bytes]) -> tuple[bytes, ...]:
    """`pieces` (messages, single or comma-joined runs) followed by `messages`, the small
    pieces before the last joined into one once they reach SEGMENT_BYTES (or
    SEGMENT_MESSAGES). The last message always stays a piece of its own: a tool call that
    joins the conversation's last assistant turn replaces it."""
    out = [*pieces, *messages]
    end = len(out) - 1
    start = end
    total = 0
    while start > 0 and len(out[start - 1]) < SEGMENT_BYTES:
        start -= 1
        total += len(out[start])
    if end - start >= 2 and (total >= SEGMENT_BYTES or end - start >= SEGMENT_MESSAGES):
        out[start:end] = [b",".join(out[start:end])]
    return tuple(out)
