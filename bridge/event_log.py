"""A background response's events, kept on disk while it runs and compressed when stored.

Every event is kept as its SSE frame, in order, so that any number of clients can follow
the response from any event on. A long answer makes many events (one per upstream read, and
its whole text again in the final ones), so the frames go to an unnamed temporary file
(gone with the process, whatever happens), with only their offsets in memory; reads and
writes of the file run in threads. Stored, the log is gzip-compressed (the frames repeat
the same envelope thousands of times): far from the database's 1 GB limit on one value.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import zlib
from array import array
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

# Frames gathered in memory before they are written out together.
WRITE_BYTES = 256 * 1024
# The most of the log one read takes (a follower far behind catches up in steps).
READ_BYTES = 1024 * 1024
# Compressed bytes handed to the decompressor at a time.
FEED_BYTES = 128 * 1024
GZIP = 31  # zlib's wbits for the gzip format
GZIP_MAGIC = b"\x1f\x8b"
# Fast compression: level 1 compresses event logs about as well (3x on text, far more on
# the envelopes) at ten times the speed of the default level.
COMPRESS_LEVEL = 1


class EventLog:
    """The frames of one response's events, in order, by position."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        # Where each frame starts; the log's size is the end of the last one.
        self._starts = array("q")
        self.size = 0
        # Frames not written to the file yet (the log's last bytes).
        self._pending = bytearray()
        self._written = 0
        self._writing = asyncio.Lock()

    @classmethod
    async def create(cls, directory: Path | None) -> EventLog:
        """A log in a temporary file of `directory` (None: the system's)."""
        return cls(await asyncio.to_thread(tempfile.TemporaryFile, dir=directory))

    def __len__(self) -> int:
        return len(self._starts)

    async def append(self, data: bytes) -> None:
        """Add a frame at the end; small ones are written out once WRITE_BYTES have
        gathered, a large one at once and without a copy (a final event carries the whole
        answer)."""
        if len(data) < WRITE_BYTES:
            self._starts.append(self.size)
            self.size += len(data)
            self._pending += data
            if len(self._pending) >= WRITE_BYTES:
                await self.flush()
            return
        await self.flush()
        async with self._writing:
            await asyncio.to_thread(os.pwrite, self._file.fileno(), data, self._written)
            # Known to readers only now, whole on disk.
            self._starts.append(self.size)
            self.size += len(data)
            self._written += len(data)

    async def flush(self) -> None:
        async with self._writing:
            if not self._pending:
                return
            # Kept in memory until written: a reader meanwhile finds them there.
            data = bytes(self._pending)
            await asyncio.to_thread(os.pwrite, self._file.fileno(), data, self._written)
            del self._pending[: len(data)]
            self._written += len(data)

    async def read(self, position: int) -> tuple[bytes, int]:
        """Frames from `position` on (at least one, about READ_BYTES at most) and the
        position after them: from memory, or from the file (only what a finished write put
        there, which always ends between two frames)."""
        starts = self._starts
        count = len(starts)
        if position >= count:
            return b"", position
        start = starts[position]
        written = self._written
        bound = self.size if start >= written else written
        after = position + 1
        while after < count and starts[after] < bound and starts[after] - start < READ_BYTES:
            after += 1
        end = starts[after] if after < count else self.size
        if start >= written:
            return bytes(self._pending[start - written : end - written]), after
        return await asyncio.to_thread(os.pread, self._file.fileno(), end - start, start), after

    async def compressed(self) -> bytes:
        """The whole log, gzip-compressed (in a thread), for the store."""
        await self.flush()
        return await asyncio.to_thread(self._compress)

    def _compress(self) -> bytes:
        compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, GZIP)
        parts = []
        offset = 0
        while offset < self._written:
            data = os.pread(self._file.fileno(), READ_BYTES, offset)
            if not data:
                break
            offset += len(data)
            parts.append(compressor.compress(data))
        parts.append(compressor.flush())
        return b"".join(parts)

    async def close(self) -> None:
        await asyncio.to_thread(self._file.close)


def _split(data: bytes) -> Iterator[bytes]:
    """Whole frames (a frame's JSON never holds a blank line)."""
    for part in data.split(b"\n\n"):
        if part:
            yield part + b"\n\n"


async def stored_frames(frames: bytes, after: int) -> AsyncIterator[bytes]:
    """The frames of a stored log (compressed or, as older releases stored it, not) after
    position `after`, about READ_BYTES at a time, decompressed in a thread."""
    if not frames.startswith(GZIP_MAGIC):
        chunk = b"".join(list(_split(frames))[after + 1 :])
        if chunk:
            yield chunk
        return
    decompressor = zlib.decompressobj(GZIP)
    position = 0
    rest = b""
    for offset in range(0, len(frames) + 1, FEED_BYTES):
        tail = frames[offset : offset + FEED_BYTES]
        last = offset + FEED_BYTES > len(frames)
        while True:
            data = rest + await asyncio.to_thread(decompressor.decompress, tail, READ_BYTES)
            tail = decompressor.unconsumed_tail
            done = last and not tail
            if done:
                data += decompressor.flush()
            cut = len(data) if done else data.rfind(b"\n\n") + 2
            if cut < 2 and not done:
                cut = 0
            data, rest = data[:cut], data[cut:]
            wanted = []
            for frame in _split(data):
                if position > after:
                    wanted.append(frame)
                position += 1
            if wanted:
                yield b"".join(wanted)
            if not tail:
                break
