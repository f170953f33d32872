"""A request the bridge cannot translate: the error, and the field it names (pure)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from bridge.wire import validation_error_parts

T = TypeVar("T")


class RequestError(Exception):
    """A request the bridge cannot translate; becomes a 400 naming `param`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def invalid_field(exc: msgspec.ValidationError, param: str) -> RequestError:
    """A validation error of the value at `param`, naming the exact field."""
    message, where = validation_error_parts(exc)
    path = f"{param}.{where}" if where and not where.startswith("[") else param + where
    return RequestError(f"Invalid {path}: {message}", path)


def convert_field(value: Any, kind: type[T], param: str) -> T:
    """`value` (the request's field `param`) as `kind`; RequestError naming it otherwise."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise invalid_field(exc, param) from None
