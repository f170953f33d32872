"""Background responses: turns that run detached from the request that created them.

`background: true` answers at once (queued); the turn runs as a task of its own, through
the same stages as any other (bridge.turn). Its events are kept in order, each as its SSE
frame, so that any number of clients can follow it from any point (`GET
/v1/responses/{id}?stream=true&starting_after=N`, the creating request itself when it asked
to stream), and are stored
with the response once it ends. `POST /v1/responses/{id}/cancel` cancels the task: the
upstream request is closed and the response ends cancelled.

The process keeps a run in memory until its events are stored; a response whose run was
lost with a restart is marked failed at the next start (Store.fail_interrupted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from bridge.errors import ApiError
from bridge.event_log import EventLog
from bridge.fair_share import fair_share
from bridge.sse import encode_frames
from bridge.store.protocol import Store
from bridge.turn import Turn
from bridge.wire.events import ResponseEvent, ResponseObject

log = logging.getLogger(__name__)

# How long a shutdown waits for runs to store their events.
CLOSE_SECONDS = 10.0
INTERRUPTED = (
    "responses-bridge stopped while this background response was running; send the request again"
)
# The most a run's events may take before its final ones (one upstream read each, so a
# provider trickling characters makes many); past it the run ends failed.
MAX_LOG_BYTES = 256 * 1024 * 1024


class BackgroundRun:
    """One background turn: its task, its events so far, and whether it has ended."""

    def __init__(self, turn: Turn, events: EventLog) -> None:
        self.turn = turn
        self.client = turn.context.client
        self.events = events
        self.ended = False
        self.cancel_requested = False
        # Why the run was stopped by the bridge (its log is full), if it was.
        self.stopped: ApiError | None = None
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # Followers reading the log; the last one out of an ended run closes it.
        self._readers = 0

    @property
    def response(self) -> ResponseObject:
        """The response as its events have built it so far."""
        return self.turn.translator.as_streamed()

    async def sink(self, events: list[ResponseEvent]) -> None:
        for event in events:
            await self.events.append(encode_frames((event,)))
        self._wake()
        if (
            self.events.size > MAX_LOG_BYTES
            and self.stopped is None
            and not self.turn.translator.ended
            and self.task is not None
        ):
            self.stopped = ApiError.server(
                f"the response's events passed {MAX_LOG_BYTES // (1024 * 1024)} MiB (the "
                "provider sent its answer in very many small pieces); it was ended there"
            )
            self.task.cancel()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, after: int) -> AsyncIterator[bytes]:
        """The frames of the events numbered above `after`, as they come, to the end (a
        background turn sends no heartbeat events, each of which would carry the whole
        output so far into the stored log: the stream's own pings keep followers awake)."""
        position = max(0, after + 1)
        self._readers += 1
        try:
            while True:
                if position < len(self.events):
                    chunk, position = await self.events.read(position)
                    yield chunk
                    continue
                if self.ended:
                    return
                await self._changed.wait()
        finally:
            self._readers -= 1
            if self.ended and not self._readers:
                await self.events.close()

    async def end(self) -> None:
        """The run has ended: wake its followers; the log goes with the last of them."""
        self.ended = True
        self._wake()
        if not self._readers:
            await self.events.close()


class BackgroundRuns:
    """The background turns of this process, by response id, until their events are stored."""

    def __init__(
        self,
        store: Store,
        limit: int,
        *,
        clients: int = 1,
        directory: Path | None = None,
    ) -> None:
        self._store = store
        self._limit = limit
        # Each of the `clients` client keys may run its fair share of `limit`.
        self._share = fair_share(limit, clients)
        # Where the runs' event logs go while they run (None: the system's temporary files).
        self._directory = directory
        self._runs: dict[str, BackgroundRun] = {}
        # Set once the responses a stopped process left running are marked failed (new
        # ones must not be taken for them).
        self._recovered = asyncio.Event()
        self._recovery: asyncio.Task[None] | None = None
        self._cancelling: set[asyncio.Task[BackgroundRun]] = set()

    def recover(self) -> None:
        """Mark failed, in the background, what a stopped process left running; take the
        cancels other bridges send (PostgreSQL)."""
        self._store.on_cancel = self._cancel_from_elsewhere
        self._recovery = asyncio.create_task(self._recover())

    def _cancel_from_elsewhere(self, response_id: str) -> None:
        run = self._runs.get(response_id)
        if run is not None:
            self._cancelling.add(asyncio.create_task(self._cancel_run(run)))
            for task in list(self._cancelling):
                if task.done():
                    self._cancelling.discard(task)

    async def reap(self) -> list[str]:
        """Running responses no bridge runs any more: marked failed now (never this
        process's own runs), after the reap of this process's start has decided."""
        await self._recovered.wait()
        return await self._store.fail_interrupted(INTERRUPTED, keep=set(self._runs))

    async def _recover(self) -> None:
        try:
            await self._store.listen_for_cancels()
        except Exception as exc:
            log.warning("cancels from other bridges will not reach this one: %s", exc)
        try:
            interrupted = await self._store.fail_interrupted(INTERRUPTED)
        except Exception as exc:  # a locked or corrupt database: reported by /readyz
            log.warning("background responses left running were not marked failed: %s", exc)
        else:
            if interrupted:
                log.warning(
                    "%d background responses were running when the bridge last stopped; "
                    "marked failed: %s",
                    len(interrupted),
                    ", ".join(interrupted[:10]),
                )
        finally:
            self._recovered.set()

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, response_id: str, client: str) -> BackgroundRun | None:
        run = self._runs.get(response_id)
        return run if run is not None and run.client == client else None

    async def start(self, turn: Turn) -> BackgroundRun:
        """Record the queued response, then run its turn detached."""
        client = turn.context.client
        if len(self._runs) >= self._limit:
            raise ApiError(
                429,
                f"{len(self._runs)} background responses are running, the most this bridge "
                "runs at once ([server] max_background); try again when one has ended",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        own = sum(run.client == client for run in self._runs.values())
        if own >= self._share:
            raise ApiError(
                429,
                f"This client key has {own} background responses running, its share of the "
                f"{self._limit} the bridge runs at once ([server] max_background, shared by "
                "its client keys); try again when one has ended",
                type="rate_limit_error",
                code="rate_limit_exceeded",
            )
        await self._recovered.wait()
        translator = turn.translator
        response_id = translator.response.id
        translator.response.status = "queued"
        # Known here and claimed before its row exists: no reaper may take it for orphaned.
        run = BackgroundRun(turn, await EventLog.create(self._directory))
        self._runs[response_id] = run
        try:
            await self._store.claim_run(response_id)
            stored = await turn.record()
        except BaseException:
            self._runs.pop(response_id, None)
            await run.end()
            await self._store.release_run(response_id)
            raise
        if not stored:
            self._runs.pop(response_id, None)
            await run.end()
            await self._store.release_run(response_id)
            raise ApiError.server(
                "the background response could not be stored (see the bridge's log); "
                "background responses need the store",
                status=503,
            )
        run.task = asyncio.create_task(self._run(run), name=f"background {translator.response.id}")
        return run

    async def _run(self, run: BackgroundRun) -> None:
        turn = run.turn
        translator = turn.translator
        response_id = translator.response.id
        try:
            try:
                await turn.run(run.sink)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not (run.cancel_requested or run.stopped) or task is None:
                    raise
                task.uncancel()
                if run.stopped is not None:
                    translator.mark_failed(run.stopped)
                    log.warning("background response %s: %s", response_id, run.stopped)
                else:
                    translator.mark_cancelled()
                    log.info("background response %s cancelled", response_id)
                await asyncio.shield(turn.record())
                await run.sink(translator.failed())
            await asyncio.shield(self._store_events(response_id, run.events))
        except asyncio.CancelledError:
            log.warning("background response %s stopped with the bridge", response_id)
        except Exception:  # the task's boundary: its end is logged, never lost silently
            log.exception("background response %s broke off", response_id)
        finally:
            self._runs.pop(response_id, None)
            await asyncio.shield(run.end())
            await asyncio.shield(self._store.release_run(response_id))

    async def _store_events(self, response_id: str, events: EventLog) -> None:
        try:
            await self._store.save_events(response_id, await events.compressed())
        except Exception:
            log.exception("the events of background response %s were not stored", response_id)

    async def cancel(self, response_id: str, client: str) -> BackgroundRun | None:
        """Cancel a run of this process and wait for it to end; None when none runs here."""
        run = self.get(response_id, client)
        if run is None:
            return None
        return await self._cancel_run(run)

    async def _cancel_run(self, run: BackgroundRun) -> BackgroundRun:
        if run.task is None:
            return run
        if not run.ended and not translator_ended(run):
            run.cancel_requested = True
            run.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(run.task)
        return run

    async def close(self) -> None:
        """At shutdown, once the turns have been drained: let the runs store their end."""
        if self._recovery is not None:
            await asyncio.wait([self._recovery], timeout=CLOSE_SECONDS)
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_SECONDS)


def translator_ended(run: BackgroundRun) -> bool:
    return run.turn.translator.ended
