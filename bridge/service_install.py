"""`responses-bridge service install | uninstall`: a systemd unit written for this installation.

The unit runs the executable that is running now, with the config given, and names the
database directory the command line uses too, so `sessions` and `migrate` from a shell find
the service's database on every systemd version (a user unit's `StateDirectory=` is
~/.config before systemd 254, ~/.local/state from 254 on). It is checked with
`systemd-analyze verify` when that is installed. Nothing is enabled or started: the
`systemctl` commands to do so are printed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bridge.config import Config
from bridge.config_env import state_directory, store_path
from bridge.config_load import load_config
from bridge.demo import demo_mode, keyed_providers
from bridge.exit_codes import Exit
from bridge.store.backends import database_label, uses_postgres

UNIT_NAME = "responses-bridge.service"
SYSTEM_UNIT_DIRECTORY = Path("/etc/systemd/system")
SYSTEM_ENV_FILE = "/etc/responses-bridge/env"
SYSTEM_STATE = "/var/lib/responses-bridge"
# Exit codes after which a restart cannot help: a bad command line, a bad config, a
# database that is damaged or newer than this release (bridge.cli).
NO_RESTART_CODES = "2 3 4"
VERIFY_SECONDS = 30.0


def add_commands(commands: Any, config_option: Callable[..., None]) -> None:
    service = commands.add_parser("service", help="write a systemd unit for this installation")
    actions = service.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser(
        "install",
        help="write the unit (never enables or starts it) and print the systemctl commands",
    )
    config_option(install, "the config.toml the service runs with")
    scope = install.add_mutually_exclusive_group()
    scope.add_argument(
        "--user", dest="system", action="store_false", help="a `systemctl --user` unit (default)"
    )
    scope.add_argument("--system", dest="system", action="store_true", help="a system unit")
    install.add_argument(
        "--output",
        metavar="PATH",
        help="write the unit here instead ('-': print it); default: "
        "~/.config/systemd/user or /etc/systemd/system",
    )
    uninstall = actions.add_parser(
        "uninstall",
        help="remove the unit (once disabled); the config, keys and database stay",
    )
    scope = uninstall.add_mutually_exclusive_group()
    scope.add_argument(
        "--user", dest="system", action="store_false", help="the `systemctl --user` unit"
    )
    scope.add_argument("--system", dest="system", action="store_true", help="the system unit")
    uninstall.add_argument(
        "--output", metavar="PATH", help="the unit file, if `install --output` put it elsewhere"
    )


def executable_command(argv0: str = sys.argv[0]) -> list[str]:
    """How this installation is started: its `responses-bridge` script, else this Python
    with `-m bridge` (paths made absolute, symlinks kept: a virtualenv's python is one)."""
    script = Path(argv0)
    if script.name == "responses-bridge" and script.exists():
        return [os.path.abspath(script)]
    found = shutil.which("responses-bridge")
    if script.name == "responses-bridge" and found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "bridge"]


def _config_directory(environ: Mapping[str, str]) -> Path:
    configured = environ.get("XDG_CONFIG_HOME")
    return Path(configured) if configured else Path.home() / ".config"


# How either unit runs the bridge: restarted on failure but not for what a restart cannot
# mend, watched by systemd's watchdog, its files private.
RUNNING = f"""UMask=0077
Restart=on-failure
# A bad command line, config or database: restarting cannot help.
RestartPreventExitStatus={NO_RESTART_CODES}
RestartSec=2
LimitNOFILE=65536
TimeoutStopSec=60
WatchdogSec=30
"""


def user_unit(command: list[str], config: Path, state: Path, env_file: Path) -> str:
    exec_start = shlex.join([*command, "serve", "--config", str(config)])
    return f"""# responses-bridge for `systemctl --user`.
# Written by `responses-bridge service install`. It runs as you, and starts with your
# session (or at boot with `loginctl enable-linger`).
# API keys: {env_file} (KEY=value lines, mode 0600). The database directory is set here
# (not with StateDirectory=) so that the command line, run from a shell, uses the same one.

[Unit]
Description=responses-bridge: the OpenAI Responses API over Chat Completions providers

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
EnvironmentFile=-{env_file}
Environment=STATE_DIRECTORY={state}
{RUNNING}NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native

[Install]
WantedBy=default.target
"""


