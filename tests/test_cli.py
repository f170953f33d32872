"""The command line as a user runs it: `python -m bridge` in a real subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge import __version__
from bridge.config_load import parse_config
from bridge.exit_codes import Exit
from bridge.migrate import load_migrations, migrations_source

REPO = Path(__file__).resolve().parent.parent
KEY_VAR = "DEEPSEEK_API_KEY"
RUN_TIMEOUT = 30.0  # seconds for a command that should exit by itself
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0

# Port 9 (discard) on loopback: nothing is sent upstream by these tests anyway.
LOCAL_CONFIG = """
[providers.local]
base_url = "http://127.0.0.1:9/v1"

[models."local-model"]
provider = "local"
upstream_model = "tiny"
"""

# Ignore proxy variables: every request here goes to 127.0.0.1 directly.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def bridge_env(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    """os.environ with the state directory in tmp_path, the key unset and `overrides` applied."""
    env = dict(os.environ)
    env.pop(KEY_VAR, None)
    env["STATE_DIRECTORY"] = str(tmp_path / "state")
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def run_bridge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str) -> tuple[int, Any]:
    with OPENER.open(url, timeout=2.0) as response:
        return response.status, json.loads(response.read())


# --help, --version


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_bridge(bridge_env(tmp_path), "--help")

    assert result.returncode == Exit.OK, result.stderr
    assert "serve" in result.stdout
    assert "check-config" in result.stdout


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = run_bridge(bridge_env(tmp_path), "--version")

    assert result.returncode == Exit.OK, result.stderr
    latest = load_migrations()[-1].version
    postgres = load_migrations(migrations_source() / "postgres")[-1].version
    assert result.stdout.strip() == (
        f"responses-bridge {__version__} (SQLite schema {latest}, PostgreSQL schema {postgres})"
    )


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_bridge(bridge_env(tmp_path))

    assert result.returncode == Exit.USAGE
    assert "usage:" in result.stderr


# check-config


def test_check_config_accepts_the_shipped_config(tmp_path: Path) -> None:
    env = bridge_env(tmp_path, **{KEY_VAR: "sk-test"})

    result = run_bridge(env, "check-config", "--config", "config.toml")

    assert result.returncode == Exit.OK, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == (
        f"# config.toml: ok; the database is {tmp_path / 'state' / 'bridge.db'} "
        "(not created yet; `serve` creates it)"
    )
    # The effective settings, defaults included, are TOML that loads as the same config.
    effective = parse_config(result.stdout, "config.toml")
    assert effective == parse_config((REPO / "config.toml").read_text(), "config.toml")
    assert effective.server.drain_seconds == 30.0  # a default, shown explicitly
    assert 'api_key_env = "DEEPSEEK_API_KEY"' in result.stdout
    assert "sk-test" not in result.stdout + result.stderr  # the key itself is never shown


def test_check_config_masks_secrets_in_extra_body(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        LOCAL_CONFIG.replace(
            "[models.", 'extra_body = { api_token = "hunter2", top_k = 5 }\n\n[models.', 1
        ),
    )
    result = run_bridge(bridge_env(tmp_path), "check-config", "--config", str(path))
    assert result.returncode == Exit.OK, result.stderr
    assert "hunter2" not in result.stdout
    assert 'extra_body = {api_token = "********", top_k = 5}' in result.stdout


@pytest.mark.parametrize("value", [None, ""])
def test_check_config_warns_about_an_unset_key_variable(tmp_path: Path, value: str | None) -> None:
    """The key may live in the service's environment file: a warning, unless --strict."""
    env = bridge_env(tmp_path, **{KEY_VAR: value})

    result = run_bridge(env, "check-config", "--config", "config.toml")

    assert result.returncode == Exit.OK, result.stderr
    assert "warning" in result.stderr and KEY_VAR in result.stderr
    assert "config.toml" in result.stderr and "`serve` will refuse" in result.stderr
    assert result.stdout.startswith("# config.toml: ok")

    strict = run_bridge(env, "check-config", "--strict", "--config", "config.toml")
    assert strict.returncode == Exit.CONFIG
    assert KEY_VAR in strict.stderr and strict.stdout == ""


def test_a_provider_no_model_uses_needs_no_key_to_serve(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        LOCAL_CONFIG + f'\n[providers.spare]\nbase_url = "http://127.0.0.1:9/v1"\n'
        f'api_key_env = "{KEY_VAR}"\n',
    )
    checked = run_bridge(bridge_env(tmp_path), "check-config", "--config", str(config))
    assert checked.returncode == Exit.OK
    assert "no model uses this provider" in checked.stderr
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--config", str(config), "--port", str(port)],
        cwd=REPO,
        env=bridge_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        log = tmp_path / "unused.log"
        log.write_text("")
        wait_until_healthy(process, port, log)
    finally:
        process.terminate()
        process.wait(timeout=SHUTDOWN_TIMEOUT)


def test_check_config_names_an_unknown_key_and_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, LOCAL_CONFIG + "\n[server]\nprot = 8787\n")

    result = run_bridge(bridge_env(tmp_path), "check-config", "--config", str(path))

    assert result.returncode == Exit.CONFIG
    assert result.stderr.strip() == f"responses-bridge: {path}: unknown key `server.prot`"
    assert result.stdout == ""


