"""A load client for benchmarks: N streams at a time, timings per stream, JSON out.

    python bench/load.py URL KIND CONCURRENCY REQUESTS

KIND is "chat" (a Chat Completions server directly) or "responses" (a Responses bridge).
Prints one JSON object: per-stream time to first byte and to first text delta, total
time, text delta events, all events, bytes, and whether the answer completed.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson

BODIES = {
    "chat": {
        "model": "bench",
        "stream": True,
        "messages": [{"role": "user", "content": "Write a long story."}],
    },
    "responses": {"model": "bench", "stream": True, "input": "Write a long story."},
}
PATHS = {"chat": "/chat/completions", "responses": "/responses"}
# What marks a text delta in each wire format.
DELTA = {"chat": b'"content":"', "responses": b'"type":"response.output_text.delta"'}
# What marks a complete answer in each wire format.
END = {"chat": b"[DONE]", "responses": b'"type":"response.completed"'}
EVENT = b"data: "


async def one(session: aiohttp.ClientSession, url: str, kind: str) -> dict[str, float]:
    marker = DELTA[kind]
    started = time.perf_counter()
    first_byte = first_delta = 0.0
    deltas = 0
    events = 0
    complete = False
    size = 0
    tail = b""
    async with session.post(url + PATHS[kind], json=BODIES[kind]) as response:
        response.raise_for_status()
        async for data in response.content.iter_any():
            now = time.perf_counter()
            if not first_byte:
                first_byte = now - started
            size += len(data)
            window = tail + data
            found = window.count(marker)
            if found and not first_delta:
                first_delta = now - started
            deltas += found
            events += window.count(EVENT) - tail.count(EVENT)
            complete = complete or END[kind] in window
            tail = window[-(len(marker) - 1) :]
    return {
        "ttfb": first_byte,
        "ttft": first_delta,
        "total": time.perf_counter() - started,
        "deltas": deltas,
        "complete": complete,
        "events": events,
        "bytes": size,
    }


async def run(url: str, kind: str, concurrency: int, requests: int) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    results: list[dict[str, float]] = []
    queue = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            results.append(await one(session, url, kind))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await one(session, url, kind)  # warm the connection pools
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "streams": results}


if __name__ == "__main__":
    url, kind, concurrency, requests = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(run(url, kind, concurrency, requests))))
