"""What Linux's /proc says about a process: CPU time, time wanting the CPU, memory.

Used by the load client (a window's figures, read right after its warm-up and at its end) and
by bench/run.py (idle memory). Linux only, like the benchmarks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the whole process (every thread), in seconds."""
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the command name,
    # which may itself hold spaces and parentheses (proc(5)).
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def schedstat(pid: int) -> tuple[float, float, int]:
    """Seconds the process's threads ran, seconds they waited runnable for a CPU, and runs.

    From /proc/PID/task/*/schedstat (the scheduler's own accounting, in ns). Threads that
    ended are not counted: their schedstat is gone with them.
    """
    ran_ns = waited_ns = runs = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except FileNotFoundError:  # the thread ended since the listing
            continue
        ran_ns += int(fields[0])
        waited_ns += int(fields[1])
        runs += int(fields[2])
    return ran_ns / 1e9, waited_ns / 1e9, runs


def _status_kib(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def rss_mib(pid: int) -> float:
    """Resident memory now (VmRSS), MiB."""
    return _status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory since start or the last reset_peak_rss (VmHWM), MiB."""
    return _status_kib(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> None:
    """Make VmHWM start again from the current RSS (writing 5 to clear_refs, proc(5))."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass(frozen=True)
class Usage:
    """A process's CPU time, busy time and scheduler waits at one moment (seconds)."""

    cpu: float
    # Running plus waiting, runnable, for a CPU. An event loop busy for nearly a whole window
    # could not have gone faster: on a shared machine the wait counts too, because another
    # process held the core.
    busy: float
    waited: float
    runs: int

    @classmethod
    def of(cls, pid: int) -> Usage:
        ran, waited, runs = schedstat(pid)
        return cls(cpu=cpu_seconds(pid), busy=ran + waited, waited=waited, runs=runs)

    def since(self, earlier: Usage) -> Usage:
        return Usage(
            cpu=self.cpu - earlier.cpu,
            busy=self.busy - earlier.busy,
            waited=self.waited - earlier.waited,
            runs=self.runs - earlier.runs,
        )

    @property
    def wait_per_run_ms(self) -> float:
        """How long, on average, the process waited for a CPU each time it woke: the
        machine's share of every latency measured through it."""
        return self.waited / self.runs * 1000 if self.runs else 0.0
