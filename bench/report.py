"""bench/RESULTS.md and bench/throughput.svg from the runs of bench/run.py.

The summary gives, per measure and target, the median over the repetitions and their range
[lowest, highest]. "Added" figures subtract the upstream read directly, repetition by
repetition, and are left out where either run was bounded by the load client or the
upstream rather than by the target (cases.Run.limit): there the difference would measure
the client.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cases import Case, Run


@dataclass(frozen=True)
class Conditions:
    """What the run was measured on and with, for the reader of the results."""

    started: str
    minutes: float
    machine: str
    cores: int
    load_before: str
    load_after: str
    rep_loads: list[str]
    targets: list[tuple[str, str]]  # name, version
    settings: str
    command: str

    @property
    def loaded(self) -> bool:
        """The 1-minute load average was at least half the cores at some reading."""
        readings = [self.load_before, *self.rep_loads, self.load_after]
        return max(float(reading.split()[0]) for reading in readings) >= self.cores / 2


@dataclass(frozen=True)
class Measured:
    """Everything a run of bench/run.py found, as RESULTS.md is written from it."""

    conditions: Conditions
    cases: list[Case]
    runs: list[Run]
    idle_rss: dict[str, float]
    persistence: dict[str, dict[str, float]]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Measured:
        """What save() wrote, so the results can be written again without measuring."""
        raw = json.loads(path.read_text())
        conditions = raw["conditions"]
        conditions["targets"] = [tuple(pair) for pair in conditions["targets"]]
        return cls(
            conditions=Conditions(**conditions),
            cases=[Case(**case) for case in raw["cases"]],
            runs=[Run(**run) for run in raw["runs"]],
            idle_rss=raw["idle_rss"],
            persistence=raw["persistence"],
        )

    def write(self, directory: Path) -> None:
        """RESULTS.md and throughput.svg in `directory`."""
        write_results(directory / "RESULTS.md", self)
        # Not the upstream read directly: the load client bounds it (see RESULTS.md).
        targets = [name for name, _ in self.conditions.targets if name != "direct"]
        write_plot(directory / "throughput.svg", self.cases, self.runs, targets)


@dataclass(frozen=True)
class Row:
    """One line of the summary: a measure of one case, for every target."""

    label: str
    case: str
    metric: Callable[[Run], float]
    fmt: str
    added: bool = False  # through the target minus directly, repetition by repetition
    direct: bool = True  # has a meaning for the upstream read directly


def summary_rows(cases: list[Case]) -> list[Row]:
    """The measures asked for, for the cases this run had."""
    names = {case.name for case in cases}
    paced = next((c for c in cases if c.model == "paced" and c.clients > 1), None)
    rows: list[Row] = []
    if paced is not None:
        n = paced.clients
        rows += [
            Row(
                f"CPU per delivered token, {n} paced streams (us)",
                paced.name,
                lambda r: r.cpu_per_token_us,
                ".0f",
                direct=False,
            ),
            Row(f"per-token latency p50, {n} paced streams (ms)", paced.name, p50, ".2f"),
            Row(f"per-token latency p99, {n} paced streams (ms)", paced.name, p99, ".2f"),
            Row(
                f"added per-token latency p50, {n} paced streams (ms)",
                paced.name,
                p50,
                "+.2f",
                True,
            ),
            Row(
                f"added per-token latency p99, {n} paced streams (ms)",
                paced.name,
                p99,
                "+.2f",
                True,
            ),
        ]
    if "paced-1" in names:
        rows += [
            Row("added per-token latency p50, 1 paced stream (ms)", "paced-1", p50, "+.2f", True),
            Row("first text delta p50, 1 paced stream (ms)", "paced-1", ttft, ".2f"),
            Row("added first text delta p50, 1 paced stream (ms)", "paced-1", ttft, "+.2f", True),
        ]
    if "fast-16" in names:
        rows += [
            Row("first text delta p50, 16 closed-loop streams, fast (ms)", "fast-16", ttft, ".1f"),
            Row("added first text delta p50, 16 fast streams (ms)", "fast-16", ttft, "+.1f", True),
        ]
    for case in cases:
        if case.model == "fast" and case.stream:
            label = f"tokens/s, {case.clients} fast streams"
            rows.append(Row(label, case.name, lambda r: r.tokens_per_s, ",.0f"))
    if "json-16" in names:
        rows += [
            Row(
                "stream: false 2,000-token answers, 16 clients: requests/s",
                "json-16",
                lambda r: r.requests_per_s,
                ",.0f",
            ),
            Row(
                "stream: false: CPU per request (ms)",
                "json-16",
                lambda r: r.cpu_per_request_ms,
                ".2f",
                direct=False,
            ),
        ]
    for case in cases:
        if case.clients == max(c.clients for c in cases) and case.stream:
            label = f"peak RSS, {case.title} (MiB)"
            rows.append(Row(label, case.name, lambda r: r.peak_rss, ".1f", direct=False))
    return rows


def p50(run: Run) -> float:
    return run.latency_p50


def p99(run: Run) -> float:
    return run.latency_p99


def ttft(run: Run) -> float:
    return run.ttft_p50


def spread(values: list[float], fmt: str) -> str:
    """The median and [lowest, highest] of the finite values."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "-"
    middle = format(statistics.median(finite), fmt)
    if len(finite) == 1:
        return middle
    return f"{middle} [{format(min(finite), fmt)}, {format(max(finite), fmt)}]"


