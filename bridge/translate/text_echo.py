"""The `text` settings as a response echoes them (pure): only what the specification allows.

The Open Responses schema (TextField) takes `verbosity` as one of its values or absent, never
null, and each format with its own fields: `text` and `json_object` nothing more,
`json_schema` its name, description (may be null), schema and strict (a boolean).
"""

from __future__ import annotations

from typing import Any


def echo_text(text: dict[str, Any] | None) -> dict[str, Any]:
    """The response's `text` for the request's (or a stored response's) `text` object."""
    text = text or {}
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    echoed: dict[str, Any]
    if isinstance(fmt, dict) and kind == "json_schema":
        echoed = {
            "type": "json_schema",
            "name": fmt.get("name"),
            "description": fmt.get("description"),
            "schema": fmt.get("schema"),
            # Not given: the upstream was not asked to be strict.
            "strict": bool(fmt.get("strict")),
        }
    elif kind == "json_object":
        echoed = {"type": "json_object"}
    else:
        echoed = {"type": "text"}
    out: dict[str, Any] = {"format": echoed}
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    return out
