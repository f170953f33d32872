"""The spool: what the database could not take, kept on local disk until it can.

A turn whose write fails because the database is away (a PostgreSQL restart, a SQLite file
locked past write_timeout, a full disk) is written here before its final event goes out,
one file per entry, synced to disk with its directory; bridge.store.health writes the
entries to the database, oldest first, once it answers again. The spool is bounded
(`[store] spool_max_mb`): past it, a turn is not kept, and its final event says store: false
as before.

Each database has its own spool, a subdirectory of `[store] spool_dir` named from the
database's path or URL (bridge.config_env.spool_directory), so a bridge never writes another
database's entries. Several bridges on one database share it: files are complete before
they get their name (written aside, then renamed), one bridge at a time writes them to the
database (a lock file), and writing an entry twice stores the same rows again (upserts).
Entries the database refuses for what they hold are set aside in `rejected/`, never lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from bridge.records import ReasoningRecord, StoredContent, TurnRecord, item_id_of

log = logging.getLogger(__name__)

# Bumped when the entries' shape changes; a bridge reads only the formats it knows.
FORMAT = 1
SUFFIX = ".entry"
LOCK_NAME = ".lock"
DATABASE_NAME = "DATABASE"
REJECTED = "rejected"


class SpooledContent(msgspec.Struct, forbid_unknown_fields=True):
    request: bytes
    response: bytes
    tools: bytes | None
    tools_hash: bytes | None
    # Each input item's id and JSON, as the store writes them.
    item_ids: list[str]
    items: list[bytes]
    item_digests: list[bytes]


class SpooledReasoning(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    details: bytes | None
    keys: list[tuple[str, str, str]]


class SpooledTurn(msgspec.Struct, tag="turn", forbid_unknown_fields=True):
    """A turn's record (bridge.records.TurnRecord) as the spool keeps it."""

    id: str
    created_at: int
    model: str
    status: str
    previous_response_id: str | None
    session_id: str | None
    thread_id: str | None
    input_tokens: int
    output_tokens: int
    client: str
    scope: str | None
    content: SpooledContent | None
    reasoning: SpooledReasoning | None
    output_ids: list[str]


class SpooledEvents(msgspec.Struct, tag="events", forbid_unknown_fields=True):
    """A background response's events (their SSE frames)."""

    response_id: str
    frames: bytes


SpoolEntry = SpooledTurn | SpooledEvents


class SpoolFile(msgspec.Struct, forbid_unknown_fields=True):
    format: int
    entry: SpoolEntry


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(SpoolFile)


def spooled_turn(record: TurnRecord) -> SpooledTurn:
    content = None
    if record.content is not None:
        stored = record.content
        positions = range(len(stored.items))
        content = SpooledContent(
            request=stored.request,
            response=stored.response,
            tools=stored.tools,
            tools_hash=stored.tools_hash,
            # An item sent without an id gets its id here, once (as the write would).
            item_ids=[item_id_of(stored.items[position]) for position in positions],
            items=[stored.item_json(position) for position in positions],
            item_digests=list(stored.item_digests),
        )
    reasoning = None
    if record.reasoning is not None:
        reasoning = SpooledReasoning(
            record.reasoning.text, record.reasoning.details, list(record.reasoning.keys)
        )
    return SpooledTurn(
        id=record.id,
        created_at=record.created_at,
        model=record.model,
        status=record.status,
        previous_response_id=record.previous_response_id,
        session_id=record.session_id,
        thread_id=record.thread_id,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        client=record.client,
        scope=record.scope,
        content=content,
        reasoning=reasoning,
        output_ids=list(record.output_ids),
    )


def turn_record(spooled: SpooledTurn) -> TurnRecord:
    """The record again, as the store's write takes it."""
    content = None
    if spooled.content is not None:
        kept = spooled.content
        content = StoredContent(
            request=kept.request,
            response=kept.response,
            tools=kept.tools,
            tools_hash=kept.tools_hash,
            # The writes read only each item's id and its JSON (given whole below).
            items=[{"id": item_id} for item_id in kept.item_ids],
            encoded=list[bytes | None](kept.items),
            item_digests=kept.item_digests,
        )
    reasoning = None
    if spooled.reasoning is not None:
        reasoning = ReasoningRecord(
            spooled.reasoning.text, spooled.reasoning.details, spooled.reasoning.keys
        )
    return TurnRecord(
        id=spooled.id,
        created_at=spooled.created_at,
        model=spooled.model,
        status=spooled.status,
        previous_response_id=spooled.previous_response_id,
        session_id=spooled.session_id,
        thread_id=spooled.thread_id,
        input_tokens=spooled.input_tokens,
        output_tokens=spooled.output_tokens,
        client=spooled.client,
        scope=spooled.scope,
        content=content,
        reasoning=reasoning,
        output_ids=spooled.output_ids,
    )


def pending_parts(entry: SpoolEntry) -> list[str]:
    """What of a response waits in the spool, as its final object lists it."""
    if isinstance(entry, SpooledEvents):
        return ["events"]
    parts = ["response"]
    if entry.content is not None:
        parts.append("input_items")
    if entry.reasoning is not None:
        parts.append("reasoning")
    return parts


def entry_id(entry: SpoolEntry) -> str:
    return entry.id if isinstance(entry, SpooledTurn) else entry.response_id


