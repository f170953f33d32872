"""What the access log says about one request."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RequestLog:
    """What the access log line says about one request; handlers fill it in."""

    # The bridge's own id for the request (echoed as x-request-id).
    request_id: str
    # The id the client gave it, if any (Codex: its session id, shared by its requests).
    client_request_id: str | None = None
    model: str = "-"
    provider: str = "-"
    response_id: str = "-"
    # completed, incomplete or failed, once the response has ended.
    outcome: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    # A WebSocket: the line is written when it closes (its turns have lines of their own).
    upgraded: bool = False
    # How it ended, as the line says it (499: the client left before the end).
    status: int = 500
