"""The SQLite store's connections, each an aiosqlite connection with a thread of its own.

One writer and a few readers (WAL lets them read while the writer writes), and one each for
checkpoints and /readyz's probe, so neither waits behind the writer. Work is handed to a
connection's thread as a whole function of its sqlite3 connection (a transaction, or a read
of several queries): one thread hop however many statements it runs (aiosqlite's own
methods hop once per statement, which cost a turn's write 2.0 ms against 0.42 ms), and a
cancelled caller can never leave a transaction half done: the function runs to its end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import aiosqlite

from bridge.store.files import BUSY_TIMEOUT_MS, read_only_uri

T = TypeVar("T")
P = ParamSpec("P")
Work = Callable[Concatenate[sqlite3.Connection, P], T]

READERS = 2
# How long a statement of the writer waits for another process's lock before it fails (and
# the turn write is tried again until write_timeout).
WRITER_BUSY_MS = 1000
# After a checkpoint the WAL file is cut back to this size instead of staying at its largest.
WAL_SIZE_LIMIT = 1024 * 1024


class Connection:
    """An aiosqlite connection, given whole functions to run in its thread."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    @classmethod
    async def open(cls, path: Path, *pragmas: str, read_only: bool = False) -> Connection:
        """A connection to the file with these pragmas set (`read_only`: one that cannot
        write)."""
        if read_only:
            opening = aiosqlite.connect(read_only_uri(path), uri=True, isolation_level=None)
        else:
            opening = aiosqlite.connect(path, isolation_level=None)
        connection = cls(await opening)
        try:
            await connection.run(_set, (f"busy_timeout = {BUSY_TIMEOUT_MS}", *pragmas))
        except BaseException:
            await connection.close()
            raise
        return connection

    async def run(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work(connection, *args)` in the connection's thread."""
        connection = self._connection
        # aiosqlite has no public call for this: _execute is what each of its own methods
        # hands its work to the thread with (setup.cfg bounds the version).
        execute: Callable[..., Awaitable[T]] = connection._execute
        return await execute(work, connection._conn, *args, **kwargs)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open on the connection, read from the loop while its
        thread works: SQLite keeps it as a flag, set once BEGIN has its lock (a transaction
        beginning or ending meanwhile may be seen either way). False once it is closed."""
        try:
            return self._connection.in_transaction
        except (ValueError, sqlite3.Error):  # aiosqlite's "no active connection", or closed
            return False

    async def close(self) -> None:
        await self._connection.close()


class Connections:
    """The store's connections to the file: the writer, the readers, and one each for
    checkpoints and the probe."""

    def __init__(
        self,
        writer: Connection,
        readers: list[Connection],
        checkpointer: Connection,
        probe: Connection,
    ) -> None:
        self.writer = writer
        self.readers = readers
        self.checkpointer = checkpointer
        self.probe = probe

    @classmethod
    async def open(cls, path: Path, synchronous: str, *, read_only: bool) -> Connections:
        """`synchronous`: the config's level (FULL, NORMAL or EXTRA)."""
        level = synchronous.upper()
        if level not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError(f"unknown synchronous level {synchronous!r}")
        writer = [
            f"synchronous = {level}",
            "foreign_keys = ON",
            f"journal_size_limit = {WAL_SIZE_LIMIT}",
            # Checkpoints run on a connection of their own (bridge.store.sqlite), never in
            # a turn's commit.
            "wal_autocheckpoint = 0",
            f"busy_timeout = {WRITER_BUSY_MS}",
        ]
        if not read_only:
            writer.insert(0, "journal_mode = WAL")
        opened: list[Connection] = []
        try:
            for pragmas in (
                writer,
                [f"synchronous = {level}"],
                ["busy_timeout = 250"],
                *(["query_only = ON"] for _ in range(READERS)),
            ):
                opened.append(await Connection.open(path, *pragmas, read_only=read_only))
        except BaseException:
            for connection in opened:
                await connection.close()
            raise
        return cls(opened[0], opened[3:], opened[1], opened[2])

    async def close(self) -> None:
        for connection in (self.checkpointer, self.probe, self.writer, *self.readers):
            await connection.close()


def _set(db: sqlite3.Connection, pragmas: tuple[str, ...]) -> None:
    for pragma in pragmas:
        db.execute(f"PRAGMA {pragma}")
