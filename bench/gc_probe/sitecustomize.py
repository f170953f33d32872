"""Loaded by bench/gc_cost.py into the bridge it starts (this directory on PYTHONPATH): notes
every garbage collection (when it began, its generation, how long it took) and writes them
as JSON to $GC_PROBE_OUT when the process exits."""

from __future__ import annotations

import atexit
import gc
import json
import os
import time

_out = os.environ.get("GC_PROBE_OUT")
if _out:
    _collections: list[tuple[float, int, float]] = []
    _began = [0.0]

    def _note(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _began[0] = time.perf_counter()
        else:
            took = time.perf_counter() - _began[0]
            _collections.append((time.time(), info["generation"], took))

    def _write() -> None:
        with open(_out, "w") as file:
            json.dump(_collections, file)

    gc.callbacks.append(_note)
    atexit.register(_write)
