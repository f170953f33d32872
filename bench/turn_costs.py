"""Where a paced token's CPU goes: streaming it, against starting and ending its turn.

    python bench/turn_costs.py [--reps 2] [--streams 64] [--window 10] [--no-floor]

bench/run.py's paced-64 figure (CPU per token, 200-token answers) holds two costs: what
streaming a token costs, and what each turn's start and end cost, spread over its 200 tokens.
This measures them apart, for each target in front of the same paced upstream
(bench/fake_upstream.py, 75 tokens/s per stream, one token per write):

- steady: `--streams` answers long enough to outlast the window, their first requests spread
  over one second; the target's CPU over a `--window`-second window that opens 6 s after the
  load client started (about 4 s after the last answer did), when no turn starts or ends,
  divided by the tokens the upstream wrote in it (streams x rate x window). Every answer
  must arrive whole, or the run counts as failed.
- per turn: `--streams` closed-loop clients asking 10-token answers for 8 s (load.py's window):
  the target's CPU per request, less its 10 tokens at the steady rate.

CPU per token at N-token answers is then about steady + turn / N; the report gives it for
N = 200, the answers of run.py's paced-64. The targets: the bridge (this
checkout, persistence on, SQLite synchronous = "full"), codex-relay, the pass-through
(bench/passthrough.py: aiohttp on both sides) and the protocol floor (bench/protocol_floor.py:
no HTTP library). Writes bench/TURN_COSTS.md. Loopback only; every run is bounded by its
window and a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from cases import Case, load_command, measure
from proc_stats import cpu_seconds
from processes import BENCH, PYTHON, free_port, process, wait_for_port
from report import spread
from targets import Target, checkout_version, start_bridge, start_passthrough, start_relay

RATE = 75.0
SHORT_TOKENS = 10
# The steady window opens this long after the last stream was due to start (its first token,
# and the load client's start and warm-up request, are well past by then).
SETTLE = 5.0
STAGGER = 1.0
LOAD_TIMEOUT = 120.0


@dataclass
class Figures:
    steady_us: list[float] = field(default_factory=list)
    turn_ms: list[float] = field(default_factory=list)


def start_floor(stack: ExitStack, upstream_port: int) -> Target:
    port = free_port()
    script = str(BENCH / "protocol_floor.py")
    proc = stack.enter_context(process([PYTHON, script, str(port), str(upstream_port)]))
    wait_for_port(port)
    return Target("protocol floor", f"http://127.0.0.1:{port}/v1", "responses", proc.pid, "-")


def steady(target: Target, upstream_pid: int, streams: int, window: float) -> float:
    """CPU per token (us) while every stream is mid-answer."""
    assert target.pid is not None
    # Long enough that no answer ends before the window does.
    tokens = int((STAGGER + SETTLE + window + 2.0) * RATE)
    # Every client starts its one request within the stagger (one that starts after load.py's
    # window would never start), and none can start a second: the answers outlast the run.
    case = Case("steady", "steady", "paced", streams, tokens, STAGGER + 0.5, stagger=STAGGER)
    command = load_command(case, target, upstream_pid)
    client = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        time.sleep(STAGGER + SETTLE)
        before = cpu_seconds(target.pid)
        time.sleep(window)
        spent = cpu_seconds(target.pid) - before
        raw, _ = client.communicate(timeout=LOAD_TIMEOUT)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    done = json.loads(raw)["requests"]
    whole = [r for r in done if r["complete"] and r["tokens"] == tokens]
    if len(done) != streams or len(whole) != streams:
        raise RuntimeError(f"{target.name}: {len(whole)} of {streams} answers came whole")
    return spent / (streams * RATE * window) * 1e6


def per_turn(target: Target, upstream_pid: int, streams: int, steady_us: float) -> float:
    """CPU per request (ms) of short answers, less their tokens at the steady rate."""
    case = Case("per-turn", "per turn", "paced", streams, SHORT_TOKENS, 8.0, stagger=STAGGER)
    run = measure(case, target, upstream_pid, 0)
    if run.failed:
        raise RuntimeError(f"{target.name}: {run.failed} short answers failed: {run.first_error}")
    return run.cpu_per_request_ms - SHORT_TOKENS * steady_us / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--window", type=float, default=10.0, help="steady window (s)")
    parser.add_argument("--no-floor", action="store_true", help="skip the protocol floor")
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [os.getloadavg()]
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    fake = [PYTHON, str(BENCH / "fake_upstream.py"), str(up_port), "2000"]
    pace = ["--rate", str(RATE), "--first-token-delay", "0.05"]
    starters: dict[str, Callable[[ExitStack, Path], Target]] = {
        "bridge": lambda stack, scratch: start_bridge(
            stack, upstream, scratch, "bridge", Path(PYTHON), checkout_version()
        ),
        "codex-relay": lambda stack, scratch: start_relay(stack, upstream),
        "pass-through": lambda stack, scratch: start_passthrough(stack, upstream),
    }
    if not args.no_floor:
        starters["protocol floor"] = lambda stack, scratch: start_floor(stack, up_port)
    figures = {name: Figures() for name in starters}
    with ExitStack() as outer:
        upstream_pid = outer.enter_context(process([*fake, *pace])).pid
        wait_for_port(up_port)
        for rep in range(args.reps):
            # Each target started afresh for each measure, in a turning order.
            order = list(starters)[rep % len(starters) :] + list(starters)[: rep % len(starters)]
            for name in order:
                with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
                    target = starters[name](stack, Path(scratch))
                    us = steady(target, upstream_pid, args.streams, args.window)
                with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
                    target = starters[name](stack, Path(scratch))
                    ms = per_turn(target, upstream_pid, args.streams, us)
                figures[name].steady_us.append(us)
                figures[name].turn_ms.append(ms)
                print(f"rep {rep + 1} {name}: steady {us:.1f} us/token, {ms:.2f} ms/turn")
            loads.append(os.getloadavg())
    write_report(figures, args, started, loads)
    return 0


def write_report(
    figures: dict[str, Figures],
    args: argparse.Namespace,
    started: str,
    loads: list[tuple[float, float, float]],
) -> None:
    machine = (
        f"{os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"
    )
    lines = [
        "# Turn costs (bench/turn_costs.py)",
        "",
        f"Run {started} on {machine}: `python bench/turn_costs.py --reps {args.reps} "
        f"--streams {args.streams} --window {args.window:g}`; the bridge is "
        f"{checkout_version()}. Paced upstream: {RATE:g} tokens/s per stream, one token per "
        "write. Load averages (1 min) at the start and after each repetition: "
        + ", ".join(f"{load[0]:.2f}" for load in loads)
        + ".",
        "",
        "Medians [lowest, highest] over the repetitions. *steady*: CPU per token while "
        f"{args.streams} streams are all mid-answer; *per turn*: CPU of one request beyond its "
        f"tokens ({SHORT_TOKENS}-token answers, {args.streams} closed-loop clients); *at 200 "
        "tokens*: steady + per turn / 200, what bench/run.py's paced-64 measures.",
        "",
        "| target | steady (us/token) | per turn (ms) | at 200 tokens (us/token) |",
        "|---|---|---|---|",
    ]
    for name, found in figures.items():
        at_200 = [s + t * 1000 / 200 for s, t in zip(found.steady_us, found.turn_ms, strict=True)]
        lines.append(
            f"| {name} | {spread(found.steady_us, '.1f')} | {spread(found.turn_ms, '.2f')} "
            f"| {spread(at_200, '.1f')} |"
        )
    (BENCH / "TURN_COSTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
