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
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from cases import Case, measure
from processes import BENCH, PYTHON, export, free_port, process, wait_for_port
from targets import checkout_version, start_bridge

TOKENS = 10


@dataclass(frozen=True)
class Figures:
    turns: int
    cpu_ms: float  # the bridge's CPU per turn
    gc_us: float  # the collector's time per turn
    longest_ms: float
    by_generation: tuple[int, int, int]


def one_run(
    name: str, source: Path | None, version: str, scratch: Path, clients: int, seconds: float
) -> Figures:
    """One bridge (this checkout's with `source` None), warmed up, then measured over the
    window."""
    probe = scratch / f"{name}.collections.json"
    with ExitStack() as stack:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        fake = [PYTHON, str(BENCH / "fake_upstream.py"), str(up_port), "2000"]
        fake += ["--rate", "100000", "--first-token-delay", "0"]
        upstream_pid = stack.enter_context(process(fake)).pid
        wait_for_port(up_port)
        bridge = start_bridge(
            stack,
            upstream,
            scratch,
            name,
            Path(PYTHON),
            version,
            source,
            extra_path=[BENCH / "gc_probe"],
            env={"GC_PROBE_OUT": str(probe)},
        )
        measure(Case("warm-up", "warm-up", "paced", clients, TOKENS, 1.0), bridge, upstream_pid, 0)
        opened = time.time()
        window = Case("short turns", "short turns", "paced", clients, TOKENS, seconds)
        run = measure(window, bridge, upstream_pid, 1)
        closed = time.time()
    # The bridge has exited (terminated, then drained): the probe has written.
    collections = json.loads(probe.read_text())
    if run.failed:
        raise RuntimeError(f"{run.failed} of {run.requests} turns failed: {run.first_error}")
    inside = [(g, took) for at, g, took in collections if opened <= at <= closed]
    turns = run.requests
    counts = tuple(sum(1 for g, _ in inside if g == generation) for generation in range(3))
    return Figures(
        turns=turns,
        cpu_ms=run.cpu_per_request_ms,
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
        sources: list[tuple[str, Path | None, str]] = [("this checkout", None, checkout_version())]
        if args.baseline:
            exported = export(args.baseline, scratch / "baseline")
            sources.append((args.baseline, exported, args.baseline))
        # Alternated, and in turn first, so a change in the machine's load falls on both.
        for rep in range(args.reps):
            for name, source, version in sources if rep % 2 == 0 else sources[::-1]:
                print(f"{name}, run {rep + 1}", flush=True)
                figures = one_run(
                    f"{name}-{rep + 1}", source, version, scratch, args.clients, args.seconds
                )
                rows.append((name, figures))

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
