"""Connections to the database, each owned by a thread of its own.

One writer and a few readers (WAL lets them read while the writer writes). Work is handed to
a connection's thread as a whole function (a transaction, or a read of several queries),
so it costs one thread hand-off however many statements it runs, and a cancelled caller can
never leave a transaction half done: the function always runs to its end. (datasette's
Database does the same with its write thread.)
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from bridge.store.files import BUSY_TIMEOUT_MS, read_only_uri

T = TypeVar("T")
P = ParamSpec("P")
Work = Callable[Concatenate[sqlite3.Connection, P], T]


class Connection:
    """A sqlite3 connection and the one thread that uses it."""

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection) -> None:
        self._executor = executor
        self._connection = connection

    @classmethod
    async def open(
        cls, path: Path, name: str, *pragmas: str, read_only: bool = False
    ) -> Connection:
        """A connection in a thread of its own (`read_only`: one that cannot write)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bridge-db-{name}")

        def connect() -> sqlite3.Connection:
            if read_only:
                connection = sqlite3.connect(read_only_uri(path), uri=True, isolation_level=None)
            else:
                connection = sqlite3.connect(path, isolation_level=None)
            try:
                for pragma in (f"busy_timeout = {BUSY_TIMEOUT_MS}", *pragmas):
                    connection.execute(f"PRAGMA {pragma}")
            except BaseException:
                connection.close()
                raise
            return connection

        try:
            connection = await asyncio.get_running_loop().run_in_executor(executor, connect)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, connection)

    async def run(self, work: Work[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work(connection, *args)` in the connection's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: work(self._connection, *args, **kwargs)
        )

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._connection.close)
        self._executor.shutdown(wait=True)
