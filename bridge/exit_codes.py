"""The command line's exit codes, each defined once (docs/cli.md lists them; the systemd
units stop restarting on 2, 3 and 4)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    FAILED = 1  # service install/uninstall could not do what was asked
    USAGE = 2  # a bad command line (argparse's own code)
    CONFIG = 3  # the configuration is invalid, or a key it needs is missing
    STORE = 4  # the database cannot be opened, is damaged, or has a schema that needs migrate
    NOT_FOUND = 5  # `sessions show|export|delete` named an unknown response
    LISTEN = 6  # serve cannot listen on its address
    CODEX = 7  # codex-config could not read Codex's model catalog or merge its config
    UNREACHABLE = 8  # trace could not reach the running bridge (or tracing is off)
    PROBE = 9  # check-config --probe found a provider it could not use
