"""The benchmark: the upstream directly against the bridge (and peers), in one run.

    python bench/run.py [--peers] [--levels 1,4,16,64,256] [--tokens 2000]

Starts, as separate processes, a fast fake Chat Completions upstream (bench/fake_upstream.py),
the bridge with persistence on, and for every concurrency level a load client
(bench/load.py). With --peers the same load also goes through codex-relay (installed into
bench/.peers with pip when missing) and through LiteLLM when `litellm` is on PATH.
Writes bench/RESULTS.md and bench/throughput.svg. Loopback only; every run is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
PEERS = BENCH / ".peers"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:g}s")


def wait_until_up(url: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {seconds:g}s")


@contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Target:
    name: str
    url: str
    kind: str
    pid: int | None


@dataclass
class Level:
    target: str
    concurrency: int
    tokens_per_s: float
    events_per_s: float
    ttfb_p50: float
    ttfb_p99: float
    ttft_p50: float
    ttft_p99: float
    peak_rss: float
    cpu_per_1k: float
    errors: int


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(target: Target, concurrency: int, requests: int, tokens_per_stream: int) -> Level:
    cpu_before = cpu_seconds(target.pid) if target.pid else 0.0
    if target.pid:
        reset_peak_rss(target.pid)
    done = subprocess.run(
        [PYTHON, str(BENCH / "load.py"), target.url, target.kind, str(concurrency), str(requests)],
        capture_output=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load against {target.name} failed: {done.stderr.decode()[-800:]}")
    result = json.loads(done.stdout)
    streams = result["streams"]
    # Throughput counts the tokens of complete answers: a target may send several tokens in
    # one delta event, so events are not tokens.
    tokens = tokens_per_stream * sum(1 for s in streams if s["complete"])
    cpu = (cpu_seconds(target.pid) - cpu_before) if target.pid else float("nan")
    return Level(
        target=target.name,
        concurrency=concurrency,
        tokens_per_s=tokens / result["elapsed"],
        events_per_s=sum(s["events"] for s in streams) / result["elapsed"],
        ttfb_p50=percentile([s["ttfb"] for s in streams], 0.5) * 1000,
        ttfb_p99=percentile([s["ttfb"] for s in streams], 0.99) * 1000,
        ttft_p50=percentile([s["ttft"] for s in streams], 0.5) * 1000,
        ttft_p99=percentile([s["ttft"] for s in streams], 0.99) * 1000,
        peak_rss=peak_rss_mib(target.pid) if target.pid else float("nan"),
        cpu_per_1k=cpu / tokens * 1000 if tokens else float("nan"),
        errors=sum(1 for s in streams if not s["complete"]),
    )


def codex_relay() -> str | None:
    """codex-relay's binary: on PATH, else installed into bench/.peers with pip."""
    found = shutil.which("codex-relay") or str(PEERS / "bin" / "codex-relay")
    if Path(found).exists():
        return found
    subprocess.run([PYTHON, "-m", "venv", str(PEERS)], check=True)
    subprocess.run([str(PEERS / "bin" / "pip"), "install", "-q", "codex-relay"], check=True)
    return str(PEERS / "bin" / "codex-relay")


def bridge_config(directory: Path, upstream: str) -> Path:
    config = directory / "bench.toml"
    config.write_text(
        '[server]\nlog_level = "warning"\n'
        f'[store]\npath = "{directory / "bench.db"}"\n'
        f'[providers.bench]\nbase_url = "{upstream}/v1"\n'
        '[models."bench"]\nprovider = "bench"\n'
    )
    return config


def write_results(
    levels: list[Level], persistence: dict[str, dict[str, float]], tokens: int
) -> None:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# Benchmark results",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores "
        f"({cpu}, {platform.system()} {platform.release()}), Python {platform.python_version()}; "
        f"{tokens}-token streams; upstream, bridge and load client as separate processes on "
        "loopback; the bridge with persistence on (SQLite, synchronous=full).",
        "",
        "Latencies in ms; `added` = through the target minus direct, at the same level.",
        "",
        "| target | conc. | tokens/s | events/s | TTFB p50/p99 | TTFT p50/p99 | added TTFT p50 "
        "| peak RSS MiB | CPU s per 1k tokens | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    direct = {lv.concurrency: lv for lv in levels if lv.target == "direct"}

    def measured(value: float, fmt: str) -> str:
        return "-" if value != value else format(value, fmt)  # NaN: not measured

    for lv in levels:
        added = lv.ttft_p50 - direct[lv.concurrency].ttft_p50 if lv.target != "direct" else 0.0
        lines.append(
            f"| {lv.target} | {lv.concurrency} | {lv.tokens_per_s:,.0f} | {lv.events_per_s:,.0f} "
            f"| {lv.ttfb_p50:.2f} / {lv.ttfb_p99:.2f} | {lv.ttft_p50:.2f} / {lv.ttft_p99:.2f} "
            f"| {added:+.2f} | {measured(lv.peak_rss, '.1f')} | {measured(lv.cpu_per_1k, '.4f')} "
            f"| {lv.errors} |"
        )
    lines += ["", "## Persistence (bench/store_bench.py, in-process)", ""]
    for store, measures in persistence.items():  # one section per backend measured
        lines += [f"- {store}: {name}: {value:.3f}" for name, value in measures.items()]
    lines += ["", "![throughput against concurrency](throughput.svg)", ""]
    (BENCH / "RESULTS.md").write_text("\n".join(lines))


