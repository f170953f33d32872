"""sqlite3's errors read for what they mean to the store, and turned into its own."""

from __future__ import annotations

import sqlite3

from bridge.store.errors import StoreError, StoreRejected, StoreUnavailable

# SQLite's words for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
_CORRUPTION_MARKERS = ("malformed", "not a database", "corrupt")
# What a statement may raise besides sqlite3.Error: a value SQLite cannot bind (an integer
# past 64 bits raises OverflowError, text with lone surrogates UnicodeEncodeError).
BIND_ERRORS = (OverflowError, ValueError)


def is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(
        marker in str(exc).lower() for marker in _CORRUPTION_MARKERS
    )


def is_busy(exc: BaseException) -> bool:
    """Another connection holds the lock (past the busy timeout)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


def store_error(label: str, exc: Exception) -> StoreError:
    """An error of a statement as the store's own: a refused row (a constraint, a value
    the database cannot hold, or anything but SQLite's: trying again fails the same way),
    or the database unusable now."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
        return StoreRejected(f"{label}: {exc}")
    if isinstance(exc, sqlite3.Error | ValueError):
        return StoreUnavailable(f"{label}: {exc}")
    return StoreRejected(f"{label}: the turn could not be written: {type(exc).__name__}: {exc}")
