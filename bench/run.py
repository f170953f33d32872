"""The benchmark: the upstream directly against the bridge and its peers, in one run.

    python bench/run.py [--peers] [--baseline REF [--baseline-own-env]] [--reps 3] [--seconds 5]
        [--levels 16,64] [--rate 75] [--first-token-delay 0.05] [--paced-streams 64]
        [--paced-tokens 200] [--cases paced-64,json-16] [--no-store] [--raw RESULTS.json]
        [--quiet-below 1.0 [--quiet-wait 600]] [--report-from RESULTS.json]

Starts, as separate processes on loopback, the fake Chat Completions upstream
(bench/fake_upstream.py: paced like a real provider, or fast), the bridge with persistence on,
and with --peers codex-relay (pip-installed into bench/.peers), the minimal pass-through of
bench/passthrough.py and LiteLLM (when `litellm` is on PATH). Then, --reps times, every case
(cases.py) against every target, the targets in a different order each repetition, each run
by its own load client (load.py). Writes bench/RESULTS.md, bench/throughput.svg and
bench/RESULTS.json (everything measured: `--report-from` writes the other two from it).
Everything it starts ends with it; every run is bounded by --seconds and a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from cases import Case, Run, measure, standard_cases
from proc_stats import rss_mib
from processes import BENCH, PYTHON, REPO, free_port, process, wait_until_up
from report import Conditions, Measured
from targets import Target, start_targets


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return (
        f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def persistence() -> dict[str, dict[str, float]]:
    done = subprocess.run(
        [PYTHON, str(BENCH / "store_bench.py")],
        capture_output=True,
        check=True,
        timeout=600,
        cwd=REPO,
    )
    result: dict[str, dict[str, float]] = json.loads(done.stdout)
    return result


def wait_for_quiet(below: float | None, longest: float) -> str:
    """Wait (at most `longest` s) for the 1-minute load average to drop below `below`."""
    deadline = time.monotonic() + longest
    while below is not None and float(load_average().split()[0]) >= below:
        if time.monotonic() >= deadline:
            print(f"the load average stayed at or above {below:g}; going on", flush=True)
            break
        time.sleep(5)
    return load_average()


def play(
    cases: list[Case],
    start: Callable[[ExitStack, int], list[Target]],
    upstream_pid: int,
    reps: int,
    quiet: tuple[float | None, float],
) -> tuple[list[Run], list[str], dict[str, float]]:
    """Every case against every target, `reps` times, rotating the targets' order. Each
    repetition starts the targets afresh (`start`), so that what one repetition's cases
    left in a process's memory does not count in the next one's peak RSS.

    Returns the runs, the load averages each repetition started at, the targets (as the
    first repetition started them) and their idle RSS then.
    """
    runs: list[Run] = []
    loads: list[str] = []
    first: list[Target] = []
    idle_rss: dict[str, float] = {}
    for rep in range(1, reps + 1):
        loads.append(wait_for_quiet(*quiet))
        with ExitStack() as stack:
            targets = start(stack, rep)
            if not first:
                first = targets
                idle_rss = {t.name: rss_mib(t.pid) for t in targets if t.pid is not None}
            runs += _repetition(cases, targets, upstream_pid, rep)
    return runs, loads, first, idle_rss


def _repetition(cases: list[Case], targets: list[Target], upstream_pid: int, rep: int) -> list[Run]:
    runs: list[Run] = []
    for case in cases:
        shift = (rep - 1) % len(targets)
        for target in targets[shift:] + targets[:shift]:
            run = measure(case, target, upstream_pid, rep)
            runs.append(run)
            note = run.saturation() or run.first_error
            print(
                f"rep {rep} {case.name:>9} {target.name:>14}: {run.tokens_per_s:>10,.0f} "
                f"tok/s {run.requests_per_s:>7,.1f} req/s, first delta {run.ttft_p50:7.2f} "
                f"ms, token latency {run.latency_p50:6.2f} ms, "
                f"CPU/token {run.cpu_per_token_us:6.1f} us {note or ''}",
                flush=True,
            )
    return runs


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true", help="also codex-relay, pass-through")
    parser.add_argument("--baseline", action="append", default=[], help="a commit to compare")
    parser.add_argument(
        "--baseline-own-env",
        action="store_true",
        help="install each baseline with its own dependencies (default: this checkout's)",
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every run")
    parser.add_argument("--seconds", type=float, default=5.0, help="window of a run")
    parser.add_argument("--levels", default="16,64", help="fast-upstream stream counts")
    parser.add_argument("--rate", type=float, default=75.0, help="paced tokens/s per stream")
    parser.add_argument("--first-token-delay", type=float, default=0.05, help="paced, seconds")
    parser.add_argument("--paced-streams", type=int, default=64)
    parser.add_argument("--paced-tokens", type=int, default=200, help="tokens per paced answer")
    parser.add_argument("--cases", help="only these cases (comma-separated names)")
    parser.add_argument("--no-store", action="store_true", help="skip bench/store_bench.py")
    parser.add_argument(
        "--raw",
        type=Path,
        default=BENCH / "RESULTS.json",
        help="where everything measured is kept as JSON (default: bench/RESULTS.json)",
    )
    parser.add_argument(
        "--report-from", type=Path, help="measure nothing: write the results from a --raw file"
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        help="before each repetition, wait for the 1-minute load average to drop below this",
    )
    parser.add_argument("--quiet-wait", type=float, default=600, help="... for at most (s)")
    return parser.parse_args()


def measure_all(args: argparse.Namespace) -> Measured:
    """Start the upstream and the targets, play every case, and note the conditions."""
    levels = [int(n) for n in args.levels.split(",")]
    cases = standard_cases(args.rate, args.paced_streams, args.paced_tokens, levels, args.seconds)
    if args.cases:
        cases = [case for case in cases if case.name in args.cases.split(",")]
    started, load_before = time.time(), load_average()
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    pace = ["--rate", str(args.rate), "--first-token-delay", str(args.first_token_delay)]
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        fake = [PYTHON, str(BENCH / "fake_upstream.py"), str(up_port), "2000", *pace]
        upstream_proc = stack.enter_context(process(fake))
        wait_until_up(f"{upstream}/v1/models")
        quiet = (args.quiet_below, args.quiet_wait)

        def start(targets_stack: ExitStack, rep: int) -> list[Target]:
            state = Path(scratch) / f"rep-{rep}"
            state.mkdir()
            return start_targets(
                targets_stack, upstream, state, args.peers, args.baseline, args.baseline_own_env
            )

        runs, rep_loads, targets, idle_rss = play(cases, start, upstream_proc.pid, args.reps, quiet)
    conditions = Conditions(
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        minutes=(time.time() - started) / 60,
        machine=machine(),
        cores=os.cpu_count() or 1,
        load_before=load_before,
        load_after=load_average(),
        rep_loads=rep_loads,
        targets=[(t.name, t.version) for t in targets],
        settings=(
            f"Paced upstream: {args.rate:g} tokens/s per stream, one token per write, the "
            f"first after {args.first_token_delay * 1000:g} ms. Fast upstream: 64 events per "
            f"write. {args.reps} repetitions of every run, each with every target started "
            "afresh."
        ),
        command="python bench/run.py " + " ".join(sys.argv[1:]),
    )
    store = {} if args.no_store else persistence()
    return Measured(conditions, cases, runs, idle_rss, store)


def main() -> int:
    # A terminated run unwinds like an interrupted one, so every process it started is
    # stopped (Python's default for SIGTERM ends at once, leaving them running).
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    args = options()
    if args.report_from:
        measured = Measured.load(args.report_from)
    else:
        measured = measure_all(args)
        measured.save(args.raw)
    measured.write(BENCH)
    print(f"wrote {BENCH / 'RESULTS.md'} and {BENCH / 'throughput.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
