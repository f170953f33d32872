"""A closed-loop load client for benchmarks: N clients for a while, timings out as JSON.

    python bench/load.py URL KIND CONCURRENCY [--seconds S] [--max-requests N]
        [--model fast|paced] [--tokens T] [--no-stream] [--stagger S] [--watch PID ...]

KIND is "chat" (the Chat Completions upstream directly) or "responses" (a Responses server
in front of it). Each of CONCURRENCY clients sends its next request as soon as the last one
ended, until --seconds have passed (then it finishes the one in flight) or --max-requests
were sent. After one warm-up request the window starts: the CPU and busy time of every
--watch PID are read (bench/proc_stats.py) and their peak RSS reset, and again at its end.

Prints one JSON object: the window's length, the client's own busy share, per request the
time to the first byte and first text delta, whether it completed and the tokens it got,
and with the paced upstream every token's delivery latency in microseconds: the time of the
read that carried it minus the send time the upstream wrote into it (the same monotonic
clock). Requests that fail are counted as failed, not retried.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field

import aiohttp
import orjson
from proc_stats import Usage, peak_rss_mib, reset_peak_rss

PATHS = {"chat": "/chat/completions", "responses": "/responses"}
# What marks a text delta event, and a complete answer, in each wire format.
DELTA = {"chat": b'"content":"', "responses": b'"type":"response.output_text.delta"'}
END = {"chat": b"[DONE]", "responses": b'"type":"response.completed"'}
# The text field of a delta event: tokens are counted there only, never in the events that
# repeat the whole text at the end (output_text.done, response.completed).
DELTA_TEXT = {
    "chat": re.compile(rb'"content":"([^"]*)"'),
    "responses": re.compile(rb'"delta":"([^"]*)"'),
}
STAMP = re.compile(rb"@(\d+) ")
JSON = {"Content-Type": "application/json"}
OVERLAP = max(len(marker) for marker in (*DELTA.values(), *END.values())) - 1
FAST_TOKEN = b"tok "
WARM_UP_TOKENS = 4


@dataclass(frozen=True)
class Ask:
    """A request's encoded body and the answer's length in tokens."""

    body: bytes
    tokens: int


@dataclass(frozen=True)
class Plan:
    """One load run."""

    url: str
    kind: str
    concurrency: int
    seconds: float
    max_requests: int
    model: str
    tokens: int
    stream: bool
    stagger: float

    def ask(self, tokens: int) -> Ask:
        """The request: the same short question every time, `tokens` long answers."""
        length = "max_tokens" if self.kind == "chat" else "max_output_tokens"
        question = "Write a long story."
        asked: dict[str, object] = {"model": self.model, "stream": self.stream, length: tokens}
        if self.kind == "chat":
            asked["messages"] = [{"role": "user", "content": question}]
        else:
            asked["input"] = question
        return Ask(body=orjson.dumps(asked), tokens=tokens)


@dataclass
class Outcome:
    """One request as the client saw it; times in seconds from sending it."""

    ttfb: float = 0.0
    ttft: float = 0.0
    total: float = 0.0
    complete: bool = False
    tokens: int = 0
    error: str = ""


@dataclass
class Tally:
    """Everything the window's requests gave."""

    outcomes: list[Outcome] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)


def split_events(window: bytes) -> tuple[bytes, bytes]:
    """Complete SSE events, and the unfinished rest to prepend to the next read."""
    cut = window.rfind(b"\n\n")
    return (window[: cut + 2], window[cut + 2 :]) if cut >= 0 else (b"", window)


