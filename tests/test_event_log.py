"""A background response's event log: read back exactly, from any event on, while it is
written (small frames gathered, large ones written at once), and after it is stored
compressed (or, from older releases, not)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from bridge.event_log import EventLog, stored_frames


def _frames(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [
        rng.choice([0, 10, 3000, 40_000, 600_000]) if n % 37 == 0 else rng.randint(0, 900)
        for n in range(count)
    ]
    return [
        b'event: e\ndata: {"n":%d,"t":"%s"}\n\n' % (n, b"y" * size) for n, size in enumerate(sizes)
    ]


async def _all(log: EventLog, position: int) -> bytes:
    parts = []
    while position < len(log):
        data, position = await log.read(position)
        assert data
        parts.append(data)
    return b"".join(parts)


async def test_frames_read_back_from_any_position_while_they_are_written(tmp_path: Path) -> None:
    frames = _frames(3000, seed=22)
    log = await EventLog.create(tmp_path)
    try:
        rng = random.Random(7)

        async def reader() -> None:
            for _ in range(300):
                if len(log):
                    position = rng.randrange(len(log))
                    data, after = await log.read(position)
                    assert data == b"".join(frames[position:after])
                await asyncio.sleep(0)

        readers = asyncio.gather(*(reader() for _ in range(3)))
        for frame in frames:
            await log.append(frame)
        await readers
        assert await _all(log, 0) == b"".join(frames)
        assert await _all(log, 1234) == b"".join(frames[1234:])
        stored = await log.compressed()
    finally:
        await log.close()
    assert len(stored) < log.size // 5
    for after in (-1, 0, 41, 2998, 2999):
        chunks = [chunk async for chunk in stored_frames(stored, after)]
        assert b"".join(chunks) == b"".join(frames[after + 1 :])


async def test_a_log_stored_by_an_older_release_reads_as_it_is() -> None:
    frames = _frames(50, seed=3)
    chunks = [chunk async for chunk in stored_frames(b"".join(frames), 9)]
    assert b"".join(chunks) == b"".join(frames[10:])
