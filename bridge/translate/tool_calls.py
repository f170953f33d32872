"""Tool calls as an upstream streams them: deltas keyed by index, back to client items.

Part of the stream translator (bridge.translate.stream), which owns event numbering and
output items; this module only decides which events a call produces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from bridge.config import QuirksConfig
from bridge.translate.partial_json import StringFieldStream, custom_tool_input
from bridge.translate.tools import ToolMap
from bridge.wire.chat import FunctionDelta, ToolCallDelta
from bridge.wire.events import (
    CustomToolCallInputDelta,
    CustomToolCallInputDone,
    CustomToolCallOutput,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    FunctionCallOutput,
    OutputItemDone,
    ResponseEvent,
)

CallItem = FunctionCallOutput | CustomToolCallOutput


@dataclass(slots=True)
class _Call:
    """A tool call being streamed, keyed by the upstream's tool-call index."""

    upstream_id: str | None
    upstream_name: str | None
    arguments: list[str] = field(default_factory=list)
    item: CallItem | None = None
    output_index: int = -1
    input_stream: StringFieldStream | None = None
    streamed_input: list[str] = field(default_factory=list)
    done: bool = False


class ToolCalls:
    """The calls of one answer. An item is announced once its name is known; its
    arguments (or a custom tool's input) stream as they come; all close at the end."""

    def __init__(
        self,
        tool_map: ToolMap,
        quirks: QuirksConfig,
        emit: Callable[[ResponseEvent], None],
        add_item: Callable[[CallItem], int],
        new_id: Callable[[str], str],
    ) -> None:
        self._tool_map = tool_map
        self._quirks = quirks
        self._emit = emit
        self._add_item = add_item
        self._new_id = new_id
        self._calls: dict[int, _Call] = {}
        # Upstream index -> where its fragments go now (a repeated id moved the call).
        self._moved: dict[int, int] = {}
        self._last: int | None = None

    def _index(self, delta: ToolCallDelta) -> int:
        """The call a delta belongs to. A null or absent index: the call its id names, a
        new call for a new id, else the call being streamed (treated as absent, never as
        an error)."""
        if delta.index is not None:
            return self._moved.get(delta.index, delta.index)
        if delta.id:
            for index, call in self._calls.items():
                if call.upstream_id == delta.id:
                    return index
            return max(self._calls, default=-1) + 1
        return self._last if self._last is not None else 0

    def call_id(self, delta: ToolCallDelta) -> str | None:
        """The id of the call a delta belongs to, if it has one yet."""
        if delta.id:
            return delta.id
        call = self._calls.get(self._index(delta))
        return call.upstream_id if call is not None else None

    def delta(self, delta: ToolCallDelta) -> None:
        """One tool-call delta of a chunk."""
        fn = delta.function
        index = self._index(delta)
        call = self._calls.get(index)
        if (
            call is not None
            and self._quirks.repeated_call_id
            and delta.id
            and call.upstream_id
            and delta.id != call.upstream_id
            and fn is not None
            and fn.name
        ):
            # A new call reusing an index (some servers send every call at index 0): it
            # gets an index of its own, and later fragments at that index follow it.
            call = None
            moved = max(self._calls) + 1
            if delta.index is not None:
                self._moved[delta.index] = moved
            index = moved
        if call is None:
            call = _Call(upstream_id=delta.id, upstream_name=None)
            self._calls[index] = call
            # Another call begins: the names of the calls before it are whole.
            self._announce_named()
        self._last = index
        if delta.id and not call.upstream_id:
            call.upstream_id = delta.id
        if fn is not None and fn.name and call.item is None:
            call.upstream_name = (call.upstream_name or "") + fn.name
        if fn is not None and fn.arguments:
            # A name may come in pieces (`get_`, `weather`): the call is announced once
            # its arguments begin, when the name is whole.
            if call.item is None and call.upstream_name:
                self._announce(call)
            call.arguments.append(fn.arguments)
            if call.item is not None:
                self._arguments_delta(call, fn.arguments)

    def add_whole(self, name: str, arguments: str) -> None:
        """A complete call found outside `tool_calls` (DSML markup in the content)."""
        index = max(self._calls, default=-1) + 1
        self.delta(
            ToolCallDelta(
                index=index,
                id=self._new_id("call"),
                function=FunctionDelta(name=name, arguments=arguments),
            )
        )

    def as_streamed(self, item: CallItem) -> CallItem:
        """A copy of a call's item with the arguments (or input) streamed to it so far."""
        for call in self._calls.values():
            if call.item is item and not call.done:
                if isinstance(item, CustomToolCallOutput):
                    return msgspec.structs.replace(item, input="".join(call.streamed_input))
                return msgspec.structs.replace(item, arguments="".join(call.arguments))
        return msgspec.structs.replace(item)

    def close_all(self) -> None:
        """Done events for every call, in output order."""
        self._announce_named()
        for call in sorted(self._calls.values(), key=lambda c: c.output_index):
            self._close(call)

    def _announce_named(self) -> None:
        """Announce, in upstream order, the calls whose names came but no arguments yet."""
        for index in sorted(self._calls):
            call = self._calls[index]
            if call.item is None and call.upstream_name:
                self._announce(call)

    def _announce(self, call: _Call) -> None:
        assert call.upstream_name is not None
        ref = self._tool_map.resolve(call.upstream_name)
        call_id = call.upstream_id or self._new_id("call")
        call.upstream_id = call_id
        item: CallItem
        if ref.kind == "custom":
            item = CustomToolCallOutput(
                id=self._new_id("ctc"), call_id=call_id, name=ref.name, namespace=ref.namespace
            )
            call.input_stream = StringFieldStream()
        else:
            item = FunctionCallOutput(
                id=self._new_id("fc"), call_id=call_id, name=ref.name, namespace=ref.namespace
            )
        call.item = item
        call.output_index = self._add_item(item)
        if call.arguments:
            self._arguments_delta(call, "".join(call.arguments))

    def _arguments_delta(self, call: _Call, fragment: str) -> None:
        item = call.item
        assert item is not None
        if call.input_stream is None:
            self._emit(
                FunctionCallArgumentsDelta(
                    item_id=item.id, output_index=call.output_index, delta=fragment
                )
            )
            return
        text = call.input_stream.feed(fragment)
        if text:
            call.streamed_input.append(text)
            self._emit(
                CustomToolCallInputDelta(
                    item_id=item.id, output_index=call.output_index, delta=text
                )
            )

    def _close(self, call: _Call) -> None:
        if call.done:
            return
        call.done = True
        if call.item is None:
            # A call whose name never arrived cannot be routed by the client.
            call.upstream_name = call.upstream_name or "unknown_tool"
            self._announce(call)
        item = call.item
        assert item is not None
        arguments = "".join(call.arguments)
        if isinstance(item, CustomToolCallOutput):
            final = custom_tool_input(arguments)
            streamed = "".join(call.streamed_input)
            if final.startswith(streamed) and len(final) > len(streamed):
                self._emit(
                    CustomToolCallInputDelta(
                        item_id=item.id,
                        output_index=call.output_index,
                        delta=final[len(streamed) :],
                    )
                )
            item.input = final
            self._emit(
                CustomToolCallInputDone(
                    item_id=item.id, output_index=call.output_index, input=final
                )
            )
        else:
            if not arguments.strip() and self._quirks.empty_arguments:
                # Zero-argument calls arrive with "" from some providers; "{}" parses.
                arguments = "{}"
                self._emit(
                    FunctionCallArgumentsDelta(
                        item_id=item.id, output_index=call.output_index, delta=arguments
                    )
                )
            item.arguments = arguments
            self._emit(
                FunctionCallArgumentsDone(
                    item_id=item.id,
                    output_index=call.output_index,
                    name=item.name,
                    arguments=arguments,
                )
            )
        item.status = "completed"
        self._emit(OutputItemDone(output_index=call.output_index, item=item))
