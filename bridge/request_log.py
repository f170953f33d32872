"""What the access log says about one request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RequestLog:
    """What the access log line says about one request; handlers fill it in."""

    request_id: str
    model: str = "-"
    provider: str = "-"
    response_id: str = "-"
    # completed, incomplete or failed, once the response has ended.
    outcome: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    # A WebSocket: the line is written when it closes (its turns have lines of their own).
    upgraded: bool = False
