"""Running the application: listen, tell systemd, wait for a signal, shut down in order.

The shutdown follows aiohttp's own order (stop listening, on_shutdown, wait for handlers,
cleanup): on_shutdown drains the open responses (bridge.turns), the handlers then finish
their final events, and cleanup closes the upstream session and the database last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time

from aiohttp import web

from bridge import __version__
from bridge.collector import settle_after_startup
from bridge.notify import Notifier
from bridge.turns import ABORT_GRACE

log = logging.getLogger("bridge")

# Open files the bridge asks for (each connection is one); the units set LimitNOFILE.
FILE_LIMIT = 65536
# asyncio's log lines for a listening socket out of resources (one per failed accept).
ACCEPT_ERRORS = ("socket.accept() out of system resource", "Error on transport creation")


def raise_file_limit() -> None:
    """Raise the soft limit on open files towards the hard one (1024 is easily reached)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FILE_LIMIT if hard == resource.RLIM_INFINITY else min(FILE_LIMIT, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)


class RateLimited(logging.Filter):
    """Lets a record whose message starts with one of `prefixes` through at most once per
    `interval` seconds, saying how many were held back (a flood of accept errors once
    filled 57 MB of log in 40 s)."""

    def __init__(self, prefixes: tuple[str, ...], interval: float = 10.0) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval = interval
        self._next = 0.0
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self._prefixes):
            return True
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return False
        if self._held:
            record.msg = f"{record.msg} ({self._held} more like it in the last {self._interval:g}s)"
            self._held = 0
        self._next = now + self._interval
        return True


async def serve(
    app: web.Application, host: str, port: int, drain_seconds: float, header_timeout: float
) -> None:
    """Serve `app` until SIGTERM, SIGINT or SIGHUP, then stop gracefully."""
    notifier = Notifier(os.environ)
    raise_file_limit()
    logging.getLogger("asyncio").addFilter(RateLimited(ACCEPT_ERRORS))
    # Handlers get the drain time plus the time aborted ones need to end their responses.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=drain_seconds + ABORT_GRACE,
        handle_signals=False,
        # A connection that has not sent a whole request (headers) within this is closed:
        # a peer trickling bytes cannot hold it open. Idle keep-alive connections too.
        keepalive_timeout=header_timeout,
    )
    await runner.setup()  # startup: the database is opened and migrated here
    watchdog: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = _bound_port(runner, port)
        settle_after_startup()
        shown = f"[{host}]" if ":" in host else host
        log.info("responses-bridge %s listening on http://%s:%d/v1", __version__, shown, bound)
        notifier.notify("READY=1", f"STATUS=listening on {shown}:{bound}")
        if notifier.watchdog_seconds:
            watchdog = asyncio.create_task(_watchdog(notifier, notifier.watchdog_seconds))
        received = await _wait_for_signal()
        if received == signal.SIGHUP:
            # A closing terminal, or a reload asked for: the config is read only at start.
            log.info(
                "SIGHUP: stopping as for SIGTERM (the config is read at start: restart the "
                "bridge to use a changed one)"
            )
        log.info("stopping: open responses get up to %gs", drain_seconds)
        notifier.notify("STOPPING=1", "STATUS=draining open responses")
    finally:
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await runner.cleanup()
    log.info("stopped")


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    """The port listened on (port 0 asks the system for a free one)."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


# The signals that stop the bridge, each the same way: drain, then exit 0. SIGHUP (a closing
# terminal) used to kill it at once, cutting its streams.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


async def _wait_for_signal() -> signal.Signals:
    """The first stop signal received."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def stop(signum: signal.Signals) -> None:
        if not received.done():
            received.set_result(signum)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await received
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _watchdog(notifier: Notifier, interval: float) -> None:
    """WATCHDOG=1 while the event loop runs; a stuck loop stops it and systemd restarts us."""
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
