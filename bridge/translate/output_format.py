"""Structured output where the provider cannot enforce a schema (pure).

`text.format: json_schema` reaches a provider with only a JSON mode (DeepSeek, GLM, Qwen)
or none at all (MiniMax) as an instruction the model reads: the schema's name, its
description and the JSON Schema itself, after the request's instructions. DeepSeek's JSON
mode also needs the word "json" in the prompt (api-docs.deepseek.com/guides/json_mode).
The instruction depends only on the format, so it is the same on every turn of a
conversation and never moves the messages after it: the provider's prompt cache keeps
working. The answer is checked against the schema when it is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgspec

# How a profile's provider takes text.format: as Chat Completions' json_schema
# response_format, as json_object plus the instruction, or as the instruction alone.
StructuredOutput = Literal["json_schema", "json_object", "prompt"]

_ENCODER = msgspec.json.Encoder()
# How much of a non-matching answer an error message quotes.
QUOTED = 200


@dataclass(frozen=True, slots=True)
class OutputCheck:
    """What a finished answer must be: one JSON value, matching `schema` when there is one."""

    schema: dict[str, Any] | None = None
    name: str | None = None

    def problem(self, text: str) -> str | None:
        """Why `text` is not such an answer, or None."""
        try:
            value = msgspec.json.decode(text.strip() or b"")
        except msgspec.DecodeError as exc:
            return f"the model's answer is not JSON ({exc}): {_quote(text)}"
        if self.schema is None:
            return None
        # Loaded by the first answer that needs it: 2.5 MB a bridge that never sees a
        # json_schema format does not carry.
        import jsonschema

        try:
            validator = jsonschema.validators.validator_for(self.schema)(self.schema)
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        except jsonschema.exceptions.SchemaError as exc:
            return f"the json_schema {self.name!r} is not a valid JSON Schema: {exc.message}"
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path) or "the top level"
        return (
            f"the model's answer does not match the json_schema {self.name!r} at {where}: "
            f"{error.message}"
        )


def _quote(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= QUOTED else text[:QUOTED] + "…")


def schema_instruction(name: str, description: str | None, schema: dict[str, Any]) -> str:
    """What the model is told when the provider cannot be held to a JSON Schema."""
    lines = [
        "Answer with JSON only: a single JSON value that matches the JSON Schema below, with "
        "no text before or after it and no code fences.",
        f"Schema name: {name}",
    ]
    if description:
        lines.append(f"What it holds: {description}")
    lines.append("JSON Schema: " + _ENCODER.encode(schema).decode())
    return "\n".join(lines)


JSON_OBJECT_INSTRUCTION = (
    "Answer with JSON only: a single JSON object, with no text before or after it and no code "
    "fences."
)