def test_check_config_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"

    result = run_bridge(bridge_env(tmp_path), "check-config", "--config", str(missing))

    assert result.returncode == Exit.CONFIG
    assert str(missing) in result.stderr


@pytest.mark.parametrize(
    "command", [["check-config"], ["serve"], ["sessions", "list"], ["migrate"], ["trace"]]
)
def test_missing_config_option_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    result = run_bridge(bridge_env(tmp_path, RESPONSES_BRIDGE_CONFIG=None), *command)

    assert result.returncode == Exit.USAGE
    assert "--config" in result.stderr and "RESPONSES_BRIDGE_CONFIG" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_config_comes_after_the_action_or_from_the_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path, LOCAL_CONFIG)
    env = bridge_env(tmp_path)
    assert run_bridge(env, "migrate", "--config", str(path)).returncode == Exit.OK
    after = run_bridge(env, "sessions", "list", "--config", str(path))
    before = run_bridge(env, "sessions", "--config", str(path), "list")
    assert after.returncode == before.returncode == Exit.OK, after.stderr
    assert after.stdout == before.stdout
    from_env = run_bridge(bridge_env(tmp_path, RESPONSES_BRIDGE_CONFIG=str(path)), "check-config")
    assert from_env.returncode == Exit.OK
    assert from_env.stdout.startswith(f"# {path}: ok")


# serve


@pytest.fixture
def serve_port() -> int:
    return free_port()


@pytest.fixture
def served(tmp_path: Path, serve_port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`serve` on 127.0.0.1:serve_port, answering /healthz; killed if a test leaves it running."""
    config = write_config(tmp_path, LOCAL_CONFIG)
    log = tmp_path / "serve.log"
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(serve_port)]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            cwd=REPO,
            env=bridge_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until_healthy(process, serve_port, log)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=SHUTDOWN_TIMEOUT)


def wait_until_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll /healthz until it answers 200 {"status": "ok", ...}; bounded in steps and time."""
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    for _ in range(int(STARTUP_TIMEOUT / 0.1)):
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode}: {log.read_text()}")
        try:
            status, body = get_json(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            status, body = None, None
        if status is not None:
            assert (status, body["status"]) == (200, "ok")
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    pytest.fail(f"serve did not answer {url} within {STARTUP_TIMEOUT}s: {log.read_text()}")


def test_serve_answers_healthz_and_lists_models(
    served: subprocess.Popen[bytes], serve_port: int
) -> None:
    status, body = get_json(f"http://127.0.0.1:{serve_port}/v1/models")

    assert status == 200
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["local-model"]
    assert body["data"][0]["object"] == "model"
    assert body["data"][0]["owned_by"] == "local"


def test_serve_stops_cleanly_on_sigterm(served: subprocess.Popen[bytes], serve_port: int) -> None:
    served.send_signal(signal.SIGTERM)

    assert served.wait(timeout=SHUTDOWN_TIMEOUT) == Exit.OK
    with pytest.raises(urllib.error.URLError):
        get_json(f"http://127.0.0.1:{serve_port}/healthz")


def test_serve_without_the_key_variable_exits_with_config_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, LOCAL_CONFIG.replace('/v1"\n', f'/v1"\napi_key_env = "{KEY_VAR}"\n', 1)
    )
    args = ["serve", "--config", str(config), "--port", str(free_port())]
    started = time.monotonic()

    result = run_bridge(bridge_env(tmp_path), *args)

    assert result.returncode == Exit.CONFIG
    assert KEY_VAR in result.stderr
    assert str(config) in result.stderr
    assert time.monotonic() - started < 10.0


def test_serve_refuses_an_impossible_port_without_a_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, LOCAL_CONFIG)
    result = run_bridge(bridge_env(tmp_path), "serve", "--config", str(config), "--port", "99999")
    assert result.returncode == Exit.USAGE
    assert "99999" in result.stderr and "0 to 65535" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_logs_where_everything_is(tmp_path: Path) -> None:
    """One line each: the config, the database and its schema, each model's provider, and
    the address it listens on (the real port when asked for port 0)."""
    config = write_config(
        tmp_path, LOCAL_CONFIG.replace("http://127.0.0.1:9/v1", "http://user:pw@127.0.0.1:9/v1")
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--config", str(config), "--port", "0"],
            cwd=REPO,
            env=bridge_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        port = None
        for _ in range(int(STARTUP_TIMEOUT / 0.1)):
            found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/v1", log.read_text())
            if found or time.monotonic() > deadline or process.poll() is not None:
                port = int(found[1]) if found else None
                break
            time.sleep(0.1)
        text = log.read_text()
        assert port is not None and port != 0, text
        assert get_json(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=SHUTDOWN_TIMEOUT)
    assert f"config {config}" in text
    assert f"database {tmp_path / 'state' / 'bridge.db'} (schema version " in text
    assert "model local-model -> provider local (http://[redacted]@127.0.0.1:9/v1" in text
    assert ":pw@" not in text
