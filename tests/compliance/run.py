"""The official Open Responses compliance suite against a real bridge process (.ci/run).

    python -m tests.compliance.run [--suite DIR] [--json-dir DIR]

For each of four combinations, a fake upstream serving the suite's default model and a
bridge process (`python -m bridge serve`, a fresh database) in front of it, then the suite
as its authors run it (`run.sh --base-url ... --api-key ... --json`, from `--suite`, by
default ../shared/openresponses-compliance beside the checkout):

- thinking: a strict DeepSeek fake (tests.provider_fakes): reasoning streamed first, and a
  replayed assistant turn refused when its reasoning is missing or altered; profile deepseek.
- plain: no reasoning at all; profile openai.
- each with `[server] reasoning_events` at its default ("openai") and "specification".

The result must be what EXPECTED_FAILURES says: nothing fails with the specification's event
names; with OpenAI's (the default, which Codex and the OpenAI SDKs read), a thinking model's
reasoning streams as response.reasoning_text.delta/.done, which the specification's event
union does not have, so the suite fails exactly the tests that validate streamed events of a
reasoning turn. Exit status 0 only when every combination gives its expected result.
Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fake_upstream import DONE, FakeUpstream, Reply, sse
from tests.processes import REPO, BridgeProcess, free_port
from tests.provider_fakes import Call, DeepSeek, chunk

MODEL = "gpt-4o-mini"  # the suite's default model (bin/compliance-test.ts)
SUITE = REPO.parent / "shared" / "openresponses-compliance"
# A suite run takes a few seconds; this bounds a hung one.
SUITE_TIMEOUT = 300.0
ALL_TESTS = 17

# The tests that stream a reasoning turn and validate each of its events, over HTTP (SSE)
# or a WebSocket: with OpenAI's names for the reasoning text events
# (response.reasoning_text.delta and .done; the specification calls them
# response.reasoning.delta and .done) those events are not in the specification's event
# union. The other ten tests get no streamed reasoning event (or none validated).
REASONING_EVENT_TESTS = frozenset(
    {
        "streaming-response",
        "websocket-response",
        "websocket-sequential-responses",
        "websocket-continuation",
        "websocket-reconnect-store-false-recovery",
        "websocket-failed-continuation-evicts-cache",
        "websocket-compact-new-chain",
    }
)
REASONING_EVENT_ERROR = re.compile(
    r"^(Turn \d+: )?Event validation failed for response\.reasoning_text\.(delta|done): "
)
EXPECTED_FAILURES: dict[tuple[str, str], frozenset[str]] = {
    ("thinking", "openai"): REASONING_EVENT_TESTS,
    ("thinking", "specification"): frozenset(),
    ("plain", "openai"): frozenset(),
    ("plain", "specification"): frozenset(),
}


def plain_turn(text: str | None = None, call: Call | None = None) -> Reply:
    """A model that does not think: content or one tool call, then the usage."""
    frames = [sse(chunk({"role": "assistant", "content": None}))]
    if text:
        frames.append(sse(chunk({"content": text})))
    if call is not None:
        first = {"index": 0, "id": call.id, "type": "function"}
        first["function"] = {"name": call.name, "arguments": call.arguments}
        frames.append(sse(chunk({"tool_calls": [first]})))
    frames.append(sse(chunk({}, "tool_calls" if call else "stop")))
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    frames += [sse({**chunk({}), "choices": [], "usage": usage}), DONE]
    return Reply(frames)


def responder(thinking: DeepSeek | None) -> Callable[[dict[str, Any]], Reply]:
    """Answers as the suite expects a model to: a tool call when a tool is offered and the
    user just spoke, text otherwise; each answer its own (a strict fake remembers what its
    model said with each text)."""
    numbers = itertools.count(1)

    def respond(body: dict[str, Any]) -> Reply:
        n = next(numbers)
        tools = body.get("tools") or []
        last = body["messages"][-1]
        call = None
        if tools and last["role"] == "user" and body.get("tool_choice") != "none":
            name = tools[0]["function"]["name"]
            call = Call(f"call_{n}", name, '{"location":"San Francisco, CA"}')
        text = None if call else f"Hello from the fake upstream, answer {n}."
        if thinking is None:
            return plain_turn(text, call)
        reasoning = f"The user wants an answer ({n})."
        return thinking.turn(reasoning=reasoning, calls=[call] if call else [], text=text)

    return respond


@dataclass
class Outcome:
    combination: tuple[str, str]
    passed: list[str]
    failed: dict[str, list[str]]
    seconds: float
    problem: str | None = None


async def _serve(fake: FakeUpstream) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(fake.app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return runner, f"http://127.0.0.1:{port}"


def _config(path: Path, upstream: str, flavour: str, events: str, state: Path) -> None:
    profile = "deepseek" if flavour == "thinking" else "openai"
    path.write_text(
        f'[server]\nreasoning_events = "{events}"\n'
        f'[store]\npath = "{state / "bridge.db"}"\nspool_dir = "{state / "spool"}"\n'
        f'[providers.fake]\nbase_url = "{upstream}/v1"\nprofile = "{profile}"\n'
        f'[models."{MODEL}"]\nprovider = "fake"\ninput_modalities = ["text", "image"]\n'
    )


async def run_combination(
    suite: Path, flavour: str, events: str, work: Path, json_dir: Path | None
) -> Outcome:
    """One bridge in front of one fake upstream, and one run of the suite against it."""
    started = time.monotonic()
    combination = (flavour, events)
    fake = FakeUpstream()
    rules = DeepSeek() if flavour == "thinking" else None
    fake.rules = rules
    fake.require_reasoning = rules is not None
    fake.record = False
    fake.responder = responder(rules)
    runner, upstream = await _serve(fake)
    state = work / f"{flavour}-{events}"
    state.mkdir()
    config = state / "bridge.toml"
    _config(config, upstream, flavour, events, state)
    bridge = BridgeProcess(config, free_port(), log=state / "bridge.log")
    try:
        await bridge.start()
        process = await asyncio.create_subprocess_exec(
            str(suite / "run.sh"),
            "--base-url",
            f"{bridge.url}/v1",
            "--api-key",
            "compliance",
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), SUITE_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()
            return Outcome(combination, [], {}, time.monotonic() - started, "the suite hung")
    finally:
        await bridge.stop()
        await runner.cleanup()
    if json_dir is not None:
        (json_dir / f"{flavour}-{events}.json").write_bytes(out)
    try:
        results = json.loads(out)["results"]
    except (ValueError, KeyError, TypeError):
        detail = (err or out).decode(errors="replace")[-2000:]
        return Outcome(combination, [], {}, time.monotonic() - started, f"no results: {detail}")
    passed = [r["id"] for r in results if r["status"] == "passed"]
    failed = {r["id"]: r.get("errors") or [] for r in results if r["status"] != "passed"}
    return Outcome(combination, passed, failed, time.monotonic() - started)


def report(outcome: Outcome) -> bool:
    """Print the combination's result; whether it is the expected one."""
    flavour, events = outcome.combination
    name = f"{flavour} upstream, reasoning_events = {events!r}"
    if outcome.problem is not None:
        print(f"FAIL {name}: {outcome.problem}")
        return False
    expected = EXPECTED_FAILURES[outcome.combination]
    total = len(outcome.passed) + len(outcome.failed)
    # An expected failure fails for that reason alone: each error names such an event.
    unexplained = {
        test_id
        for test_id, errors in outcome.failed.items()
        if test_id not in expected or not all(REASONING_EVENT_ERROR.search(e) for e in errors)
    }
    ok = set(outcome.failed) == expected and not unexplained and total == ALL_TESTS
    verdict = "ok  " if ok else "FAIL"
    print(
        f"{verdict} {name}: {len(outcome.passed)}/{total} of the suite's tests pass "
        f"({outcome.seconds:.1f} s)"
    )
    for test_id, errors in sorted(outcome.failed.items()):
        why = "UNEXPECTED" if test_id in unexplained else "expected: OpenAI's reasoning event names"
        print(f"     {test_id} fails ({why})")
        if test_id in unexplained:
            for error in errors[:5]:
                print(f"         {error[:300]}")
    for test_id in sorted(expected - set(outcome.failed)):
        print(f"     {test_id} passes, but EXPECTED_FAILURES says it fails: update it")
    return ok


async def main(suite: Path, json_dir: Path | None) -> int:
    if not (suite / "run.sh").is_file():
        print(f"FAIL the compliance suite is not at {suite} (--suite DIR)")
        return 2
    with tempfile.TemporaryDirectory(prefix="rb-compliance-") as tmp:
        work = Path(tmp)
        # The first run installs bun and the suite's dependency (run.sh caches them).
        outcomes = []
        for flavour, events in EXPECTED_FAILURES:
            outcomes.append(await run_combination(suite, flavour, events, work, json_dir))
            if outcomes[-1].problem is not None:
                for log in work.glob("*/bridge.log"):
                    sys.stdout.write(log.read_text(errors="replace")[-3000:])
    results = [report(outcome) for outcome in outcomes]
    return 0 if all(results) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite", type=Path, default=Path(os.environ.get("OPENRESPONSES_SUITE", SUITE))
    )
    parser.add_argument("--json-dir", type=Path, help="keep each run's --json output here")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.suite.resolve(), args.json_dir)))