def system_unit(command: list[str], config: Path) -> str:
    exec_start = shlex.join([*command, "serve", "--config", str(config)])
    return f"""# responses-bridge as a system service.
# Written by `responses-bridge service install`.
# API keys: {SYSTEM_ENV_FILE} (KEY=value lines, mode 0600). The database lives under
# {SYSTEM_STATE} (StateDirectory=); from a shell, run the command line with
# STATE_DIRECTORY={SYSTEM_STATE}, or set an absolute [store] path in the config.

[Unit]
Description=responses-bridge: the OpenAI Responses API over Chat Completions providers
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
EnvironmentFile=-{SYSTEM_ENV_FILE}
StateDirectory=responses-bridge
StateDirectoryMode=0700
{RUNNING}DynamicUser=yes
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=

[Install]
WantedBy=multi-user.target
"""


def verify(unit: Path, *, user: bool) -> tuple[bool, str] | None:
    """`systemd-analyze verify` of the unit: (passed, what it said); None if not installed."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return None
    with tempfile.TemporaryDirectory(prefix="rb-verify-") as runtime:
        env = dict(os.environ)
        # A user manager needs a runtime directory; a shell over ssh or sudo may have none.
        if user and not env.get("XDG_RUNTIME_DIR"):
            os.chmod(runtime, 0o700)
            env["XDG_RUNTIME_DIR"] = runtime
        command = [analyze, "verify", *(["--user"] if user else []), str(unit)]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                env=env,
                timeout=VERIFY_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
    said = (result.stdout + result.stderr).strip()
    return result.returncode == 0, said


# What the system unit hides from the service: PrivateTmp= gives it a /tmp and /var/tmp of
# its own, ProtectHome= makes home directories read-only (and a DynamicUser= cannot read
# into a user's private home at all).
HIDDEN_BY_PRIVATE_TMP = (Path("/tmp"), Path("/var/tmp"))
HIDDEN_BY_PROTECT_HOME = (Path("/home"), Path("/root"), Path("/run/user"))


def read_env_file(path: Path) -> dict[str, str] | None:
    """The variables of a systemd EnvironmentFile (NAME=value lines), or None if missing."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    variables = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        name, _, value = line.partition("=")
        variables[name.strip()] = value.strip().strip("'\"")
    return variables


def _under(path: Path, roots: tuple[Path, ...]) -> Path | None:
    for root in roots:
        if path == root or root in path.parents:
            return root
    return None


def warnings_for(
    config: Config, env_file: Path, *, system: bool, paths: dict[str, Path]
) -> list[str]:
    """What would keep the service from working: a missing environment file, a used
    provider's key not in it, and (system unit) paths its sandbox hides."""
    found = []
    variables = read_env_file(env_file)
    if variables is None:
        found.append(
            f"{env_file} does not exist: the service reads its API keys from it "
            "(NAME=value lines, mode 0600)"
        )
        variables = {}
    if demo_mode(config, variables):
        found.append(
            f"no provider key is in {env_file}: the service would start in the demo mode, "
            "where only the demo model answers"
        )
    else:
        for name in sorted(keyed_providers(config)):
            variable = config.providers[name].api_key_env
            if variable and not variables.get(variable):
                found.append(
                    f"provider {name}'s key {variable} is not in {env_file}: the service "
                    "would exit 3 at start and stay failed"
                )
    if system:
        for what, path in paths.items():
            if _under(path, HIDDEN_BY_PRIVATE_TMP):
                found.append(
                    f"the {what} {path} is in a temporary directory, which the system unit "
                    "does not see (PrivateTmp=yes): put it elsewhere, e.g. /etc/responses-bridge"
                )
            elif _under(path, HIDDEN_BY_PROTECT_HOME):
                found.append(
                    f"the {what} {path} is in a home directory, which the system unit's user "
                    "cannot read or write (ProtectHome=, DynamicUser=): put it elsewhere, "
                    "e.g. /etc/responses-bridge or /opt"
                )
    return found


