"""Content that is not what it claims: reasoning in <think> tags, tool calls as DSML markup.

Servers without a reasoning parser (llama.cpp without --reasoning-format, some vLLM and
Ollama setups) stream a model's thinking inside `content` as <think>...</think>. DeepSeek
V4 sometimes emits its tool calls as "DSML" special-token markup in `content` instead of
`tool_calls` (reported in public trackers since mid 2026), e.g.

    <｜DSML｜tool_calls>
    <｜DSML｜invoke name="exec_command">
    <｜DSML｜parameter name="cmd" string="true">ls</｜DSML｜parameter>
    </｜DSML｜invoke>
    </｜DSML｜tool_calls>

with ｜ (U+FF5C), ‖ (U+2016), doubled or ASCII bars, and chunks split anywhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal

Segment = tuple[Literal["text", "reasoning"], str]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a beginning of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkTags:
    """Splits <think>...</think> (or another tag: Gemini's <thought>) at the start of
    content off as reasoning."""

    __slots__ = ("_buffer", "_close", "_open", "_state")

    def __init__(self, tag: str = "think") -> None:
        self._open, self._close = f"<{tag}>", f"</{tag}>"
        self._buffer = ""
        # "start": nothing but whitespace yet; "thinking": inside the tags; "closed": just
        # after </think> (the newlines models put there are dropped); "text": plain content.
        self._state = "start"

    @property
    def passing(self) -> bool:
        """True once content is plain text for good."""
        return self._state == "text"

    def feed(self, text: str) -> list[Segment]:
        if self._state == "text":
            return [("text", text)]
        if self._state == "closed":
            return self._after_close(text)
        self._buffer += text
        out: list[Segment] = []
        if self._state == "start":
            stripped = self._buffer.lstrip()
            if not stripped or (self._open.startswith(stripped) and stripped != self._open):
                return out  # could still become the opening tag
            if not stripped.startswith(self._open):
                self._state = "text"
                out.append(("text", self._buffer))
                self._buffer = ""
                return out
            self._state = "thinking"
            self._buffer = stripped[len(self._open) :]
        end = self._buffer.find(self._close)
        if end >= 0:
            reasoning, rest = self._buffer[:end], self._buffer[end + len(self._close) :]
            self._buffer = ""
            self._state = "closed"
            if reasoning:
                out.append(("reasoning", reasoning))
            return out + self._after_close(rest)
        keep = _partial_suffix(self._buffer, self._close)
        ready = self._buffer[: len(self._buffer) - keep]
        self._buffer = self._buffer[len(self._buffer) - keep :]
        if ready:
            out.append(("reasoning", ready))
        return out

    def _after_close(self, text: str) -> list[Segment]:
        text = text.lstrip("\n")
        if not text:
            return []
        self._state = "text"
        return [("text", text)]

    def finish(self) -> list[Segment]:
        rest, self._buffer = self._buffer, ""
        if not rest:
            return []
        return [("reasoning" if self._state == "thinking" else "text", rest)]


_BARS = "|｜‖"
_MARKER = re.compile(rf"<\s*/?\s*[{_BARS}]+\s*DSML", re.IGNORECASE)
_MARKER_PREFIX = re.compile(rf"<\s*/?\s*(?:[{_BARS}]+\s*(?:D(?:S(?:M)?)?)?)?$", re.IGNORECASE)
_NORMALIZE = re.compile(rf"<\s*(/?)\s*[{_BARS}]+\s*DSML\s*[{_BARS}]+\s*", re.IGNORECASE)
_INVOKE = re.compile(
    r'<DSML:invoke\s+name\s*=\s*"([^"]+)"\s*>(.*?)(?=</DSML:invoke>|<DSML:invoke|$)', re.DOTALL
)
_PARAMETER = re.compile(
    r'<DSML:parameter\s+name\s*=\s*"([^"]+)"(?:\s+string\s*=\s*"(true|false)")?\s*>'
    r"(.*?)</DSML:parameter>",
    re.DOTALL,
)


@dataclass(slots=True)
class DsmlCall:
    name: str
    arguments: str


def parse_dsml(markup: str) -> list[DsmlCall]:
    """Tool calls in DSML markup; [] when none can be read."""
    normalized = _NORMALIZE.sub(lambda m: f"<{m.group(1)}DSML:", markup)
    calls = []
    for name, body in _INVOKE.findall(normalized):
        arguments: dict[str, object] = {}
        for key, is_string, value in _PARAMETER.findall(body):
            if is_string == "false":
                try:
                    arguments[key] = json.loads(value)
                except ValueError:
                    arguments[key] = value
            else:
                arguments[key] = value
        calls.append(DsmlCall(name.strip(), json.dumps(arguments, ensure_ascii=False)))
    return calls


@dataclass(slots=True)
class DsmlToolCalls:
    """Holds back content from the first DSML marker on and reads tool calls out of it."""

    _pending: str = ""
    _markup: list[str] = field(default_factory=list)

    def passes(self, text: str) -> bool:
        """Whether `feed(text)` would give back `text` as it is, holding nothing."""
        return not self._markup and not self._pending and "<" not in text

    def feed(self, text: str) -> str:
        """The part of `text` that is ordinary content, safe to show now."""
        if self._markup:
            self._markup.append(text)
            return ""
        if not self._pending and "<" not in text:
            return text  # the common case: no marker can start here
        text = self._pending + text
        self._pending = ""
        found = _MARKER.search(text)
        if found is not None:
            self._markup.append(text[found.start() :])
            return text[: found.start()]
        cut = text.rfind("<")
        if cut >= 0 and _MARKER_PREFIX.match(text, cut):
            self._pending = text[cut:]
            return text[:cut]
        return text

    def finish(self) -> tuple[str, list[DsmlCall]]:
        """Content left over, and the calls found; unreadable markup is given back as text."""
        markup = "".join(self._markup)
        leftover = self._pending
        self._markup, self._pending = [], ""
        if not markup:
            return leftover, []
        calls = parse_dsml(markup)
        return ("", calls) if calls else (markup + leftover, [])


class ContentFilters:
    """Both quirks in order: <think> first (reasoning is not scanned for markup)."""

    __slots__ = ("_dsml", "_think")

    def __init__(self, think_tags: bool, dsml: bool, tag: str = "think") -> None:
        self._think = ThinkTags(tag) if think_tags else None
        self._dsml = DsmlToolCalls() if dsml else None

    def passes(self, text: str) -> bool:
        """Whether `feed(text)` would give back `text` as it is, as text, holding nothing
        (past any <think> block, no markup begun or beginning)."""
        think, dsml = self._think, self._dsml
        return (think is None or think.passing) and (dsml is None or dsml.passes(text))

    def feed(self, text: str) -> list[Segment]:
        think = self._think
        if think is None or think.passing:
            # Past any <think> block: only the markup scan is left.
            shown = self._dsml.feed(text) if self._dsml else text
            return [("text", shown)] if shown else []
        return self._filter(think.feed(text))

    def finish(self) -> tuple[list[Segment], list[DsmlCall]]:
        segments = self._filter(self._think.finish()) if self._think else []
        if self._dsml is None:
            return segments, []
        leftover, calls = self._dsml.finish()
        if leftover:
            segments.append(("text", leftover))
        return segments, calls

    def _filter(self, segments: list[Segment]) -> list[Segment]:
        if self._dsml is None:
            return segments
        out: list[Segment] = []
        for kind, text in segments:
            if kind == "text":
                text = self._dsml.feed(text)
            if text:
                out.append((kind, text))
        return out
