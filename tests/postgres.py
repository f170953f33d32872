"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary directory, listening
on a loopback port, stopped at the end. Debian's `postgresql` package provides the programs
(`.ci/run` installs it when it is missing).

As root (CI here runs as root), the server runs as the `postgres` user, since PostgreSQL
refuses to run as root. Connections over TCP need the password (scram-sha-256); the local
socket is trusted, for setting up.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path

USER = "bridge"
PASSWORD = "bridge-test-password"
START_SECONDS = 60


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """One PostgreSQL server of our own."""

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        # durable: fsync and synchronous commits as PostgreSQL ships them (benchmarks);
        # else off, for fast tests.
        self.durable = durable
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.port = _free_port()
        self.bin = _binaries()
        self._as: list[str] = []
        self._options = ""
        self._databases = 0

    def _run(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *command],
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
            check=False,
        )

    def start(self) -> str | None:
        """Start it; None, or why it could not start."""
        if self.bin is None:
            return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
        self.sockets.mkdir(parents=True)
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run the server as"
            for path in (self.root, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        password_file = self.root / "password"
        password_file.write_text(PASSWORD)
        if self._as:
            os.chown(password_file, pwd.getpwnam("postgres").pw_uid, -1)
        initdb = self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if initdb.returncode != 0:
            return f"initdb failed: {initdb.stderr[-1000:]}"
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.sockets} -c max_connections=200"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._options = options
        started = self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            str(START_SECONDS),
            "start",
        )
        if started.returncode != 0:
            log = (
                (self.root / "server.log").read_text()
                if (self.root / "server.log").exists()
                else ""
            )
            return f"pg_ctl start failed: {started.stderr[-500:]} {log[-1000:]}"
        return None

    def create_database(self) -> str:
        """A new empty database; its URL (without the password)."""
        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}"
        created = self._run(
            str(self.bin / "createdb"),
            "-h",
            str(self.sockets),
            "-p",
            str(self.port),
            "-U",
            USER,
            name,
        )
        assert created.returncode == 0, created.stderr
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def stop_fast(self) -> None:
        """Stop the server as an operator restarting it would (connections are closed)."""
        assert self.bin is not None
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Start it again after stop_fast, on the same port."""
        assert self.bin is not None
        started = self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            self._options,
            "-w",
            "start",
        )
        assert started.returncode == 0, started.stderr

    def stop(self) -> None:
        if self.bin is not None and self.data.exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
