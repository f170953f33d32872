"""Shared limits split fairly between client keys: one key cannot take them all."""

from __future__ import annotations

import math


def fair_share(limit: int, clients: int) -> int:
    """What one of `clients` client keys may hold of `limit` at once (at least 1): every
    key gets its share whatever the others do. Without client keys there is one client."""
    return max(1, math.ceil(limit / max(1, clients)))


def distinct_keys(keys: tuple[str, ...]) -> int:
    """How many clients the configured client keys make (a key listed twice is one)."""
    return len(frozenset(keys))
