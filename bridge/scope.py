"""Whose conversation a request belongs to: the scope stored reasoning is restored within.

A scope has two parts (docs/api.md, "What is stored, and for how long"):
- the client: a digest of the client key the request presented (with `[server]
  api_keys_env`, or for a provider that forwards the client's key), else "" (one local user);
- the conversation: the client's `thread-id` (else `session-id`) header, else the
  previous_response_id chain the request continues, else none, and then only the context
  key of a turn (a digest of everything before it) can find its reasoning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from multidict import CIMultiDictProxy

# Codex sends both; a sub-agent's thread has its own thread-id within the session.
CONVERSATION_HEADERS = ("thread-id", "thread_id", "session-id", "session_id")
SESSION_HEADERS = ("session-id", "session_id")
THREAD_HEADERS = ("thread-id", "thread_id")
# Longest header value kept; longer ones are cut (they stay distinct by their digest).
MAX_HEADER = 200
ANONYMOUS = ""
# Reasoning rows from before scopes existed: matched only by an exact conversation scope.
LEGACY_CLIENT = "legacy"


def client_identity(token: str | None) -> str:
    """The stored name of a client key: a digest, never the key."""
    if not token:
        return ANONYMOUS
    return (
        "k:" + hashlib.sha256(b"rb-client\x00" + token.encode("utf-8", "replace")).hexdigest()[:24]
    )


def clean_header(value: str) -> str:
    """A header value as text the database accepts: valid UTF-8, bounded.

    aiohttp hands undecodable bytes over as surrogates; they become \\udcXX escapes, so the
    value stays distinct and never fails to encode.
    """
    text = value.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_HEADER:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        text = f"{text[: MAX_HEADER - 17]}~{digest}"
    return text


def header(headers: CIMultiDictProxy[str], names: tuple[str, ...]) -> str | None:
    """The first non-empty header among `names`, cleaned."""
    for name in names:
        value = headers.get(name)
        if value:
            return clean_header(value)
    return None


def session_scope(headers: CIMultiDictProxy[str]) -> str | None:
    """The conversation scope a client's headers name, if any."""
    value = header(headers, CONVERSATION_HEADERS)
    return f"s:{value}" if value is not None else None


def chain_scope(root_response_id: str) -> str:
    return f"r:{root_response_id}"


@dataclass(frozen=True, slots=True)
class Scope:
    """The client and the conversation a turn belongs to."""

    client: str = ANONYMOUS
    conversation: str | None = None
