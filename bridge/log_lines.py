"""Log lines that stay one line: what a request does many times is logged once, counted."""

from __future__ import annotations

from collections.abc import Sequence

# Values named in one line; the rest are counted.
SHOWN = 5


def some(values: Sequence[str], shown: int = SHOWN) -> str:
    """`a, b, c, d, e and 99995 more`: a list of any length for one log line."""
    named = ", ".join(values[:shown])
    rest = len(values) - shown
    return f"{named} and {rest} more" if rest > 0 else named
