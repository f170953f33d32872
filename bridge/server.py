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
import signal

from aiohttp import web

from bridge import __version__
from bridge.notify import Notifier
from bridge.turns import ABORT_GRACE

log = logging.getLogger("bridge")


async def serve(app: web.Application, host: str, port: int, drain_seconds: float) -> None:
    """Serve `app` until SIGTERM or SIGINT, then stop gracefully."""
    notifier = Notifier(os.environ)
    # Handlers get the drain time plus the time aborted ones need to end their responses.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=drain_seconds + ABORT_GRACE,
        handle_signals=False,
    )
    await runner.setup()  # startup: the database is opened and migrated here
    watchdog: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("responses-bridge %s listening on http://%s:%d/v1", __version__, host, port)
        notifier.notify("READY=1", f"STATUS=listening on {host}:{port}")
        if notifier.watchdog_seconds:
            watchdog = asyncio.create_task(_watchdog(notifier, notifier.watchdog_seconds))
        await _wait_for_signal()
        log.info("stopping: open responses get up to %gs", drain_seconds)
        notifier.notify("STOPPING=1", "STATUS=draining open responses")
    finally:
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await runner.cleanup()
    log.info("stopped")


async def _wait_for_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _watchdog(notifier: Notifier, interval: float) -> None:
    """WATCHDOG=1 while the event loop runs; a stuck loop stops it and systemd restarts us."""
    while True:
        notifier.notify("WATCHDOG=1")
        await asyncio.sleep(interval)
