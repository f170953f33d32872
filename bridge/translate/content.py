"""Message content: Responses content parts -> Chat Completions content (pure)."""

from __future__ import annotations

from typing import Any

from bridge.translate.errors import RequestError
from bridge.wire.responses import ContentPart

TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
# What a text-only model is given in place of an image.
IMAGE_OMITTED = "[An image was attached here; it was left out because this model takes text only.]"


def text_of(parts: list[ContentPart], separator: str) -> str:
    return separator.join(part.text or part.refusal or "" for part in parts)


def message_content(
    parts: str | list[ContentPart], param: str, images: bool = True
) -> str | list[dict[str, Any]]:
    """Message content: a string when it is all text, else Chat content parts. Without
    `images` an image part becomes a short note saying it was left out."""
    if isinstance(parts, str):
        return parts
    if not images:
        parts = [
            ContentPart(type="input_text", text=IMAGE_OMITTED)
            if part.type == "input_image"
            else part
            for part in parts
        ]
    if all(part.type in TEXT_PART_TYPES or part.type == "refusal" for part in parts):
        return text_of(parts, "\n\n")
    converted: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        if part.type in TEXT_PART_TYPES or part.type == "refusal":
            converted.append({"type": "text", "text": part.text or part.refusal or ""})
        elif part.type == "input_image":
            converted.append(image_part(part, f"{param}[{index}]"))
        else:
            raise RequestError(
                f"Content part type {part.type!r} is not supported by a Chat Completions upstream",
                f"{param}[{index}].type",
            )
    return converted


def image_part(part: ContentPart, param: str) -> dict[str, Any]:
    if not part.image_url:
        raise RequestError(
            "input_image needs image_url (a URL or a data: URL); file_id needs OpenAI file "
            "storage, which the upstream does not have",
            f"{param}.image_url",
        )
    image: dict[str, Any] = {"url": part.image_url}
    if part.detail and part.detail != "auto":
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}
