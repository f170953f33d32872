"""Tool names as upstreams accept them, and the way back to the client's tools.

Chat Completions function names must match ^[a-zA-Z0-9_-]{1,64}$ (OpenAI's rule, which
most providers copy). Namespaced tools are flattened to `namespace__name`; a name that
does not fit is cleaned and given a hash suffix. The mapping is a pure function of the
client's names, so a replayed history maps to the same upstream names as the live turn.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

MAX_NAME = 64
_ALLOWED = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DISALLOWED_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
NAMESPACE_SEPARATOR = "__"


def upstream_tool_name(name: str, namespace: str | None = None) -> str:
    """The upstream function name for a client tool, stable across processes."""
    full = f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name
    if _ALLOWED.match(full):
        return full
    digest = hashlib.sha256(full.encode("utf-8")).hexdigest()[:8]
    cleaned = _DISALLOWED_CHARS.sub("_", full)[: MAX_NAME - len(digest) - 1]
    return f"{cleaned}_{digest}"


@dataclass(frozen=True, slots=True)
class ToolRef:
    """What an upstream function name stands for on the client side."""

    name: str
    namespace: str | None = None
    kind: Literal["function", "custom"] = "function"


class ToolMap:
    """Upstream function name -> the client's tool, built from one request's tools."""

    __slots__ = ("_by_upstream",)

    def __init__(self) -> None:
        self._by_upstream: dict[str, ToolRef] = {}

    def add(self, ref: ToolRef) -> str:
        upstream = upstream_tool_name(ref.name, ref.namespace)
        self._by_upstream[upstream] = ref
        return upstream

    def get(self, upstream: str) -> ToolRef | None:
        """The client tool that has the upstream name, if any."""
        return self._by_upstream.get(upstream)

    def resolve(self, upstream: str) -> ToolRef:
        """The client tool behind an upstream name; unknown names pass through as functions."""
        return self._by_upstream.get(upstream) or ToolRef(name=upstream)

    def __len__(self) -> int:
        return len(self._by_upstream)

    def clear(self) -> None:
        """Forget every tool: a finished turn's map (its translator holds it in a reference
        cycle, freed only by a garbage collection) may hold hundreds of thousands."""
        self._by_upstream.clear()
