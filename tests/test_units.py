"""The systemd units say what the service needs: notify, state, keys from a file, hardening."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from bridge.config import ServerConfig

UNITS = Path(__file__).resolve().parents[1] / "systemd"


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize(
    "path", [UNITS / "responses-bridge.service", UNITS / "user" / "responses-bridge.service"]
)
def test_unit_runs_the_service_the_way_it_expects(path: Path) -> None:
    service = unit(path)["Service"]
    assert service["Type"] == "notify"
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/responses-bridge")
    assert command[1:3] == ["serve", "--config"]
    assert service["StateDirectory"] == "responses-bridge"
    assert service["StateDirectoryMode"] == "0700"
    assert service["EnvironmentFile"].startswith("-")  # keys file optional
    assert service["Restart"] == "on-failure"
    # Longer than the drain period, so systemd never kills a draining bridge.
    assert float(service["TimeoutStopSec"]) > ServerConfig().drain_seconds + 5
    assert "WatchdogSec" in service
    # Every connection is an open file; 1024 was exhausted by a flood of slow clients.
    assert int(service["LimitNOFILE"]) >= 65536


def test_system_unit_is_hardened() -> None:
    service = unit(UNITS / "responses-bridge.service")["Service"]
    assert service["ExecStart"].split()[1:] == [
        "serve",
        "--config",
        "/etc/responses-bridge/config.toml",
    ]
    assert service["EnvironmentFile"] == "-/etc/responses-bridge/env"
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }.items():
        assert service[key] == value, key


def test_system_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    """systemd's own checker accepts the unit and rates its exposure low."""
    import shutil
    import subprocess
    import sys

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (UNITS / "responses-bridge.service").read_text()
    # verify wants ExecStart to exist: point it at this interpreter's command.
    command = str(Path(sys.executable).parent / "python")
    copy = tmp_path / "responses-bridge.service"
    copy.write_text(text.replace("/opt/responses-bridge/bin/responses-bridge", command))
    verify = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    level = float(
        security.stdout.split("Overall exposure level for responses-bridge.service:")[1].split()[0]
    )
    assert level < 3.0, security.stdout[-500:]
