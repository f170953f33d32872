"""Persistence costs, in-process: writing a turn, turns per second, rebuilding a chain.

python bench/store_bench.py                     # SQLite; prints one JSON object
python bench/store_bench.py --backend both      # SQLite and PostgreSQL side by side
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.event_loop import loop_factory
from bridge.records import record_turn
from bridge.scope import Scope
from bridge.store.sqlite import SQLiteStore
from bridge.translate.request import translate_request
from bridge.wire.events import (
    FunctionCallOutput,
    MessageOutput,
    OutputTextPart,
    ReasoningOutput,
    ReasoningTextPart,
    ResponseObject,
    Usage,
)
from bridge.wire.responses import ResponsesRequest


def request(previous: str | None, text: str) -> ResponsesRequest:
    body = {"model": "bench", "input": [{"role": "user", "content": text}]}
    if previous:
        body["previous_response_id"] = previous
    return msgspec.json.decode(json.dumps(body), type=ResponsesRequest)


def response(response_id: str, previous: str | None, index: int) -> ResponseObject:
    return ResponseObject(
        id=response_id,
        created_at=int(time.time()),
        model="bench",
        status="completed",
        previous_response_id=previous,
        output=[
            ReasoningOutput(
                id=f"rs_{index}",
                content=[ReasoningTextPart(text="think " * 80)],
                status="completed",
            ),
            MessageOutput(
                id=f"msg_{index}", content=[OutputTextPart(text="word " * 400)], status="completed"
            ),
            FunctionCallOutput(
                id=f"fc_{index}",
                call_id=f"call_{index}",
                name="f",
                arguments="{}",
                status="completed",
            ),
        ],
        usage=Usage(input_tokens=100, output_tokens=500, total_tokens=600),
    )


def replaying_request(turn: int, body: bytes) -> ResponsesRequest:
    """A stored conversation of its own, 20 items of 2 KB each (about 40 KB of input)."""
    items = [{"role": "user", "content": f"{turn}:{n} " + body.decode()} for n in range(20)]
    return msgspec.json.decode(
        msgspec.json.encode({"model": "bench", "input": items}), type=ResponsesRequest
    )


async def prune_holds(directory: Path, responses: int) -> dict[str, float]:
    """Prune `responses` stored responses (about 40 KB each): the longest the writer was
    busy with one step (no turn write waits longer), and the whole prune."""
    store = await SQLiteStore.open(directory / "prune.db", "full")
    body = b"x" * 2000
    try:
        for index in range(responses):
            req = replaying_request(index, body)
            await store.save_turn(record_turn(req, response(f"old_{index}", None, index), Scope()))
        size = (directory / "prune.db").stat().st_size
        holds: list[float] = []
        writer = store._connections.writer
        run = writer.run

        async def timed(work: Any, *args: Any, **kwargs: Any) -> Any:
            def measured(db: Any) -> Any:
                began = time.perf_counter()
                try:
                    return work(db, *args, **kwargs)
                finally:
                    holds.append(time.perf_counter() - began)

            return await run(measured)

        writer.run = timed  # type: ignore[method-assign]
        started = time.perf_counter()
        await store.prune(max_age_days=1e-9, max_size_mb=1024)
        elapsed = time.perf_counter() - started
        longest = max(holds)
    finally:
        await store.close()
    return {
        f"prune {size / 1e6:.0f} MB ({responses} responses): longest writer step ms": longest
        * 1000,
        f"prune {size / 1e6:.0f} MB: whole prune s": elapsed,
    }


class Releases:
    """How many turn writes come back together: the turns each commit holds (SQLite's group
    commit; one a transaction on PostgreSQL), and the writers resumed in one loop step (those
    whose wake-ups the loop runs with nothing else between them, as a burst of clients)."""

    def __init__(self, store: Any) -> None:
        self.groups: list[int] = []
        self.steps: list[int] = []
        self._step = 0
        turns = getattr(store, "_turns", None)
        if turns is not None:  # SQLite: count the turns of each commit
            write_group = turns._write_group

            async def counted(group: list[Any]) -> Any:
                self.groups.append(len(group))
                return await write_group(group)

            turns._write_group = counted

    def resumed(self) -> None:
        """A writer got its answer: counted with the others resumed before the loop runs
        what was scheduled after the first of them."""
        if self._step == 0:
            asyncio.get_running_loop().call_soon(self._end_step)
        self._step += 1

    def _end_step(self) -> None:
        self.steps.append(self._step)
        self._step = 0

    def figures(self) -> dict[str, float]:
        figures = {
            "turns resumed in one loop step, mean (16 writers)": statistics.mean(self.steps),
            "turns resumed in one loop step, max (16 writers)": max(self.steps),
        }
        if self.groups:
            figures["turns per commit, mean (16 writers)"] = statistics.mean(self.groups)
            figures["turns per commit, max (16 writers)"] = max(self.groups)
        return figures


async def measure(store: Any) -> dict[str, float]:
    """Turn writes, concurrent writers, chain rebuilds on an open store (either backend)."""
    latencies = []
    previous = None
    for index in range(500):
        req = request(previous, f"question {index}")
        record = record_turn(
            req,
            response(f"resp_{index}", previous, index),
            Scope(conversation="s:s"),
            session_id="s",
        )
        started = time.perf_counter()
        await store.save_turn_shielded(record)
        latencies.append(time.perf_counter() - started)
        previous = f"resp_{index}"

    releases = Releases(store)

    async def writer(worker: int, count: int) -> None:
        for index in range(count):
            req = request(None, "q")
            rid = f"resp_w{worker}_{index}"
            await store.save_turn_shielded(record_turn(req, response(rid, None, index), Scope()))
            releases.resumed()

    started = time.perf_counter()
    await asyncio.gather(*(writer(w, 125) for w in range(16)))
    turns_per_s = 2000 / (time.perf_counter() - started)

    rebuilds = []
    last = "resp_199"  # the end of a 200-turn chain
    for _ in range(30):
        started = time.perf_counter()
        chain = await store.chain(last)
        translate_request(request(last, "next"), "bench", history=chain.items)
        rebuilds.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "turn write p50 ms (before response.completed)": statistics.median(latencies) * 1000,
        "turn write p99 ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "turns persisted per second (16 concurrent writers)": turns_per_s,
        "rebuild a 200-turn previous_response_id chain p50 ms": statistics.median(rebuilds) * 1000,
        **releases.figures(),
    }


async def sqlite(scratch: Path) -> dict[str, float]:
    store = await SQLiteStore.open(scratch / "bench.db", "full")
    try:
        results = await measure(store)
    finally:
        await store.close()
    return {**results, **await prune_holds(scratch, 2000)}


async def postgresql(scratch: Path) -> dict[str, float]:
    """The same on a throwaway PostgreSQL server (tests/postgres.py), durable commits on
    (synchronous_commit and fsync as PostgreSQL ships them)."""
    from bridge.config_load import parse_config
    from bridge.store.postgres import PostgresStore
    from tests.postgres import PASSWORD, Cluster

    cluster = Cluster(Path(tempfile.mkdtemp(prefix="rb-bench-pg-")), durable=True)
    problem = cluster.start()
    if problem is not None:
        cluster.stop()
        raise SystemExit(f"PostgreSQL could not start: {problem}")
    try:
        url = cluster.create_database()
        config = parse_config(f'[store]\nurl = "{url}"\npassword_env = "BENCH_PG"\n')
        store = await PostgresStore.open(config, {"BENCH_PG": PASSWORD})
        try:
            results = await measure(store)
        finally:
            await store.close()
    finally:
        cluster.stop()
    return results


async def main(backends: list[str]) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        if "sqlite" in backends:
            results["sqlite (synchronous=full)"] = await sqlite(Path(scratch))
        if "postgresql" in backends:
            results["postgresql (loopback, fsync on)"] = await postgresql(Path(scratch))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgresql", "both"],
        default="sqlite",
        help="which store to measure (postgresql starts a throwaway server; needs Debian's "
        "postgresql package)",
    )
    chosen = parser.parse_args().backend
    backends = ["sqlite", "postgresql"] if chosen == "both" else [chosen]
    with asyncio.Runner(loop_factory=loop_factory()) as runner:  # the bridge's loop
        print(json.dumps(runner.run(main(backends))))