def _unit_path(args: argparse.Namespace) -> Path:
    if args.output and args.output != "-":
        return Path(args.output)
    if args.system:
        return SYSTEM_UNIT_DIRECTORY / UNIT_NAME
    return _config_directory(os.environ) / "systemd" / "user" / UNIT_NAME


def uninstall(args: argparse.Namespace) -> int:
    """Remove the unit file, unless it is still enabled (systemctl needs the file to
    disable it); never runs systemctl itself."""
    target = _unit_path(args)
    systemctl = "systemctl" if args.system else "systemctl --user"
    sudo = "sudo " if args.system and os.geteuid() != 0 else ""
    if not target.exists():
        print(f"responses-bridge: there is no unit at {target}", file=sys.stderr)
        return Exit.FAILED
    enabled = sorted(target.parent.glob(f"*.wants/{UNIT_NAME}"))
    if enabled:
        print(
            f"responses-bridge: the unit is still enabled ({enabled[0]}); first run:\n"
            f"  {sudo}{systemctl} disable --now responses-bridge\nthen this command again",
            file=sys.stderr,
        )
        return Exit.FAILED
    try:
        target.unlink()
    except OSError as exc:
        hint = " (run it with sudo)" if args.system else ""
        print(f"responses-bridge: cannot remove {target}: {exc.strerror}{hint}", file=sys.stderr)
        return Exit.FAILED
    print(f"removed {target}")
    print("The config, the API keys' file and the database are left as they are. Now run:")
    print(f"  {sudo}{systemctl} daemon-reload")
    return Exit.OK


def run(args: argparse.Namespace, config_file: str | None) -> int:
    if args.action == "uninstall":
        return uninstall(args)
    assert config_file is not None
    config = load_config(config_file)  # a unit for a config that does not load is no use
    config_path = Path(os.path.abspath(config_file))
    command = executable_command()
    paths = {"command": Path(command[0]), "config": config_path}
    if args.system:
        env_file = Path(SYSTEM_ENV_FILE)
        text = system_unit(command, config_path)
        target = SYSTEM_UNIT_DIRECTORY / UNIT_NAME
        database = database_label(config, {"STATE_DIRECTORY": SYSTEM_STATE})
        if not uses_postgres(config):
            paths["database"] = store_path(config, {"STATE_DIRECTORY": SYSTEM_STATE})
    else:
        state = state_directory(os.environ)
        env_file = _config_directory(os.environ) / "responses-bridge" / "env"
        text = user_unit(command, config_path, state, env_file)
        target = _config_directory(os.environ) / "systemd" / "user" / UNIT_NAME
        database = database_label(config, {"STATE_DIRECTORY": str(state)})
    if args.output == "-":
        sys.stdout.write(text)
        return Exit.OK
    if args.output:
        target = Path(args.output)
    for warning in warnings_for(config, env_file, system=args.system, paths=paths):
        print(f"responses-bridge: warning: {warning}", file=sys.stderr)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        hint = " (run it with sudo, or pass --output)" if args.system else ""
        print(f"responses-bridge: cannot write {target}: {exc.strerror}{hint}", file=sys.stderr)
        return Exit.FAILED
    print(f"wrote {target}")
    print(f"  runs:     {shlex.join(command)} serve --config {config_path}")
    print(f"  database: {database}")
    checked = verify(target, user=not args.system)
    if checked is None:
        print("  (systemd-analyze is not installed: the unit was not verified)")
    elif checked[0]:
        print("  systemd-analyze verify: ok")
    else:
        print(f"responses-bridge: systemd-analyze verify {target}:\n{checked[1]}", file=sys.stderr)
        return Exit.FAILED
    systemctl = "systemctl" if args.system else "systemctl --user"
    sudo = "sudo " if args.system and os.geteuid() != 0 else ""
    print("\nNothing was enabled or started. To do so:")
    print(f"  {sudo}{systemctl} daemon-reload")
    print(f"  {sudo}{systemctl} enable --now responses-bridge")
    journal = "journalctl -u" if args.system else "journalctl --user -u"
    print(f"  {journal} responses-bridge -f      # its log")
    return Exit.OK
