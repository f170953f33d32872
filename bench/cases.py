"""The load cases of bench/run.py and one measured run of a case against a target.

A run starts bench/load.py as its own process (so the client's work is not the target's),
which watches the target's and the upstream's processes over its window; this module turns
its JSON into a Run: rates, percentiles, CPU per token and per request, peak RSS, and how
busy the load client and the upstream were, which says whether the run measured the target
or the machinery around it.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from typing import Any

from processes import BENCH, PYTHON
from targets import Target

# A process that ran or waited for a CPU this share of a window or more was the bottleneck.
SATURATED = 0.8


@dataclass(frozen=True)
class Case:
    """One kind of load: who answers how, how many clients, for how long."""

    name: str
    title: str
    model: str  # "paced" or "fast" (bench/fake_upstream.py)
    clients: int
    tokens: int
    seconds: float
    stream: bool = True
    stagger: float = 0.0


def standard_cases(
    rate: float, paced_streams: int, paced_tokens: int, levels: list[int], seconds: float
) -> list[Case]:
    """The cases the summary of RESULTS.md is built from."""
    token_time = 1 / rate
    cases = [
        Case("paced-1", "1 paced stream", "paced", 1, 10, seconds),
        Case(
            f"paced-{paced_streams}",
            f"{paced_streams} paced streams",
            "paced",
            paced_streams,
            paced_tokens,
            seconds,
            # The streams' first requests spread over one token's time, as independent
            # clients' would be, not all writing at the same instants.
            stagger=token_time,
        ),
    ]
    cases += [
        Case(f"fast-{n}", f"{n} closed-loop streams, fast upstream", "fast", n, 2000, seconds)
        for n in levels
    ]
    cases.append(
        Case("json-16", "16 clients, stream: false", "fast", 16, 2000, seconds, stream=False)
    )
    return cases


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Run:
    """One case against one target, once. Times in ms, CPU in s, memory in MiB; NaN: none.

    The *_busy and client_cpu figures are shares of the window: busy is running plus waiting
    for a CPU (summed over threads, so a multi-threaded target may pass 100 %), cpu running
    only. A load client busy far beyond its CPU share was starved by the machine. *_wait_ms:
    the mean wait for a CPU each time the process woke, which every latency through it holds.
    """

    case: str
    target: str
    rep: int
    elapsed: float
    requests: int
    failed: int
    first_error: str
    tokens: int
    ttft_p50: float
    ttft_p99: float
    latency_p50: float
    latency_p99: float
    cpu: float
    peak_rss: float
    target_busy: float
    upstream_busy: float
    client_busy: float
    client_cpu: float
    client_wait_ms: float
    target_wait_ms: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed

    @property
    def requests_per_s(self) -> float:
        return (self.requests - self.failed) / self.elapsed

    @property
    def cpu_per_token_us(self) -> float:
        return self.cpu / self.tokens * 1e6 if self.tokens else math.nan

    @property
    def cpu_per_request_ms(self) -> float:
        done = self.requests - self.failed
        return self.cpu / done * 1e3 if done else math.nan

    def limit(self) -> tuple[str, float] | None:
        """What besides the target bounded this run, and how busy it was, if anything did."""
        if self.client_busy >= SATURATED:
            return "load client", self.client_busy
        if self.upstream_busy >= SATURATED:
            return "upstream", self.upstream_busy
        return None

    def saturation(self) -> str | None:
        """The limit() in words."""
        found = self.limit()
        return f"{found[0]} busy {found[1]:.0%}" if found else None


def load_command(case: Case, target: Target, upstream_pid: int) -> list[str]:
    """bench/load.py's command line for `case` against `target`, watching both processes."""
    args = [PYTHON, str(BENCH / "load.py"), target.url, target.kind, str(case.clients)]
    args += ["--seconds", str(case.seconds), "--model", case.model, "--tokens", str(case.tokens)]
    args += ["--stagger", str(case.stagger), "--watch", str(upstream_pid)]
    if target.pid is not None:
        args += ["--watch", str(target.pid)]
    if not case.stream:
        args.append("--no-stream")
    return args


def measure(case: Case, target: Target, upstream_pid: int, rep: int) -> Run:
    """Run bench/load.py for `case` against `target` and read what it measured."""
    args = load_command(case, target, upstream_pid)
    # The window plus the answers still in flight at its end; a paced answer takes seconds.
    done = subprocess.run(args, capture_output=True, timeout=case.seconds + 300, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{case.name} against {target.name}: {done.stderr.decode()[-800:]}")
    return read_run(json.loads(done.stdout), case, target, upstream_pid, rep)


def wait_per_run_ms(usage: dict[str, float]) -> float:
    """The mean wait for a CPU per wake-up, from a proc_stats.Usage as load.py printed it."""
    return usage["waited"] / usage["runs"] * 1000 if usage["runs"] else 0.0


def read_run(result: dict[str, Any], case: Case, target: Target, upstream: int, rep: int) -> Run:
    elapsed = result["elapsed"]
    requests = result["requests"]
    failed = [r for r in requests if not r["complete"]]
    watched = result["watched"]
    mine = watched.get(str(target.pid), {}) if target.pid is not None else {}
    first_deltas = [r["ttft"] * 1000 for r in requests if r["complete"]]
    latencies = [us / 1000 for us in result["latencies_us"]]
    return Run(
        case=case.name,
        target=target.name,
        rep=rep,
        elapsed=elapsed,
        requests=len(requests),
        failed=len(failed),
        first_error=next((r["error"] for r in failed if r["error"]), ""),
        tokens=sum(r["tokens"] for r in requests),
        ttft_p50=percentile(first_deltas, 0.5),
        ttft_p99=percentile(first_deltas, 0.99),
        latency_p50=percentile(latencies, 0.5),
        latency_p99=percentile(latencies, 0.99),
        cpu=mine.get("cpu", math.nan),
        peak_rss=mine.get("peak_rss_mib", math.nan),
        target_busy=mine.get("busy", math.nan) / elapsed,
        upstream_busy=watched[str(upstream)]["busy"] / elapsed,
        client_busy=result["client"]["busy"] / elapsed,
        client_cpu=result["client"]["cpu"] / elapsed,
        client_wait_ms=wait_per_run_ms(result["client"]),
        target_wait_ms=wait_per_run_ms(mine) if mine else math.nan,
    )
