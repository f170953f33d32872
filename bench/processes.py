"""Starting the benchmarks' servers as processes on loopback, and stopping every one of them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
# The models bench/fake_upstream.py tells apart, and the one the older benchmarks ask for.
BRIDGE_MODELS = ("bench", "fast", "paced")


def export(ref: str, target: Path) -> Path:
    """The repository at commit `ref`, as files (no git metadata), in `target` (made here)."""
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True, timeout=60
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True, timeout=60)
    return target


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
    args: list[str], env: dict[str, str] | None = None, cwd: Path = REPO, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A process for the length of the block, terminated (then killed) when it ends.

    Its standard error goes to `log` when one is given (to say why it did not start).
    """
    with log.open("wb") if log else open(os.devnull, "wb") as errors:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=errors,
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


def bridge_config(directory: Path, upstream: str) -> Path:
    """A bridge config with persistence on (its database in `directory`), the models of
    bench/fake_upstream.py and "bench". It names no key that an older release refuses, so a
    --baseline commit starts on it too; its spool goes where bridge_env puts it."""
    config = directory / "bench.toml"
    models = "".join(f'[models."{name}"]\nprovider = "bench"\n' for name in BRIDGE_MODELS)
    config.write_text(
        '[server]\nlog_level = "warning"\n'
        f'[store]\npath = "{directory / "bench.db"}"\n'
        f'[providers.bench]\nbase_url = "{upstream}/v1"\n' + models
    )
    return config


def bridge_env(directory: Path) -> dict[str, str]:
    """The environment a benchmark's bridge adds to this one's: `directory` as its state
    directory, where its spool goes by default (`[store] spool_dir`, which releases before
    the spool refuse as a key): a run leaves nothing in the home directory."""
    return {"STATE_DIRECTORY": str(directory)}
