"""The effective configuration as TOML, for `check-config`, with secrets masked.

Written with tomlkit, so any model or provider name is quoted as TOML wants, and what is
printed reads back (parse_config) to the same configuration.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import tomlkit
from tomlkit.items import InlineTable, Table

from bridge.config import Config

# extra_body values under keys like these are shown masked: they may hold credentials.
_SECRET_KEY = re.compile(r"key|token|secret|password|auth", re.IGNORECASE)
MASK = "********"
SECTIONS = ("server", "store", "upstream", "websocket", "debug")


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: MASK if _SECRET_KEY.search(k) and not isinstance(v, dict) else _masked(v)
            for k, v in value.items()
        }
    return value


def _inline(value: Any) -> Any:
    """Values as TOML items: dictionaries as inline tables (extra_body stays one line)."""
    if isinstance(value, dict):
        table: InlineTable = tomlkit.inline_table()
        for key, inner in value.items():
            table[key] = _inline(inner)
        return table
    if isinstance(value, list):
        return [_inline(v) for v in value]
    return value


def _table(values: dict[str, Any]) -> Table:
    """One [table]: None (an unset optional key) is left out; quirks is a sub-table."""
    table = tomlkit.table()
    for name, value in values.items():
        if value is None:
            continue
        if name == "quirks":
            quirks = tomlkit.table()
            for quirk, on in value.items():
                quirks[quirk] = on
            table["quirks"] = quirks
            continue
        table[name] = _inline(_masked(value) if name == "extra_body" else value)
    return table


def effective_toml(config: Config) -> str:
    """Every setting in force, defaults included; API keys never appear (only the names of
    the variables that hold them)."""
    data = msgspec.to_builtins(config)
    document = tomlkit.document()
    document.add(tomlkit.comment("the effective settings, defaults included"))
    for section in SECTIONS:
        document[section] = _table(data[section])
    for group in ("providers", "models"):
        tables = tomlkit.table(is_super_table=True)
        for name, values in data[group].items():
            tables[name] = _table(values)
        document[group] = tables
    return tomlkit.dumps(document)
