"""What the relay's step costs per upstream event, in-process, on demand:

    python bench/relay_step_costs.py [--events 1,8,64,256] [--total 200000]

1. Decoding a read's `data:` payloads into ChatChunk structs one by one (what bridge.relay
   does) against all of them in one batch (joined into a JSON array, one decode call):
   issue 25 asked to keep the batch only if it is cheaper.
2. The emitter's lock (bridge.emitter.Emitter.send takes it once per send, not per event):
   an uncontended asyncio.Lock acquire and release, against the same code without it.

Figures are microseconds per event (1) and per send (2), the best of nine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bridge.event_loop import loop_factory
from bridge.wire.chat import CHUNK_DECODER, ChatChunk

BATCH_DECODER = msgspec.json.Decoder(list[ChatChunk])


def payloads(count: int) -> list[bytes]:
    """Content deltas as a fast provider streams them (OpenAI's chunk fields, one token)."""
    return [
        (
            b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"content":"tok%d "},"finish_reason":null}]}' % n
        )
        for n in range(count)
    ]


def best_of(runs: int, work: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def decode_costs(events: int, repeat: int) -> tuple[float, float]:
    data = payloads(events)

    def one_by_one() -> None:
        for _ in range(repeat):
            for payload in data:
                CHUNK_DECODER.decode(payload)

    def batched() -> None:
        for _ in range(repeat):
            BATCH_DECODER.decode(b"[" + b",".join(data) + b"]")

    total = events * repeat
    return best_of(9, one_by_one) / total * 1e6, best_of(9, batched) / total * 1e6


async def lock_costs(sends: int) -> tuple[float, float]:
    lock = asyncio.Lock()
    produced: list[int] = []

    async def with_lock() -> None:
        for n in range(sends):
            async with lock:
                produced.append(n)

    async def without() -> None:
        for n in range(sends):
            produced.append(n)

    results = []
    for body in (with_lock, without):
        best = float("inf")
        for _ in range(5):
            produced.clear()
            started = time.perf_counter()
            await body()
            best = min(best, time.perf_counter() - started)
        results.append(best / sends * 1e6)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", default="1,8,64,256", help="events in one read")
    parser.add_argument("--total", type=int, default=200_000, help="events decoded per run")
    options = parser.parse_args()
    for events in (int(n) for n in options.events.split(",")):
        single, batch = decode_costs(events, max(1, options.total // events))
        print(
            f"decode, {events:>4} events a read: one by one {single:.3f} us/event, "
            f"one batch {batch:.3f} us/event ({batch / single:.2f}x)"
        )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:  # the bridge's loop
        locked, bare = runner.run(lock_costs(200_000))
    print(
        f"emitter lock: {locked:.3f} us per send with it, {bare:.3f} us without "
        f"({locked - bare:.3f} us for the lock)"
    )


if __name__ == "__main__":
    main()