def bound(runs: list[Run], prefix: str = "") -> str:
    """Which runs were bounded by the load client or the upstream, and how busy it was."""
    shares: dict[str, list[float]] = {}
    for run in runs:
        if found := run.limit():
            shares.setdefault(found[0], []).append(found[1])
    texts = []
    for who, busy in shares.items():
        low, high = f"{min(busy):.0%}", f"{max(busy):.0%}"
        texts.append(f"{prefix}{who} busy {low}" + ("" if low == high else f"-{high}"))
    return "; ".join(texts)


def cell(row: Row, target: str, runs: list[Run]) -> str:
    mine = [r for r in runs if r.case == row.case and r.target == target]
    if target == "direct" and (row.added or not row.direct):
        return "-"
    if not row.added:
        text = spread([row.metric(r) for r in mine], row.fmt)
        limited = bound(mine)
        return f"{text} ({limited})" if limited else text
    direct = {r.rep: r for r in runs if r.case == row.case and r.target == "direct"}
    pairs = [(run, direct[run.rep]) for run in mine if run.rep in direct]
    usable = [(run, base) for run, base in pairs if not run.limit() and not base.limit()]
    if not usable:
        why = bound([base for _, base in pairs], "direct: ") or bound([r for r, _ in pairs])
        return f"n/a ({why})" if why else "-"
    text = spread([row.metric(run) - row.metric(base) for run, base in usable], row.fmt)
    left_out = len(pairs) - len(usable)
    return text + (f" ({left_out} of {len(pairs)} left out: bounded)" if left_out else "")


def scheduling_note(runs: list[Run]) -> str:
    """How long the load client waited for a CPU per wake-up: the floor under any latency."""
    waits = [r.client_wait_ms for r in runs if r.case.startswith("paced")]
    if not waits:
        return ""
    return (
        f"In the paced runs the load client waited {statistics.median(waits):.3f} ms "
        f"(median; {min(waits):.3f}-{max(waits):.3f}) for a CPU each time it woke (the "
        "scheduler's own accounting): every latency here holds that much of the machine, "
        "and smaller differences between targets are within its noise."
    )


