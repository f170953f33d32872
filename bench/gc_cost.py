"""What the cyclic garbage collector costs the bridge per turn, and its longest pause.

    python bench/gc_cost.py [--baseline REF] [--clients 16] [--seconds 8] [--reps 2]

Runs the bridge (this checkout, and with --baseline the same commands against that commit,
exported with `git archive`) in front of bench/fake_upstream.py answering 10-token turns at
once, with bench/gc_probe on its PYTHONPATH: every collection is timed from inside the
process. `--clients` closed-loop streaming clients (bench/load.py) run for `--seconds`
after a one-second warm-up; the collections within that window are counted. Reports, per
run, the turns served, the bridge's CPU per turn, the collector's time per turn and its
longest pause, and how many collections of each generation ran. Writes bench/GC_RESULTS.md.
Loopback only; every run is bounded by its window and timeouts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from processes import (
    BENCH,
    PYTHON,
    REPO,
    bridge_config,
    bridge_env,
    export,
    free_port,
    process,
    wait_for_port,
    wait_until_up,
)

TOKENS = 10
LOAD_TIMEOUT = 120.0


@dataclass(frozen=True)
class Figures:
    turns: int
    cpu_ms: float  # the bridge's CPU per turn
    gc_us: float  # the collector's time per turn
    longest_ms: float
    by_generation: tuple[int, int, int]


def load(url: str, clients: int, seconds: float, pid: int) -> dict[str, object]:
    command = [PYTHON, str(BENCH / "load.py"), url, "responses", str(clients)]
    command += ["--seconds", str(seconds), "--model", "paced", "--tokens", str(TOKENS)]
    command += ["--watch", str(pid)]
    done = subprocess.run(command, capture_output=True, check=True, timeout=LOAD_TIMEOUT)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def one_run(source: Path, scratch: Path, clients: int, seconds: float) -> Figures:
    """One bridge of `source`, warmed up, then measured over the window."""
    with ExitStack() as stack:
        up_port = free_port()
        fake = [PYTHON, str(BENCH / "fake_upstream.py"), str(up_port), "2000"]
        fake += ["--rate", "100000", "--first-token-delay", "0"]
        stack.enter_context(process(fake))
        wait_for_port(up_port)
        state = Path(tempfile.mkdtemp(dir=scratch))
        config = bridge_config(state, f"http://127.0.0.1:{up_port}")
        port = free_port()
        probe = state / "collections.json"
        env = {
            **bridge_env(state),
            "PYTHONPATH": os.pathsep.join([str(source), str(BENCH / "gc_probe")]),
            "GC_PROBE_OUT": str(probe),
        }
        args = [PYTHON, "-m", "bridge", "serve", "--config", str(config), "--port", str(port)]
        with process(args, env=env, cwd=state, log=state / "bridge.log") as bridge:
            url = f"http://127.0.0.1:{port}"
            wait_until_up(f"{url}/healthz")
            load(f"{url}/v1", clients, 1.0, bridge.pid)
            opened = time.time()
            result = load(f"{url}/v1", clients, seconds, bridge.pid)
            closed = time.time()
        # The process has exited (terminated, then drained): the probe has written.
        collections = json.loads(probe.read_text())
    requests = result["requests"]
    assert isinstance(requests, list)
    failed = [r for r in requests if not r["complete"]]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(requests)} turns failed")
    watched = result["watched"]
    assert isinstance(watched, dict)
    cpu = float(next(iter(watched.values()))["cpu"])
    inside = [(g, took) for at, g, took in collections if opened <= at <= closed]
    turns = len(requests)
    counts = tuple(sum(1 for g, _ in inside if g == generation) for generation in range(3))
    return Figures(
        turns=turns,
        cpu_ms=cpu / turns * 1000,
        gc_us=sum(took for _, took in inside) / turns * 1e6,
        longest_ms=max((took for _, took in inside), default=0.0) * 1000,
        by_generation=(counts[0], counts[1], counts[2]),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a git ref of this repository to compare against")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows: list[tuple[str, Figures]] = []
    with tempfile.TemporaryDirectory(prefix="gc-cost-") as tmp:
        scratch = Path(tmp)
        sources = [("this checkout", REPO)]
        if args.baseline:
            sources.append((args.baseline, export(args.baseline, scratch / "baseline")))
        # Alternated, and in turn first, so a change in the machine's load falls on both.
        for rep in range(args.reps):
            for name, source in sources if rep % 2 == 0 else sources[::-1]:
                print(f"{name}, run {rep + 1}", flush=True)
                rows.append((name, one_run(source, scratch, args.clients, args.seconds)))

    lines = [
        "# The garbage collector's cost per turn (bench/gc_cost.py)",
        "",
        f"Run {started} on {os.cpu_count()} cores ({platform.machine()}), Python "
        f"{platform.python_version()}, load averages at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}: "
        f"`bench/gc_cost.py {' '.join(sys.argv[1:])}`. {args.clients} closed-loop streaming "
        f"clients of {TOKENS}-token turns for {args.seconds:g} s, the upstream answering at once.",
        "",
        "| bridge | turns | CPU per turn, ms | collector per turn, us | longest pause, ms "
        "| collections (gen 0 / 1 / 2) |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in rows:
        gens = " / ".join(str(n) for n in f.by_generation)
        lines.append(
            f"| {name} | {f.turns} | {f.cpu_ms:.2f} | {f.gc_us:.0f} | {f.longest_ms:.1f} | {gens} |"
        )
    report = "\n".join(lines) + "\n"
    (BENCH / "GC_RESULTS.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