async def streamed(session: aiohttp.ClientSession, plan: Plan, ask: Ask, tally: Tally) -> Outcome:
    """One streamed request: first byte, first delta, and each stamped token's latency."""
    outcome = Outcome()
    started = time.perf_counter()
    delta, end = DELTA[plan.kind], END[plan.kind]
    stamped = plan.model == "paced"
    tail = b""
    async with session.post(plan.url + PATHS[plan.kind], data=ask.body, headers=JSON) as response:
        if response.status != 200:
            outcome.error = f"HTTP {response.status}"
            return outcome
        async for data in response.content.iter_any():
            now, received_ns = time.perf_counter(), time.monotonic_ns()
            outcome.ttfb = outcome.ttfb or now - started
            if stamped:
                events, tail = split_events(tail + data)
                for text in DELTA_TEXT[plan.kind].findall(events):
                    for sent_ns in STAMP.findall(text):
                        tally.latencies_us.append((received_ns - int(sent_ns)) // 1000)
                        outcome.tokens += 1
            else:
                # The least work per read: a fast target's reads come by the hundred thousand
                # a second. The tail carried over catches a marker split between two reads.
                events = tail + data
                tail = events[-OVERLAP:]
            if not outcome.ttft and delta in events:
                outcome.ttft = now - started
            outcome.complete = outcome.complete or end in events
    if outcome.complete and not stamped:
        outcome.tokens = ask.tokens
    outcome.total = time.perf_counter() - started
    return outcome


async def whole(session: aiohttp.ClientSession, plan: Plan, ask: Ask) -> Outcome:
    """One stream: false request; complete when the answer holds all its tokens."""
    outcome = Outcome()
    started = time.perf_counter()
    async with session.post(plan.url + PATHS[plan.kind], data=ask.body, headers=JSON) as response:
        answer = await response.read()
        outcome.ttfb = outcome.ttft = outcome.total = time.perf_counter() - started
        if response.status != 200:
            outcome.error = f"HTTP {response.status}"
        elif answer.count(FAST_TOKEN) >= ask.tokens:
            outcome.complete, outcome.tokens = True, ask.tokens
        else:
            outcome.error = "answer shorter than asked"
    return outcome


async def one(session: aiohttp.ClientSession, plan: Plan, ask: Ask, tally: Tally) -> Outcome:
    try:
        if plan.stream:
            return await streamed(session, plan, ask, tally)
        return await whole(session, plan, ask)
    except (aiohttp.ClientError, TimeoutError) as error:
        return Outcome(error=f"{type(error).__name__}: {error}")


async def run(plan: Plan, watched: list[int]) -> dict[str, object]:
    connector = aiohttp.TCPConnector(limit=plan.concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    tally = Tally()
    ask = plan.ask(plan.tokens)
    sent = 0

    async def client(index: int, deadline: float) -> None:
        nonlocal sent
        # Spread the clients' first requests over the stagger, so paced streams do not all
        # write their tokens at the same instants.
        await asyncio.sleep(index * plan.stagger / plan.concurrency)
        while time.monotonic() < deadline and sent < plan.max_requests:
            sent += 1
            tally.outcomes.append(await one(session, plan, ask, tally))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        warm_up = await one(session, plan, plan.ask(WARM_UP_TOKENS), Tally())
        if warm_up.error:
            raise RuntimeError(f"warm-up request failed: {warm_up.error}")
        for pid in watched:
            reset_peak_rss(pid)
        before = {pid: Usage.of(pid) for pid in watched}
        own = Usage.of(os.getpid())
        started = time.monotonic()
        deadline = started + plan.seconds
        await asyncio.gather(*(client(index, deadline) for index in range(plan.concurrency)))
        elapsed = time.monotonic() - started
        spent = {pid: Usage.of(pid).since(before[pid]) for pid in watched}
        peaks = {pid: peak_rss_mib(pid) for pid in watched}
        own_spent = Usage.of(os.getpid()).since(own)
    return {
        "elapsed": elapsed,
        "client": asdict(own_spent),
        "watched": {
            str(pid): {**asdict(spent[pid]), "peak_rss_mib": peaks[pid]} for pid in watched
        },
        "requests": [asdict(outcome) for outcome in tally.outcomes],
        "latencies_us": tally.latencies_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8787/v1")
    parser.add_argument("kind", choices=sorted(PATHS))
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--seconds", type=float, default=3.0, help="start no request after")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--model", default="fast", help="fast or paced (bench/fake_upstream.py)")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per answer")
    parser.add_argument("--no-stream", dest="stream", action="store_false")
    parser.add_argument("--stagger", type=float, default=0.0, help="spread first requests (s)")
    parser.add_argument("--watch", type=int, action="append", default=[], help="a PID to measure")
    args = parser.parse_args()
    plan = Plan(
        url=args.url,
        kind=args.kind,
        concurrency=args.concurrency,
        seconds=args.seconds,
        max_requests=args.max_requests,
        model=args.model,
        tokens=args.tokens,
        stream=args.stream,
        stagger=args.stagger,
    )
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(run(plan, args.watch))))


if __name__ == "__main__":
    main()
