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
    assert service["EnvironmentFile"].startswith("-")  # keys file optional
    assert service["Restart"] == "on-failure"
    # A bad command line, config or database is not retried forever.
    assert service["RestartPreventExitStatus"].split() == ["2", "3", "4"]
    assert "Documentation" not in unit(path)["Unit"]
    # Longer than the drain period, so systemd never kills a draining bridge.
    assert float(service["TimeoutStopSec"]) > ServerConfig().drain_seconds + 5
    assert "WatchdogSec" in service
    # Every connection is an open file; 1024 was exhausted by a flood of slow clients.
    assert int(service["LimitNOFILE"]) >= 65536


def test_the_user_unit_and_the_command_line_agree_on_the_database() -> None:
    """StateDirectory= in a user unit is ~/.config before systemd 254: not used there."""
    user = unit(UNITS / "user" / "responses-bridge.service")
    assert "StateDirectory" not in user["Service"]
    assert user["Service"]["Environment"] == "STATE_DIRECTORY=%h/.local/state/responses-bridge"
    assert "After" not in user["Unit"]  # network-online.target means nothing to a user manager
    system = unit(UNITS / "responses-bridge.service")["Service"]
    assert system["StateDirectory"] == "responses-bridge"
    assert system["StateDirectoryMode"] == "0700"


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


# `responses-bridge service install`

REPO = UNITS.parent


def install(tmp_path: Path, *args: str, script: str | None = None) -> tuple[int, str, str, Path]:
    import os
    import subprocess
    import sys

    config = tmp_path / "config.toml"
    config.write_text('[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\n')
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    command = [script] if script else [sys.executable, "-m", "bridge"]
    result = subprocess.run(
        [*command, "service", "install", *args, "--config", str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr, config


def test_service_install_writes_a_user_unit_for_this_installation(tmp_path: Path) -> None:
    import shutil
    import sys

    code, out, err, config = install(tmp_path, "--user")
    assert code == 0, err
    written = tmp_path / "xdg" / "systemd" / "user" / "responses-bridge.service"
    service = unit(written)["Service"]
    command = shlex.split(service["ExecStart"])
    assert command == [sys.executable, "-m", "bridge", "serve", "--config", str(config)]
    assert service["Environment"] == f"STATE_DIRECTORY={tmp_path / 'state'}"
    assert service["RestartPreventExitStatus"] == "2 3 4"
    assert f"database: {tmp_path / 'state' / 'bridge.db'}" in out
    assert "systemctl --user daemon-reload" in out
    assert "systemctl --user enable --now responses-bridge" in out
    if shutil.which("systemd-analyze"):
        assert "systemd-analyze verify: ok" in out
    # Nothing enabled: no symlink in a .wants directory.
    assert not list((tmp_path / "xdg").rglob("*.wants"))


def test_service_install_names_the_console_script_when_run_through_it(tmp_path: Path) -> None:
    import sys

    script = Path(sys.executable).parent / "responses-bridge"
    if not script.exists():
        pytest.skip("the responses-bridge script is not installed beside this interpreter")
    code, out, err, _ = install(tmp_path, "--output", "-", script=str(script))
    assert code == 0, err
    assert unit_text_exec(out)[0] == str(script)


def unit_text_exec(text: str) -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return shlex.split(parser["Service"]["ExecStart"])


def test_service_install_system_unit(tmp_path: Path) -> None:
    target = tmp_path / "system" / "responses-bridge.service"
    code, out, err, config = install(tmp_path, "--system", "--output", str(target))
    assert code == 0, err
    parsed = unit(target)
    assert parsed["Service"]["StateDirectory"] == "responses-bridge"
    assert parsed["Unit"]["After"] == "network-online.target"
    assert unit_text_exec(target.read_text())[-2:] == ["--config", str(config)]
    assert "/var/lib/responses-bridge/bridge.db" in out
    assert "systemctl daemon-reload" in out


def run_service(tmp_path: Path, *args: str, config_text: str | None = None) -> tuple[int, str]:
    """`service ...` with its own XDG_CONFIG_HOME; stdout and stderr together."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "STATE_DIRECTORY": str(tmp_path / "state"),
    }
    if config_text is not None:
        (tmp_path / "config.toml").write_text(config_text)
        args = (*args, "--config", str(tmp_path / "config.toml"))
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "service", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


KEYED = """
[providers.deepseek]
base_url = "https://api.deepseek.com/v1"
api_key_env = "DEEPSEEK_API_KEY"

[models.chat]
provider = "deepseek"
"""


def test_service_install_warns_what_would_keep_the_unit_from_starting(tmp_path: Path) -> None:
    env_file = tmp_path / "xdg" / "responses-bridge" / "env"
    code, said = run_service(tmp_path, "install", "--user", config_text=KEYED)
    assert code == 0, said
    assert f"warning: {env_file} does not exist" in said
    assert "DEEPSEEK_API_KEY is not in" in said and "exit 3" in said
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("# keys\nDEEPSEEK_API_KEY=sk-test\n")
    code, said = run_service(tmp_path, "install", "--user", config_text=KEYED)
    assert code == 0 and "warning" not in said, said
    # A config with the demo model and no key in the file: the demo mode, not exit 3.
    env_file.write_text("OTHER=1\n")
    shipped = (REPO / "config.toml").read_text()
    code, said = run_service(tmp_path, "install", "--user", config_text=shipped)
    assert code == 0, said
    assert "would start in the demo mode" in said and "exit 3" not in said


def test_service_install_system_warns_about_paths_its_sandbox_hides(tmp_path: Path) -> None:
    # tmp_path is under the temporary directory, which PrivateTmp= hides from the unit.
    unit_file = tmp_path / "system" / "responses-bridge.service"
    code, said = run_service(
        tmp_path,
        "install",
        "--system",
        "--output",
        str(unit_file),
        config_text=KEYED + '\n[store]\npath = "/home/someone/bridge.db"\n',
    )
    assert code == 0, said
    config = tmp_path / "config.toml"
    assert f"the config {config} is in a temporary directory" in said
    assert "PrivateTmp=yes" in said
    assert "the database /home/someone/bridge.db is in a home directory" in said


def test_service_uninstall_removes_a_disabled_unit_only(tmp_path: Path) -> None:
    code, said = run_service(tmp_path, "install", "--user", config_text=KEYED)
    assert code == 0, said
    units = tmp_path / "xdg" / "systemd" / "user"
    written = units / "responses-bridge.service"
    wants = units / "default.target.wants"
    wants.mkdir()
    (wants / "responses-bridge.service").symlink_to(written)
    code, said = run_service(tmp_path, "uninstall", "--user")
    assert code == 1 and "systemctl --user disable --now responses-bridge" in said
    assert written.exists()
    (wants / "responses-bridge.service").unlink()
    code, said = run_service(tmp_path, "uninstall", "--user")
    assert code == 0, said
    assert not written.exists()
    assert "systemctl --user daemon-reload" in said
    assert (tmp_path / "config.toml").exists()
    code, said = run_service(tmp_path, "uninstall", "--user")
    assert code == 1 and "there is no unit" in said


def test_a_failed_terminal_assertion_names_the_error_the_response_carried() -> None:
    from tests.conftest import assert_ends

    failed = {
        "type": "response.failed",
        "response": {"status": "failed", "error": {"code": "server_error", "message": "busy"}},
    }
    with pytest.raises(AssertionError, match=r"response\.failed.*server_error.*busy"):
        assert_ends([{"type": "response.created"}, failed])
    assert assert_ends(failed, "response.failed") is failed
