"""The bridge's memory over a long run: RSS of its own process, measured from outside.

    python bench/memory_soak.py [--requests 10000] [--warmup 1000]

Starts bench/fake_upstream.py (short answers with reasoning) and `responses-bridge serve`
(persistence on) as processes on loopback, then sends requests one after another: every
other one streamed, every fourth chained to the last stored response with
previous_response_id, each with its own input. After the warm-up (connection pools, caches,
the allocator's arenas) it samples the bridge's RSS every 1,000 requests and prints the
samples and the growth as a Markdown table row. A leak of 1 KB per request would show as
about 9 MB over the default run; the target is under 8 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from processes import (
    BENCH,
    PYTHON,
    bridge_config,
    bridge_env,
    free_port,
    process,
    wait_until_up,
)

TARGET_GROWTH_MB = 8.0
SAMPLE_EVERY = 1000
TIMEOUT = aiohttp.ClientTimeout(total=60)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def soak(url: str, pid: int, warmup: int, requests: int) -> list[tuple[int, float]]:
    previous: str | None = None
    samples: list[tuple[int, float]] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for number in range(warmup + requests):
            body: dict[str, Any] = {"model": "bench", "input": f"question {number}"}
            body["stream"] = number % 2 == 0
            if number % 4 == 1 and previous is not None:
                body["previous_response_id"] = previous
            async with session.post(f"{url}/v1/responses", json=body) as response:
                data = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"request {number}: HTTP {response.status} {data[:300]!r}")
            if not body["stream"]:
                previous = orjson.loads(data)["id"]
            done = number + 1 - warmup
            if done >= 0 and done % SAMPLE_EVERY == 0:
                samples.append((done, rss_mb(pid)))
                print(f"{done:>6} requests after warm-up: RSS {samples[-1][1]:.1f} MB", flush=True)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="measured requests")
    parser.add_argument("--warmup", type=int, default=1000, help="requests before measuring")
    args = parser.parse_args()
    up_port, bridge_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        config = bridge_config(Path(scratch), upstream)
        serve = [PYTHON, "-m", "bridge", "serve", "--config", str(config), "--port"]
        with (
            process([PYTHON, str(BENCH / "fake_upstream.py"), str(up_port), "8", "8"]),
            process([*serve, str(bridge_port)], env=bridge_env(Path(scratch))) as bridge,
        ):
            wait_until_up(f"{upstream}/v1/models")
            wait_until_up(f"{bridge_url}/healthz")
            samples = asyncio.run(soak(bridge_url, bridge.pid, args.warmup, args.requests))
    growth = samples[-1][1] - samples[0][1]
    seconds = time.monotonic() - started
    print("\n| requests | RSS after warm-up | RSS at the end | growth | target | time |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.requests:,} | {samples[0][1]:.1f} MB | {samples[-1][1]:.1f} MB | "
        f"{growth:+.2f} MB | under {TARGET_GROWTH_MB:g} MB | {seconds:.0f} s |"
    )
    return 0 if growth < TARGET_GROWTH_MB else 1


if __name__ == "__main__":
    sys.exit(main())
