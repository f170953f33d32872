"""sd_notify: tell systemd the service is ready, stopping, and alive (watchdog).

The protocol is a datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an
abstract name written with a leading "@"). Without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends state lines to systemd's notification socket, if there is one."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        name = environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if name.startswith("@"):
            self.address = "\0" + name[1:]  # an abstract socket
        elif name.startswith("/"):
            self.address = name
        self.watchdog_seconds = _watchdog_seconds(environ)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send `READY=1`-style lines; True if systemd was told."""
        if self.address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            try:
                sock.sendto("\n".join(lines).encode("utf-8"), self.address)
            except OSError as exc:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
                return False
        return True


def _watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """How often to send WATCHDOG=1: half of $WATCHDOG_USEC, when it is meant for us."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