def run_table(runs: list[Run]) -> list[str]:
    """Every run, as measured."""
    lines = [
        "| case | target | rep | requests (failed) | tokens/s | req/s | first delta p50 / p99 "
        "| token latency p50 / p99 | CPU us/token | CPU ms/request | peak RSS | busy: target "
        "/ upstream / client | wait per wake-up: target / client (ms) | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def number(value: float, fmt: str) -> str:
        return "-" if math.isnan(value) else format(value, fmt)

    for r in runs:
        note = "; ".join(filter(None, [r.saturation(), r.first_error]))
        lines.append(
            f"| {r.case} | {r.target} | {r.rep} | {r.requests} ({r.failed}) "
            f"| {r.tokens_per_s:,.0f} | {r.requests_per_s:,.1f} "
            f"| {number(r.ttft_p50, '.2f')} / {number(r.ttft_p99, '.2f')} "
            f"| {number(r.latency_p50, '.2f')} / {number(r.latency_p99, '.2f')} "
            f"| {number(r.cpu_per_token_us, '.1f')} | {number(r.cpu_per_request_ms, '.2f')} "
            f"| {number(r.peak_rss, '.1f')} | {number(r.target_busy, '.0%')} / "
            f"{r.upstream_busy:.0%} / {r.client_busy:.0%} (CPU {r.client_cpu:.0%}) "
            f"| {number(r.target_wait_ms, '.3f')} / {r.client_wait_ms:.3f} | {note} |"
        )
    return lines


def write_results(path: Path, measured: Measured) -> None:
    c, cases, runs = measured.conditions, measured.cases, measured.runs
    targets = [name for name, _ in c.targets]
    lines = [
        "# Benchmark results (bench/run.py)",
        "",
        f"Run {c.started} for {c.minutes:.0f} minutes on {c.machine}: `{c.command}`. {c.settings}",
        "",
        f"Load averages (1, 5, 15 min) before the run: {c.load_before}; at the start of each "
        f"repetition: {'; '.join(c.rep_loads)}; after: {c.load_after} ({c.cores} cores).",
    ]
    if c.loaded:
        lines += [
            "**These figures are from a loaded machine**: it was shared with other work "
            "during the run, so the processes measured waited for a CPU as well as ran. "
            "Compare targets within this run; take absolute figures as upper bounds.",
        ]
    if note := scheduling_note(runs):
        lines += ["", note]
    lines += [
        "",
        "Measured: " + "; ".join(f"{name} ({version})" for name, version in c.targets) + ".",
        "",
        "## Summary",
        "",
        "Median over the repetitions [lowest, highest]. *added*: through the target minus the "
        "upstream read directly, in the same repetition; n/a where the direct run (or the "
        "target's) was limited by the load client or the upstream, which then measured "
        "themselves (busy, running or waiting for a CPU, 80 % of the window or more).",
        "",
        "| measure | " + " | ".join(targets) + " |",
        "|---|" + "---|" * len(targets),
    ]
    for row in summary_rows(cases):
        lines.append(f"| {row.label} | " + " | ".join(cell(row, t, runs) for t in targets) + " |")
    idle = " | ".join(
        "-" if t == "direct" else f"{measured.idle_rss.get(t, math.nan):.1f}" for t in targets
    )
    lines += [f"| idle RSS after start (MiB) | {idle} |", "", "## Cases", ""]
    for case in cases:
        shape = "streamed" if case.stream else "stream: false"
        lines.append(
            f"- `{case.name}`: {case.title}; {case.clients} closed-loop clients for "
            f"{case.seconds:g} s (then the answers in flight finish), {case.tokens}-token "
            f"answers, {case.model} upstream, {shape}."
        )
    lines += ["", "## Every run", "", *run_table(runs), ""]
    if measured.persistence:
        lines += ["## Persistence (bench/store_bench.py, in-process)", ""]
        for store, measures in measured.persistence.items():
            lines += [f"- {store}: {name}: {value:.3f}" for name, value in measures.items()]
        lines.append("")
    lines += ["![tokens/s against concurrency, fast upstream](throughput.svg)", ""]
    path.write_text("\n".join(lines))


def write_plot(path: Path, cases: list[Case], runs: list[Run], targets: list[str]) -> None:
    """Median tokens/s against fast-upstream streams, one line per target, as SVG."""
    fast = [c for c in cases if c.model == "fast" and c.stream]
    if not fast:
        return
    points = {
        t: [
            (
                c.clients,
                statistics.median(
                    r.tokens_per_s for r in runs if r.case == c.name and r.target == t
                ),
            )
            for c in fast
            if any(r.case == c.name and r.target == t for r in runs)
        ]
        for t in targets
    }
    width, height = 720, 420
    left, right, top_pad, bottom = 90, 170, 30, 60
    xs = [c.clients for c in fast]
    top = max(v for line in points.values() for _, v in line) * 1.1
    colors = ["#444444", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b"]

    def x(c: int) -> float:
        return left + xs.index(c) * (width - left - right) / max(1, len(xs) - 1)

    def y(v: float) -> float:
        return height - bottom - v / top * (height - top_pad - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="black"/>',
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
        f'<text x="{(left + width - right) / 2}" y="{height - 15}" text-anchor="middle">'
        "concurrent 2,000-token streams, fast upstream (median of the repetitions)</text>",
        f'<text x="18" y="{height / 2}" transform="rotate(-90 18 {height / 2})" '
        'text-anchor="middle">thousand tokens/s</text>',
    ]
    parts += [
        f'<text x="{x(c)}" y="{height - bottom + 18}" text-anchor="middle">{c}</text>' for c in xs
    ]
    for step in range(5):
        value = top * step / 4
        parts.append(
            f'<text x="{left - 8}" y="{y(value) + 4}" text-anchor="end">{value / 1000:,.0f}</text>'
        )
    for index, (name, line) in enumerate(points.items()):
        color = colors[index % len(colors)]
        path_points = " ".join(f"{x(c):.1f},{y(v):.1f}" for c, v in line)
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path_points}"/>'
        )
        parts.append(
            f'<text x="{width - right + 12}" y="{top_pad + 10 + 18 * index}" '
            f'fill="{color}">{name}</text>'
        )
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
