"""Request bodies: read within a time limit and a size limit, and within a budget for the
whole process.

A body is read, decoded and translated into objects several times its size, and a request
keeps them until it is answered: twelve 63 MB bodies at once took 1.2 GB. So the bodies of
the requests being answered share `[server] max_request_bytes_in_flight`; a request whose
body does not fit is answered 503 at once (Retry-After), before more of it is read.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from aiohttp import web

from bridge.errors import ApiError

# How soon a refused client may try again (seconds).
RETRY_AFTER = 1.0


class BodyBudget:
    """Bytes of request bodies held by the requests being answered, process-wide."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def share(self) -> Iterator[Share]:
        """A request's share, given back when the block ends."""
        share = Share(self)
        try:
            yield share
        finally:
            self.used -= share.held
            share.held = 0


class Share:
    """What one request holds of the budget."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.held = 0

    def hold(self, size: int) -> None:
        """Hold `size` bytes in all (more than held so far); ApiError 503 when the budget
        has no room for them."""
        more = size - self.held
        if more <= 0:
            return
        budget = self._budget
        if budget.used + more > budget.limit:
            raise ApiError(
                503,
                f"The bridge is busy: the requests it is answering hold {budget.used} bytes of "
                f"request bodies, and this one does not fit in its limit of {budget.limit} "
                "([server] max_request_bytes_in_flight); try again in a moment",
                type="server_error",
                code="server_is_overloaded",
                retry_after=RETRY_AFTER,
            )
        budget.used += more
        self.held = size


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than the limit of {limit} bytes",
        code="request_too_large",
    )


async def read_body(request: web.Request, share: Share, *, seconds: float, limit: int) -> bytes:
    """The request body (decoded as its Content-Encoding says), within `seconds` and
    `limit` bytes, held in `share` as it arrives: 408, 413 or 503 otherwise."""
    if request.content.at_eof():
        # Read already (aiohttp keeps what request.read() took), or empty.
        data = await request.read()
        share.hold(len(data))
        return data
    declared = request.content_length
    if declared is not None:
        if declared > limit:
            raise too_large(limit)
        share.hold(declared)
        # The whole body is read and held anyway: buffering up to its length spares the
        # connection a pause and a resume every 128 KiB (aiohttp's request.read() does so).
        request.content.set_read_chunk_size(declared)
    chunks: list[bytes] = []
    size = 0
    try:
        if request.content.is_eof():
            # Here whole already (the usual small request, which came with its headers):
            # no wait to bound.
            data = await request.content.read()
            if len(data) > limit:
                raise too_large(limit)
            share.hold(len(data))
            return data
        async with asyncio.timeout(seconds):
            while True:
                # One buffered chunk at a time: readany() joins all that is buffered (a
                # copy of most of a large body) before the join below copies it again.
                chunk, chunk_end = await request.content.readchunk()
                if not chunk:
                    if chunk_end:  # the end of an HTTP chunk, not of the body
                        continue
                    break
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                share.hold(size)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408,
            f"The request body did not arrive within {seconds:g} seconds",
            code="request_timeout",
        ) from None
    except (
        web.RequestPayloadError,
        aiohttp.http_exceptions.ContentEncodingError,
        zlib.error,
    ) as exc:
        raise ApiError.invalid(
            f"The body could not be decoded as its Content-Encoding says: {exc}",
            code="invalid_encoding",
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