def write_plot(levels: list[Level]) -> None:
    """Tokens/s against concurrency (log2 x axis), one line per target, as SVG."""
    width, height = 720, 420
    left, right, top_pad, bottom = 90, 170, 30, 60
    targets = list(dict.fromkeys(lv.target for lv in levels))
    xs = sorted({lv.concurrency for lv in levels})
    top = max(lv.tokens_per_s for lv in levels) * 1.1
    colors = ["#444444", "#1f77b4", "#d62728", "#2ca02c", "#9467bd"]

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
        "concurrent 2,000-token streams</text>",
        f'<text x="18" y="{height / 2}" transform="rotate(-90 18 {height / 2})" '
        'text-anchor="middle">thousand tokens/s</text>',
    ]
    for c in xs:
        parts.append(f'<text x="{x(c)}" y="{height - bottom + 18}" text-anchor="middle">{c}</text>')
    for step in range(5):
        value = top * step / 4
        parts.append(
            f'<text x="{left - 8}" y="{y(value) + 4}" text-anchor="end">{value / 1000:,.0f}</text>'
        )
    for index, name in enumerate(targets):
        points = [(x(lv.concurrency), y(lv.tokens_per_s)) for lv in levels if lv.target == name]
        color = colors[index % len(colors)]
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        parts.append(
            f'<text x="{width - right + 12}" y="{top_pad + 10 + 18 * index}" '
            f'fill="{color}">{name}</text>'
        )
    parts.append("</svg>")
    (BENCH / "throughput.svg").write_text("\n".join(parts) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true", help="also measure codex-relay, LiteLLM")
    parser.add_argument("--levels", default="1,4,16,64,256", help="concurrency levels")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per stream")
    args = parser.parse_args()
    levels = [int(c) for c in args.levels.split(",")]
    up_port, bridge_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    results: list[Level] = []
    with tempfile.TemporaryDirectory() as scratch:
        config = bridge_config(Path(scratch), upstream)
        with (
            process([PYTHON, str(BENCH / "fake_upstream.py"), str(up_port), str(args.tokens)]),
            process(
                [
                    PYTHON,
                    "-m",
                    "bridge",
                    "serve",
                    "--config",
                    str(config),
                    "--port",
                    str(bridge_port),
                ]
            ) as bridge,
        ):
            wait_until_up(f"{upstream}/v1/models")
            wait_until_up(f"http://127.0.0.1:{bridge_port}/healthz")
            targets = [
                Target("direct", f"{upstream}/v1", "chat", None),
                Target(
                    "responses-bridge",
                    f"http://127.0.0.1:{bridge_port}/v1",
                    "responses",
                    bridge.pid,
                ),
            ]
            with peer_processes(args.peers, upstream) as peers:
                targets += peers
                for concurrency in levels:
                    requests = max(256 if concurrency == 1 else 64, 2 * concurrency)
                    for target in targets:
                        level = measure(target, concurrency, requests, args.tokens)
                        results.append(level)
                        print(
                            f"{target.name:>18} c={concurrency:<4} "
                            f"{level.tokens_per_s:>10,.0f} tok/s  ttft p50 "
                            f"{level.ttft_p50:6.2f} ms  rss {level.peak_rss:5.1f} MiB",
                            flush=True,
                        )
    persistence = json.loads(
        subprocess.run(
            [PYTHON, str(BENCH / "store_bench.py")],
            capture_output=True,
            check=True,
            timeout=600,
            cwd=REPO,
        ).stdout
    )
    write_results(results, persistence, args.tokens)
    write_plot(results)
    print(f"wrote {BENCH / 'RESULTS.md'} and {BENCH / 'throughput.svg'}")
    return 0


@contextmanager
def peer_processes(enabled: bool, upstream: str) -> Iterator[list[Target]]:
    if not enabled:
        yield []
        return
    targets: list[Target] = []
    relay_port = free_port()
    relay = codex_relay()
    env = {
        "CODEX_RELAY_UPSTREAM": f"{upstream}/v1",
        "CODEX_RELAY_PORT": str(relay_port),
        "CODEX_RELAY_API_KEY": "bench",
    }
    litellm = shutil.which("litellm")
    with process([relay], env) as relay_proc:
        wait_for_port(relay_port)
        targets.append(
            Target("codex-relay", f"http://127.0.0.1:{relay_port}/v1", "responses", relay_proc.pid)
        )
        if litellm is None:
            yield targets
            return
        lite_port = free_port()
        with process(
            [
                litellm,
                "--model",
                "openai/bench",
                "--api_base",
                f"{upstream}/v1",
                "--port",
                str(lite_port),
            ],
            {"OPENAI_API_KEY": "bench"},
        ) as lite:
            wait_until_up(f"http://127.0.0.1:{lite_port}/health/liveliness", 120)
            targets.append(
                Target("litellm", f"http://127.0.0.1:{lite_port}/v1", "responses", lite.pid)
            )
            yield targets


if __name__ == "__main__":
    sys.exit(main())
