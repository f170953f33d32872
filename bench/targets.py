"""What bench/run.py measures: the upstream directly, the bridge, and the peers beside it.

Each target is a process on loopback in front of the same fake upstream: the bridge (this
checkout, and any --baseline commit), codex-relay (pip-installed into bench/.peers at a
pinned version), the minimal pass-through of bench/passthrough.py, and LiteLLM when
`litellm` is on PATH.

A baseline commit runs, by default, from its `git archive` with this checkout's Python and
libraries (its source first on PYTHONPATH): only the bridge's own code differs between the
two, so their CPU and memory compare its code alone (the development environment's
editable-install hook and its other packages add about 0.7 MiB to every bridge's idle RSS).
With `own_env` a baseline is instead installed with its own dependencies into a venv under
bench/.peers, as a user of that commit would have had it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
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

PEERS = BENCH / ".peers"
# The release the figures were measured with; change it to compare another.
RELAY_VERSION = "0.5.8"


@dataclass(frozen=True)
class Target:
    """A server the load client talks to, and the process whose CPU and memory count."""

    name: str
    url: str
    kind: str  # "chat": the upstream itself; "responses": a Responses server
    pid: int | None
    version: str


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def checkout_version() -> str:
    """This checkout's commit, the last that changed bridge/, and whether it has changes."""
    head = git("rev-parse", "--short", "HEAD")
    last = git("log", "-1", "--format=%h", "--", "bridge", "migrations", "setup.cfg")
    changed = git("status", "--porcelain", "--", "bridge", "migrations", "setup.cfg")
    described = head if last == head else f"{head}; bridge/ as of {last}"
    return described + (", with uncommitted changes" if changed else "")


def source_at(ref: str, scratch: Path) -> Path:
    """The bridge's source as of commit `ref`, in a directory of `scratch`."""
    return export(ref, scratch / f"source-{git('rev-parse', '--short', ref)}")


def bridge_at(ref: str, scratch: Path) -> Path:
    """A Python with the bridge of commit `ref` installed (with that commit's dependencies).

    Kept in bench/.peers/bridge-<commit>, so only the first run with a commit installs it.
    """
    commit = git("rev-parse", "--short", ref)
    venv = PEERS / f"bridge-{commit}"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    source = source_at(ref, scratch)
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(source)], check=True, timeout=900
    )
    return python


def start_bridge(
    stack: ExitStack,
    upstream: str,
    scratch: Path,
    name: str,
    python: Path,
    version: str,
    source: Path | None = None,
    extra_path: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> Target:
    """`python -m bridge serve`, persistence on (SQLite, synchronous=full).

    It runs in its state directory, so `python -m` imports the bridge of `source` (first on
    PYTHONPATH) or else the one installed in `python`'s environment; for this checkout it
    runs in the checkout instead. `extra_path` goes on PYTHONPATH after `source` (a probe's
    sitecustomize, say) and `env` into its environment.
    """
    state = scratch / name.replace("@", "-")
    state.mkdir()
    port = free_port()
    args = [str(python), "-m", "bridge", "serve", "--config", str(bridge_config(state, upstream))]
    here = python == Path(PYTHON) and source is None
    cwd = REPO if here else state
    environment = bridge_env(state)
    path = [str(directory) for directory in (*([source] if source else []), *extra_path)]
    if path:
        environment["PYTHONPATH"] = os.pathsep.join(path)
    environment.update(env or {})
    log = state / "bridge.log"
    bridge = stack.enter_context(
        process([*args, "--port", str(port)], env=environment, cwd=cwd, log=log)
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz")
    except RuntimeError as failed:
        raise RuntimeError(f"{name} did not start: {log.read_text()[-2000:]}") from failed
    return Target(name, f"http://127.0.0.1:{port}/v1", "responses", bridge.pid, version)


def codex_relay() -> Path:
    """codex-relay's binary: on PATH, else the pinned release installed into bench/.peers."""
    if found := shutil.which("codex-relay"):
        return Path(found)
    binary = PEERS / "bin" / "codex-relay"
    if not binary.exists():
        subprocess.run([PYTHON, "-m", "venv", str(PEERS)], check=True, timeout=300)
        pip = [str(PEERS / "bin" / "pip"), "install", "-q", f"codex-relay=={RELAY_VERSION}"]
        subprocess.run(pip, check=True, timeout=600)
    return binary


def start_relay(stack: ExitStack, upstream: str) -> Target:
    binary = codex_relay()
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    port = free_port()
    env = {
        "CODEX_RELAY_UPSTREAM": f"{upstream}/v1",
        "CODEX_RELAY_PORT": str(port),
        "CODEX_RELAY_API_KEY": "bench",
    }
    relay = stack.enter_context(process([str(binary)], env))
    wait_for_port(port)
    return Target("codex-relay", f"http://127.0.0.1:{port}/v1", "responses", relay.pid, version)


def start_passthrough(stack: ExitStack, upstream: str) -> Target:
    port = free_port()
    args = [PYTHON, str(BENCH / "passthrough.py"), str(port), f"{upstream}/v1"]
    proc = stack.enter_context(process(args))
    wait_for_port(port)
    url = f"http://127.0.0.1:{port}/v1"
    return Target("pass-through", url, "responses", proc.pid, "bench/passthrough.py")


def start_litellm(stack: ExitStack, upstream: str, binary: str) -> Target:
    port = free_port()
    args = [binary, "--model", "openai/bench", "--api_base", f"{upstream}/v1"]
    proc = stack.enter_context(process([*args, "--port", str(port)], {"OPENAI_API_KEY": "bench"}))
    wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", 120)
    return Target("litellm", f"http://127.0.0.1:{port}/v1", "responses", proc.pid, "on PATH")


def start_targets(
    stack: ExitStack,
    upstream: str,
    scratch: Path,
    peers: bool,
    baselines: list[str],
    own_env: bool = False,
) -> list[Target]:
    """Every target, each stopped when `stack` closes; the upstream itself first."""
    found = [Target("direct", f"{upstream}/v1", "chat", None, "-")]
    here = Path(PYTHON)
    found.append(start_bridge(stack, upstream, scratch, "bridge", here, checkout_version()))
    for ref in baselines:
        name, version = f"bridge@{ref}", git("rev-parse", "--short", ref)
        if own_env:
            python = bridge_at(ref, scratch)
            found.append(start_bridge(stack, upstream, scratch, name, python, version))
        else:
            source = source_at(ref, scratch)
            found.append(start_bridge(stack, upstream, scratch, name, here, version, source))
    if peers:
        found.append(start_relay(stack, upstream))
        found.append(start_passthrough(stack, upstream))
        if litellm := shutil.which("litellm"):
            found.append(start_litellm(stack, upstream, litellm))
    return found
