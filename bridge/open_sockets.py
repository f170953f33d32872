"""The WebSockets open now: bounded in number, each client key to its fair share, closed
together on shutdown."""

from __future__ import annotations

import asyncio
import logging
import weakref

from aiohttp import WSCloseCode, web

from bridge.fair_share import fair_share
from bridge.socket_state import SocketConversations

log = logging.getLogger(__name__)


class OpenSockets:
    """The sockets open now, by client: bounded in number (each client key to its fair
    share), closed together on shutdown."""

    def __init__(self, limit: int, clients: int = 1) -> None:
        self.limit = limit
        self.share = fair_share(limit, clients)
        self._sockets: dict[web.WebSocketResponse, str] = {}
        # What each open socket keeps of its conversations (for GET /metrics).
        self.conversations: weakref.WeakSet[SocketConversations] = weakref.WeakSet()

    def __len__(self) -> int:
        return len(self._sockets)

    @property
    def full(self) -> bool:
        return len(self._sockets) >= self.limit

    def held_by(self, client: str) -> int:
        return sum(owner == client for owner in self._sockets.values())

    def add(self, ws: web.WebSocketResponse, client: str) -> None:
        self._sockets[ws] = client

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._sockets.pop(ws, None)

    async def close_all(self) -> None:
        """Close every socket with 1001 (going away); their turns have been drained."""
        sockets = list(self._sockets)
        if sockets:
            log.info("closing %d WebSocket connections", len(sockets))
        await asyncio.gather(
            *(
                ws.close(code=WSCloseCode.GOING_AWAY, message=b"responses-bridge is stopping")
                for ws in sockets
            ),
            return_exceptions=True,
        )


SOCKETS = web.AppKey("sockets", OpenSockets)
