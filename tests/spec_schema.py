"""The Open Responses specification's own JSON schema (tests/spec/), as a validator.

Stricter than the `openresponses-types` pydantic models, which take null for any optional
field: here a field the specification types as "a string, or absent" fails when it is null,
as it does in the official suite's zod schemas.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_FILE = Path(__file__).parent / "spec" / "openresponses-schemas.json"
_BASE = "urn:openresponses:openapi"


@cache
def document() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SPEC_FILE.read_text())
    return data


@cache
def _registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(_BASE, resource)


@cache
def _validator(component: str) -> Draft202012Validator:
    if component not in document()["components"]["schemas"]:
        raise KeyError(f"the specification has no schema {component!r}")
    ref = {"$ref": f"{_BASE}#/components/schemas/{component}"}
    return Draft202012Validator(ref, registry=_registry())


@cache
def event_schemas() -> dict[str, str]:
    """Each streaming event type of the specification -> its schema's name."""
    found = {}
    for name, schema in document()["components"]["schemas"].items():
        if name.endswith("StreamingEvent"):
            (kind,) = schema["properties"]["type"]["enum"]
            found[kind] = name
    return found


def _describe(error: ValidationError) -> list[str]:
    """The error as path and message; a union (an item, a content part, a nullable field)
    is explained by the variant that fits best: the one of the value's own `type` (no
    error at `type`), with the fewest errors."""
    if error.validator in ("oneOf", "anyOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        fitting = [
            found
            for found in branches.values()
            if not any(list(sub.relative_path) == ["type"] for sub in found)
        ]
        if fitting:
            best = min(fitting, key=len)
            return [line for sub in best for line in _describe(sub)]
        error = best_match([error])
    path = ".".join(str(part) for part in error.absolute_path) or "(root)"
    return [f"{path}: {error.message}"]


def errors(component: str, value: Any) -> list[str]:
    """What in `value` the specification's schema `component` rejects (empty: valid)."""
    return [line for error in _validator(component).iter_errors(value) for line in _describe(error)]


def event_errors(event: dict[str, Any]) -> list[str]:
    """A streamed event checked against the schema of its type."""
    component = event_schemas().get(str(event.get("type")))
    if component is None:
        return [f"type: {event.get('type')!r} is not an event of the specification"]
    return errors(component, event)
