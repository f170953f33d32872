"""Wire shapes: the JSON that crosses the client and upstream connections."""

from __future__ import annotations

import msgspec


def validation_error_parts(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's "Expected `str`, got `int` - at `$.input[0].role`" as (message, path).

    The path comes back without the `$.` root (`input[0].role`), or "" for the top level.
    """
    message, _, where = str(exc).partition(" - at `$")
    return message, where.rstrip("`").lstrip(".")
