"""Two measurements that once were timed unit tests, in-process, on demand:

    python bench/loop_and_objects.py [--items 300000] [--requests 1800]

1. The event loop while one request of many input items is decoded and translated: the
   longest stall other streams would see (target: under 0.3 s for 300,000 items; 1,000,000
   items decoded on the loop once froze it 2.9 s).
2. The objects the garbage collector tracks after batches of 300 requests (streamed and
   not, every fourth chained with previous_response_id), counted once the bridge is idle:
   bounded caches fill and empty (a few hundred objects up and down); a leak of one object
   per request grows by 300 a batch without end (target: the last count under 600 above
   the first).

Both ran in the test suite with fixed limits and failed on a loaded machine; the suite keeps
the behaviour (tests/test_hostile_peers.py, tests/test_faults.py), this keeps the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bridge.app import create_app
from bridge.config_load import parse_config

STALL_TARGET = 0.3
GROWTH_TARGET = 600
BATCH = 300

FRAMES = [
    b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"r"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"content":"a short answer"}}]}\n\n',
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3}}\n\n',
    b"data: [DONE]\n\n",
]


async def upstream(request: web.Request) -> web.StreamResponse:
    await request.read()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b"".join(FRAMES))
    await response.write_eof()
    return response


async def servers(state: Path) -> tuple[TestServer, TestServer]:
    fake = web.Application(client_max_size=1024**3)
    fake.router.add_post("/v1/chat/completions", upstream)
    up = TestServer(fake)
    await up.start_server()
    config = parse_config(
        "[server]\nmax_request_bytes = 1073741824\nmax_request_bytes_in_flight = 1073741824\n"
        f'[store]\npath = "{state / "bridge.db"}"\nspool_dir = "{state / "spool"}"\n'
        f'[providers.fake]\nbase_url = "{str(up.make_url("")).rstrip("/")}/v1"\n'
        '[models.bench]\nprovider = "fake"\n'
    )
    bridge = TestServer(create_app(config))
    await bridge.start_server()
    return up, bridge


async def stall(url: str, items: int) -> float:
    """The longest the loop went without running a 10 ms timer during the request."""
    body = json.dumps(
        {
            "model": "bench",
            "input": [{"role": "user", "content": f"item {n}"} for n in range(items)],
            "store": False,
        }
    ).encode()
    worst = 0.0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal worst
        loop = asyncio.get_running_loop()
        while not done.is_set():
            began = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - began - 0.01)

    watcher = asyncio.ensure_future(watch())
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=io.BytesIO(body), headers={"Content-Type": "application/json"}
        ) as response,
    ):
        await response.read()
        assert response.status == 200, response.status
    done.set()
    await watcher
    return worst


async def settled_objects(tasks: int) -> int:
    await asyncio.sleep(0.2)
    for _ in range(100):
        if len(asyncio.all_tasks()) <= tasks:
            break
        await asyncio.sleep(0.1)
    counts = []
    for _ in range(3):
        gc.collect()
        counts.append(len(gc.get_objects()))
        await asyncio.sleep(0.05)
    return min(counts)


async def object_growth(url: str, requests: int) -> list[int]:
    previous: str | None = None
    marks: list[int] = []
    tasks = len(asyncio.all_tasks())
    async with aiohttp.ClientSession() as session:

        async def batch(first: int) -> None:
            nonlocal previous
            for number in range(first, first + BATCH):
                body: dict[str, Any] = {"model": "bench", "input": f"question {number}"}
                body["stream"] = number % 2 == 0
                if number % 4 == 1 and previous is not None:
                    body["previous_response_id"] = previous
                async with session.post(url, json=body) as response:
                    data = await response.read()
                if not body["stream"]:
                    previous = json.loads(data)["id"]

        await batch(0)  # warm-up
        start = await settled_objects(tasks)
        for first in range(BATCH, BATCH + requests, BATCH):
            await batch(first)
            marks.append(await settled_objects(tasks) - start)
    return marks


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=300_000)
    parser.add_argument("--requests", type=int, default=6 * BATCH)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rb-bench-") as state:
        up, bridge = await servers(Path(state))
        try:
            url = str(bridge.make_url("/v1/responses"))
            worst = await stall(url, args.items)
            marks = await object_growth(url, args.requests)
        finally:
            await bridge.close()
            await up.close()
    print(f"| longest loop stall, {args.items:,} items | under {STALL_TARGET} s | {worst:.3f} s |")
    print(
        f"| objects after each {BATCH} requests | last under {GROWTH_TARGET} above the first "
        f"| {', '.join(map(str, marks))} |"
    )
    return 0 if worst < STALL_TARGET and marks[-1] < GROWTH_TARGET else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
