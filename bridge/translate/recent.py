"""A small map of what was computed lately, by the exact bytes it was computed from: the
least recently used goes first, large keys are not kept, and threads may share it (long
conversations are translated in a thread)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

V = TypeVar("V")


class Recent(Generic[V]):
    """At most `size` values, each of a key no longer than `max_key_bytes`."""

    def __init__(self, size: int, max_key_bytes: int) -> None:
        self._values: OrderedDict[bytes, V] = OrderedDict()
        self._size = size
        self._max_key_bytes = max_key_bytes
        self._lock = threading.Lock()

    def get(self, key: bytes) -> V | None:
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key: bytes, value: V) -> None:
        if len(key) > self._max_key_bytes:
            return
        with self._lock:
            self._values[key] = value
            if len(self._values) > self._size:
                self._values.popitem(last=False)
