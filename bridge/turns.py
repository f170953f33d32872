"""The turns in flight, so that a shutdown can let them finish, then end the rest cleanly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
# How long aborted turns get to send their final event and store themselves.
ABORT_GRACE = 5.0


class TurnsInFlight:
    """Runs each turn's relay as a task it can wait for or abort."""

    def __init__(self) -> None:
        # Each task with a test telling whether its turn has reached its final event; a
        # turn that has is never aborted (its answer is already decided).
        self._tasks: dict[asyncio.Task[Any], Callable[[], bool]] = {}
        self.draining = False

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, work: Coroutine[Any, Any, T], ended: Callable[[], bool]) -> T:
        """Run `work` as an abortable turn. An abort by `drain` raises TurnAborted here."""
        task = asyncio.create_task(work)
        self._tasks[task] = ended
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise TurnAborted from None
            task.cancel()
            raise
        finally:
            self._tasks.pop(task, None)

    async def drain(self, seconds: float) -> int:
        """Wait up to `seconds` for the turns in flight, then abort the rest; returns how
        many were aborted."""
        self.draining = True
        pending = set(self._tasks)
        if pending:
            log.info("waiting up to %gs for %d open responses", seconds, len(pending))
            _, pending = await asyncio.wait(pending, timeout=seconds)
        pending = {task for task in pending if not self._tasks.get(task, lambda: True)()}
        for task in pending:
            task.cancel()
        if pending:
            log.warning("ended %d responses still open after %gs", len(pending), seconds)
            await asyncio.wait(pending, timeout=ABORT_GRACE)
        return len(pending)


class TurnAborted(Exception):
    """The bridge is shutting down and ended this turn before its upstream did."""
