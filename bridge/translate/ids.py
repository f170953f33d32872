"""Ids for requests, responses and their items.

The random bits come from the operating system in blocks, not a call per id: the call lets
go of the interpreter's lock, and a busy bridge (its database thread runnable) then waits to
get it back, 10 us or more an id where the bits themselves cost well under one.
"""

from __future__ import annotations

import os
import threading

_BLOCK = 4096
_lock = threading.Lock()
_block = b""
_used = _BLOCK


def _forget() -> None:
    """A forked child must not hand out its parent's bits again."""
    global _block, _used
    _block, _used = b"", _BLOCK


os.register_at_fork(after_in_child=_forget)


def random_hex(size: int) -> str:
    """`size` random bytes from the operating system's generator, as hex."""
    global _block, _used
    if size > _BLOCK:
        return os.urandom(size).hex()
    with _lock:
        if _used + size > len(_block):
            _block, _used = os.urandom(_BLOCK), 0
        start = _used
        _used += size
        return _block[start : start + size].hex()


def new_id(prefix: str) -> str:
    """A fresh id such as `resp_…`, `msg_…`, `fc_…`: the prefix and 128 random bits."""
    return f"{prefix}_{random_hex(16)}"
