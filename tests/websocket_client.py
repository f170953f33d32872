"""The WebSocket mode of /v1/responses spoken as a client: one turn's messages, its events."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from tests.conftest import MODEL

TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}
TIMEOUT = 10.0  # seconds for any one message


def user(text: str) -> dict[str, Any]:
    """A user message input item."""
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    """The next message, which must be a JSON text message, within TIMEOUT."""
    message = await ws.receive(timeout=TIMEOUT)
    assert message.type == WSMsgType.TEXT, (message.type, message.data, message.extra)
    event: dict[str, Any] = json.loads(message.data)
    return event


async def turn(ws: aiohttp.ClientWebSocketResponse, **body: Any) -> list[dict[str, Any]]:
    """Send one response.create; every event up to its last (or an error event)."""
    await ws.send_str(json.dumps({"type": "response.create", "model": MODEL, **body}))
    events = []
    while True:
        event = await receive_json(ws)
        events.append(event)
        if event["type"] in TERMINAL:
            break
    if events[-1]["type"] != "error":
        numbers = [event["sequence_number"] for event in events]
        assert numbers == list(range(len(numbers)))
    return events
