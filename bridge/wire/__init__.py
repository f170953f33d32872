"""Wire shapes: the JSON that crosses the client and upstream connections."""

from __future__ import annotations

import re

import msgspec


def validation_error_parts(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's "Expected `str`, got `int` - at `$.input[0].role`" as (message, path).

    The path comes back without the `$.` root (`input[0].role`), or "" for the top level.
    """
    message, _, where = str(exc).partition(" - at `$")
    path = where.rstrip("`").lstrip(".")
    missing = _MISSING.match(message)
    if missing is not None:
        # "Object missing required field `model`": the field is the parameter.
        path = ".".join(part for part in (path, missing["field"]) if part)
    return message, path


_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
