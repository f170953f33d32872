"""The event loop the bridge runs on: uvloop where it is installed (Linux and macOS, a
dependency there), asyncio's own elsewhere.

uvloop does the loop's and the sockets' work in C: under 64 streams at a real provider's
pace, the loop and the transports are most of what a token costs (bench/README.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop, or None for asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
