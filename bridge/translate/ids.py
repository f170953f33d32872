"""Ids for responses and their items."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """A fresh id such as `resp_…`, `msg_…`, `fc_…`: the prefix and 128 random bits."""
    return f"{prefix}_{secrets.token_hex(16)}"
