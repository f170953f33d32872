"""The last turns kept whole, to see what happened: `[debug] keep_turns` (pure; shown by
bridge.debug_turns).

For each turn: the client's request, each upstream request (a retry or a truncation sends
another), the raw upstream stream as it arrived, and the events sent to the client. This is
what to attach to a bug report, and what to read when a provider changes its stream.
Everything stays in memory, in a ring of `keep_turns` turns, each part cut at
`max_part_bytes`; secrets are redacted when a turn is shown (the providers' API keys, the
client keys, anything that looks like a key, credentials in URLs).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from typing import Any

from bridge.errors import redact
from bridge.sse import encode_frames
from bridge.wire.events import ResponseEvent

CUT = b"\n[... cut: [debug] max_part_bytes reached]"


class Part:
    """Bytes appended up to a limit; what did not fit is counted."""

    __slots__ = ("_chunks", "_kept", "_limit", "dropped")

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._kept = 0
        self._limit = limit
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self._limit - self._kept
        if room <= 0:
            self.dropped += len(data)
            return
        if len(data) > room:
            self.dropped += len(data) - room
            data = data[:room]
        self._chunks.append(data)
        self._kept += len(data)

    def text(self) -> str:
        data = b"".join(self._chunks) + (CUT if self.dropped else b"")
        return data.decode("utf-8", "replace")


class TurnTrace:
    """One turn as it crossed the bridge."""

    def __init__(
        self,
        *,
        response_id: str,
        client: str,
        model: str,
        provider: str,
        transport: str,
        request: bytes,
        limit: int,
    ) -> None:
        self.response_id = response_id
        self.client = client
        self.model = model
        self.provider = provider
        self.transport = transport
        self.started_at = time.time()
        self.client_request = Part(limit)
        self.client_request.add(request)
        self.upstream_requests: list[tuple[str, Part]] = []
        self.upstream_stream = Part(limit)
        self.events = Part(limit)
        self._limit = limit
        self.status = "in_progress"

    def upstream_request(self, url: str, body: bytes) -> None:
        """An attempt begins: the request sent, and a mark in the stream log."""
        part = Part(self._limit)
        part.add(body)
        self.upstream_requests.append((url, part))
        if len(self.upstream_requests) > 1:
            self.upstream_stream.add(
                f"\n[--- attempt {len(self.upstream_requests)} ---]\n".encode()
            )

    def upstream_data(self, data: bytes) -> None:
        self.upstream_stream.add(data)

    def sent(self, events: Iterable[ResponseEvent]) -> None:
        self.events.add(encode_frames(events))

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "started_at": round(self.started_at, 3),
            "model": self.model,
            "provider": self.provider,
            "transport": self.transport,
            "status": self.status,
            "attempts": len(self.upstream_requests),
        }

    def whole(self, secrets: list[str]) -> dict[str, Any]:
        def clean(part: Part) -> str:
            return redact(part.text(), secrets)

        return {
            **self.summary(),
            "client_request": clean(self.client_request),
            "upstream_requests": [
                {"url": redact(url, secrets), "body": clean(body)}
                for url, body in self.upstream_requests
            ],
            "upstream_stream": clean(self.upstream_stream),
            "events": clean(self.events),
        }


class TurnRing:
    """The last `size` turns (none when 0), shared fairly between clients: when it is
    full, the client keeping the most turns loses its oldest, so a client that sends many
    cannot push out the few of another."""

    def __init__(self, size: int, part_bytes: int) -> None:
        self._turns: collections.deque[TurnTrace] = collections.deque()
        self._size = size
        self.enabled = size > 0
        self._part_bytes = part_bytes
        self._kept: collections.Counter[str] = collections.Counter()

    def begin(self, **fields: Any) -> TurnTrace | None:
        if not self.enabled:
            return None
        trace = TurnTrace(limit=self._part_bytes, **fields)
        self._turns.append(trace)
        self._kept[trace.client] += 1
        if len(self._turns) > self._size:
            self._evict()
        return trace

    def _evict(self) -> None:
        """The oldest turn of the client that keeps the most."""
        most = max(self._kept.values())
        for trace in self._turns:
            if self._kept[trace.client] == most:
                self._turns.remove(trace)
                self._kept[trace.client] -= 1
                if not self._kept[trace.client]:
                    del self._kept[trace.client]
                return

    def visible(self, client: str | None) -> list[TurnTrace]:
        """Newest first; only `client`'s when given."""
        return [t for t in reversed(self._turns) if client is None or t.client == client]
