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


def busy_seconds(pid: int) -> float:
    """Time the process's threads ran plus the time they waited, runnable, for a CPU (s).

    An event loop busy for nearly the whole of a window could not have gone faster: on a
    shared machine the wait counts too, because another process held the core. Threads that
    ended within the window are not counted (their schedstat is gone with them).
    """
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            running_ns, waiting_ns, _slices = (task / "schedstat").read_text().split()
        except FileNotFoundError:  # the thread ended since the listing
            continue
        total_ns += int(running_ns) + int(waiting_ns)
    return total_ns / 1e9


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
    """A process's CPU and busy time at one moment."""

    cpu: float
    busy: float

    @classmethod
    def of(cls, pid: int) -> Usage:
        return cls(cpu=cpu_seconds(pid), busy=busy_seconds(pid))

    def since(self, earlier: Usage) -> Usage:
        return Usage(cpu=self.cpu - earlier.cpu, busy=self.busy - earlier.busy)
