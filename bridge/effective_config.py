"""The effective configuration as TOML, for `check-config`, with secrets masked."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from bridge.config import Config

# extra_body values under keys like these are shown masked: they may hold credentials.
_SECRET_KEY = re.compile(r"key|token|secret|password|auth", re.IGNORECASE)
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
MASK = "********"


def _key(name: str) -> str:
    return name if _BARE.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        inner = ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: MASK if _SECRET_KEY.search(k) and not isinstance(v, dict) else _masked(v)
            for k, v in value.items()
        }
    return value


def _table(lines: list[str], header: str, table: dict[str, Any]) -> None:
    scalars = {k: v for k, v in table.items() if not (isinstance(v, dict) and k == "quirks")}
    lines.append(f"\n[{header}]")
    for name, value in scalars.items():
        if value is None:
            continue
        if name == "extra_body":
            value = _masked(value)
        lines.append(f"{_key(name)} = {_value(value)}")
    if isinstance(table.get("quirks"), dict):
        lines.append(f"\n[{header}.quirks]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in table["quirks"].items())


def effective_toml(config: Config) -> str:
    """Every setting in force, defaults included; API keys never appear (only the names of
    the variables that hold them)."""
    data = msgspec.to_builtins(config)
    lines = ["# the effective settings, defaults included"]
    for section in ("server", "store", "upstream", "websocket"):
        _table(lines, section, data[section])
    for name, provider in data["providers"].items():
        _table(lines, f"providers.{_key(name)}", provider)
    for name, model in data["models"].items():
        _table(lines, f"models.{json.dumps(name)}", model)
    return "\n".join(lines) + "\n"
