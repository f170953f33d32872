"""Real processes for end-to-end tests: the bridge as `python -m bridge serve`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]


async def output_of(
    process: asyncio.subprocess.Process, seconds: float
) -> tuple[bytes, bytes | None]:
    """What the process wrote (stdout, stderr) once it ended; killed past `seconds`."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out, err


async def raw_post(
    port: int,
    path: str,
    body: bytes,
    *,
    declared: int | None = None,
    receive_buffer: int | None = None,
) -> socket.socket:
    """A POST of a JSON `body` written on a bare loopback socket, left to the caller (to
    never read from, or to hang up): its Content-Length says `declared` bytes (the body's
    own length unless given), its receive buffer `receive_buffer` bytes when given."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    length = len(body) if declared is None else declared
    await loop.sock_sendall(
        sock,
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), length, body),
    )
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BridgeProcess:
    """`python -m bridge serve` on a config and database of its own."""

    def __init__(
        self,
        config: Path,
        port: int,
        *,
        env: dict[str, str | None] | None = None,
        log: Path | None = None,
        log_level: str | None = "warning",
        cwd: Path = REPO,
    ) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: asyncio.subprocess.Process | None = None
        # Variables added to (or, with None values, removed from) the test's environment.
        self.env = env or {}
        # stdout and stderr go to this file when set, else nowhere.
        self.log = log
        self.log_level = log_level
        # Where it runs: `python -m bridge` imports the bridge found there first (an earlier
        # release's source, for the upgrade tests).
        self.cwd = cwd

    async def spawn(self) -> asyncio.subprocess.Process:
        """Start the process without waiting for it to serve."""
        args = ["-m", "bridge", "serve", "--config", str(self.config), "--port", str(self.port)]
        if self.log_level:
            args += ["--log-level", self.log_level]
        env = {**os.environ, **self.env}
        env = {k: v for k, v in env.items() if v is not None}
        output = self.log.open("ab") if self.log else None
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                cwd=self.cwd,
                env=env,
                stdout=output or asyncio.subprocess.DEVNULL,
                stderr=output or asyncio.subprocess.DEVNULL,
            )
        finally:
            if output is not None:
                output.close()  # the child has its own copy
        return self.process

    async def wait_ready(self) -> None:
        """Poll /healthz (up to 10 s) until it answers 200."""
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError("the bridge did not start within 10 s")

    async def start(self) -> None:
        await self.spawn()
        await self.wait_ready()

    async def terminate(self) -> int:
        """SIGTERM, as systemd stops it; the exit code (within 15 s)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 15)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.process.wait(), 10)
        self.process = None

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), 10)