class Spool:
    """A directory of entries waiting for the database, at most `max_bytes` of them."""

    def __init__(self, directory: Path, max_bytes: int, database: str = "") -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        # The database its entries are for, written beside them for whoever looks.
        self.database = database
        # The entries on disk as last seen (this process's, and those a scan found), by
        # file name: their response id and size.
        self._files: dict[str, tuple[str, int]] = {}
        # How many of those belong to each response.
        self._ids: collections.Counter[str] = collections.Counter()
        self._bytes = 0
        # Files of a spool format this bridge does not know (a newer bridge's): left alone.
        self._foreign: set[str] = set()
        self._sequence = itertools.count()
        # One change to the directory at a time in this process.
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._files)

    @property
    def size(self) -> int:
        """Bytes of the entries known here."""
        return self._bytes

    def holds(self, response_id: str) -> bool:
        """Whether something of this response waits here."""
        return self._ids[response_id] > 0

    def _known(self, files: dict[str, tuple[str, int]]) -> None:
        self._files = files
        self._ids = collections.Counter(rid for rid, _ in files.values())
        self._bytes = sum(size for _, size in files.values())

    async def open(self) -> None:
        """Create the directory (private), say which database it is for, and learn what
        earlier runs left in it."""
        await asyncio.to_thread(self.directory.mkdir, mode=0o700, parents=True, exist_ok=True)
        if self.database:
            await asyncio.to_thread(_label, self.directory, self.database)
        await self.scan()

    async def keep(self, entry: SpoolEntry) -> bool:
        """Write `entry` durably; False when it does not fit or cannot be written (logged)."""
        data = _ENCODER.encode(SpoolFile(FORMAT, entry))
        async with self._lock:
            if self.size + len(data) > self.max_bytes:
                log.error(
                    "the spool %s is full (%d entries, %d bytes; [store] spool_max_mb): "
                    "response %s is not kept",
                    self.directory,
                    len(self._files),
                    self.size,
                    entry_id(entry),
                )
                return False
            name = f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence):06d}{SUFFIX}"
            try:
                await asyncio.to_thread(_write_durably, self.directory, name, data)
            except OSError as exc:
                log.error("response %s could not be spooled: %s", entry_id(entry), exc)
                return False
            self._files[name] = (entry_id(entry), len(data))
            self._ids[entry_id(entry)] += 1
            self._bytes += len(data)
        return True

    async def scan(self) -> None:
        """Learn the entries on disk (another bridge sharing the directory may have added
        or written some); only new files are read."""
        async with self._lock:
            names = await asyncio.to_thread(_entry_names, self.directory)
            files = {name: self._files[name] for name in names if name in self._files}
            for name in names:
                if name in files or name in self._foreign:
                    continue
                found = await asyncio.to_thread(_read, self.directory / name)
                if isinstance(found, tuple):
                    files[name] = (entry_id(found[0]), found[1])
                elif found == "foreign":
                    log.warning("spool entry %s is of a newer bridge's format; left", name)
                    self._foreign.add(name)
                elif found == "damaged":
                    log.error("spool entry %s cannot be read; moved to %s/", name, REJECTED)
                    await asyncio.to_thread(_move_aside, self.directory, name)
            self._known(files)

    @contextlib.asynccontextmanager
    async def claim(self) -> AsyncIterator[bool]:
        """The right to write entries to the database (False: another bridge has it now)."""
        handle = await asyncio.to_thread(_try_lock, self.directory / LOCK_NAME)
        try:
            yield handle is not None
        finally:
            if handle is not None:
                await asyncio.to_thread(os.close, handle)

    async def entries(self) -> AsyncIterator[tuple[str, SpoolEntry]]:
        """The entries, oldest first, each read from its file when its turn comes."""
        await self.scan()
        for name in sorted(self._files):
            found = await asyncio.to_thread(_read, self.directory / name)
            if isinstance(found, tuple):
                yield name, found[0]

    async def remove(self, name: str) -> None:
        """An entry is in the database now."""
        async with self._lock:
            await asyncio.to_thread(_unlink, self.directory / name)
            self._forget(name)

    async def set_aside(self, name: str) -> None:
        """An entry the database refuses: moved to rejected/ for a person to look at."""
        async with self._lock:
            await asyncio.to_thread(_move_aside, self.directory, name)
            self._forget(name)

    def _forget(self, name: str) -> None:
        known = self._files.pop(name, None)
        if known is not None:
            self._bytes -= known[1]
            self._ids[known[0]] -= 1
            if self._ids[known[0]] <= 0:
                del self._ids[known[0]]


def _label(directory: Path, database: str) -> None:
    """A DATABASE file naming the database the spool's entries are for (once)."""
    label = directory / DATABASE_NAME
    if not label.exists():
        label.write_text(database + "\n", encoding="utf-8")


def _write_durably(directory: Path, name: str, data: bytes) -> None:
    """The file complete and synced under a temporary name, then renamed, then the
    directory synced: after a crash it is either whole or absent."""
    temporary = directory / f".{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    os.close(fd)
    os.replace(temporary, directory / name)
    _sync_directory(directory)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _entry_names(directory: Path) -> list[str]:
    try:
        return [
            name
            for name in os.listdir(directory)
            if name.endswith(SUFFIX) and not name.startswith(".")
        ]
    except FileNotFoundError:
        return []


class _Read(msgspec.Struct):
    format: int


_FORMAT_ONLY = msgspec.msgpack.Decoder(_Read)


def _read(path: Path) -> tuple[SpoolEntry, int] | str | None:
    """The file's entry and size; "foreign" (another format), "damaged", or None (gone:
    written to the database meanwhile by another bridge)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        if _FORMAT_ONLY.decode(data).format != FORMAT:
            return "foreign"
        kept = _DECODER.decode(data)
    except msgspec.DecodeError:
        return "damaged"
    return kept.entry, len(data)


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _sync_directory(path.parent)


def _move_aside(directory: Path, name: str) -> None:
    rejected = directory / REJECTED
    rejected.mkdir(mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(directory / name, rejected / name)
    _sync_directory(directory)
