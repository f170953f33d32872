"""Input items -> upstream messages, keeping Chat Completions' pairing rules (pure)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from bridge.translate.compaction import decode_compaction, summary_text
from bridge.translate.content import (
    IMAGE_OMITTED,
    TEXT_PART_TYPES,
    image_part,
    message_content,
    text_of,
)
from bridge.translate.dialect import is_signature
from bridge.translate.errors import RequestError, convert_field
from bridge.translate.reasoning import Reasoning, decode_reasoning
from bridge.translate.tool_list import CUSTOM_TOOL_ARGUMENT
from bridge.translate.tools import upstream_tool_name
from bridge.wire.chat import ChatFunctionCall, ChatMessage, ChatToolCall
from bridge.wire.responses import (
    CompactionItem,
    ContentPart,
    CustomToolCallItem,
    FunctionCallItem,
    MessageItem,
    ReasoningItem,
    ToolOutputItem,
)

log = logging.getLogger(__name__)

# Input items with no Chat Completions equivalent: skipped, the request goes on.
SKIPPED_ITEM_TYPES = frozenset(
    {
        "local_shell_call",
        "local_shell_call_output",
        "web_search_call",
        "file_search_call",
        "image_generation_call",
        "code_interpreter_call",
        "computer_call",
        "computer_call_output",
        "tool_search_call",
        "tool_search_output",
        "item_reference",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
    }
)
# Opens the user message that carries the images tool outputs returned (Chat Completions
# tool messages hold text only).
TOOL_IMAGES_NOTE = "Images returned by the tool calls above:"


@dataclass(slots=True, frozen=True)
class Continuation:
    """Where translating a conversation stopped (a turn earlier on a WebSocket), so that
    what comes next is translated as if the whole conversation had been sent again."""

    # Messages translated so far (the instructions not counted).
    messages: int
    # Tool calls made so far: a tool output answers one of them or is skipped.
    call_ids: frozenset[str]
    # The last message, when it is an assistant turn that a following tool call joins.
    tail: ChatMessage | None = None
    # Reasoning items not yet attached to an assistant turn.
    reasoning: tuple[Reasoning, ...] = ()


def _replayed_reasoning(item: ReasoningItem, want_details: bool) -> Reasoning | None:
    """Reasoning from a replayed item: the text of its content, else of the bridge's own
    carrier; the provider's details from the carrier (opened only when needed)."""
    text = "".join(part.text for part in item.content) if item.content else ""
    carried = None
    if item.encrypted_content and (want_details or not text):
        carried = decode_reasoning(item.encrypted_content)
    if not text and carried is None:
        return None
    return Reasoning(
        text or (carried.text if carried else ""), carried.details if carried else None
    )


class MessageBuilder:
    """Builds upstream messages from input items, keeping Chat Completions' pairing rules."""

    def __init__(
        self,
        developer_role: bool,
        want_details: bool = False,
        images: bool = True,
        continuation: Continuation | None = None,
    ) -> None:
        self.developer_role = developer_role
        self.want_details = want_details
        self.images = images
        # Images left out because the model takes text only.
        self.omitted_images = 0
        # What was left out of replayed history, logged once per request: the call ids of
        # stored tool outputs that answer no call, and compaction items made elsewhere.
        self.skipped_outputs: list[str] = []
        self.foreign_compactions = 0
        self.messages: list[ChatMessage] = []
        self.reasoning: list[Reasoning] = list(continuation.reasoning) if continuation else []
        # The assistant message that further tool calls of the same turn join.
        self.open_turn: ChatMessage | None = None
        # Images from tool outputs wait for the run of tool messages to end.
        self.tool_images: list[dict[str, Any]] = []
        self.call_ids: set[str] = set(continuation.call_ids) if continuation else set()
        # Continuing a conversation translated earlier: a tool call that comes first joins
        # (a copy of) its last assistant turn, which then replaces that turn upstream.
        self.continued = continuation.tail if continuation else None
        self.replaces_last = False
        # Gemini thought signatures waiting for the call they name (a reasoning item that
        # carries one may come before or after its call; bridge.translate.dialect).
        self.signatures: dict[str, dict[str, Any]] = {}
        # Reasoning of tool-call turns kept through a compaction, by call id
        # (bridge.translate.compaction): for a client that dropped the reasoning items.
        self.compacted_reasoning: dict[str, Reasoning] = {}
        # The first message changed in place since `mark` (a tool call joining it).
        self._marked = 0
        self._touched: int | None = None

    def mark(self) -> None:
        """Start noting which messages change from here on (see changed_from)."""
        self._marked = len(self.messages)
        self._touched = None

    @property
    def changed_from(self) -> int:
        """The first message added or changed since `mark`."""
        if self._touched is None:
            return self._marked
        return min(self._touched, self._marked)

    @property
    def tail(self) -> ChatMessage | None:
        """The assistant turn a following tool call would join, if any."""
        if self.open_turn is not None and self.messages and self.open_turn is self.messages[-1]:
            return self.open_turn
        return self.continued

    def _flush_tool_images(self) -> None:
        if self.tool_images:
            content: list[dict[str, Any]] = [{"type": "text", "text": TOOL_IMAGES_NOTE}]
            content.extend(self.tool_images)
            self.messages.append(ChatMessage(role="user", content=content))
            self.tool_images = []
            self.continued = None

    def _assistant(self, content: str | None) -> ChatMessage:
        """A new assistant turn carrying the reasoning items that came before it."""
        parts, self.reasoning = self.reasoning, []
        text = "".join(part.text for part in parts) if parts else None
        details = [d for part in parts for d in part.details or ()] or None
        return ChatMessage(
            role="assistant",
            content=content,
            reasoning_content=text or None,
            reasoning_details=details,
        )

    def message(self, item: MessageItem, param: str) -> None:
        self._flush_tool_images()
        role = item.role
        if role == "assistant":
            content: str | list[dict[str, Any]]
            content = item.content if isinstance(item.content, str) else text_of(item.content, "")
            turn = self._assistant(content)
            self.messages.append(turn)
            self.open_turn = turn
            self.continued = None
            return
        if role == "developer" and not self.developer_role:
            role = "system"
        elif role not in ("user", "system", "developer"):
            raise RequestError(f"Unknown message role {role!r}", f"{param}.role")
        self.open_turn = None
        self.continued = None
        self.reasoning = []
        self.messages.append(
            ChatMessage(role=role, content=self._content(item.content, param + ".content"))
        )

    def _content(self, parts: str | list[ContentPart], param: str) -> str | list[dict[str, Any]]:
        if not self.images and not isinstance(parts, str):
            self.omitted_images += sum(part.type == "input_image" for part in parts)
        return message_content(parts, param, self.images)

    def reasoning_item(self, item: ReasoningItem) -> None:
        self._flush_tool_images()
        reasoning = _replayed_reasoning(item, self.want_details)
        if reasoning is not None and reasoning.details:
            reasoning = self._take_signatures(reasoning)
            if reasoning is None:
                return  # signatures alone: the turn they were made in goes on
        self.open_turn = None
        self.continued = None
        if reasoning is not None:
            self.reasoning.append(reasoning)

    def _take_signatures(self, reasoning: Reasoning) -> Reasoning | None:
        """`reasoning` without its thought signatures, which go to the calls they name (a
        call made already gets its signature now, a later one when it comes); None when
        nothing else is left."""
        details = reasoning.details or []
        signatures = [detail for detail in details if is_signature(detail)]
        if not signatures:
            return reasoning
        for detail in signatures:
            call_id = str(detail.get("call_id"))
            if call_id not in self.call_ids or not self._sign_made_call(call_id, detail):
                self.signatures[call_id] = detail
        rest = [detail for detail in details if not is_signature(detail)]
        if not reasoning.text and not rest:
            return None
        return Reasoning(reasoning.text, rest or None)

    def _sign_made_call(self, call_id: str, detail: dict[str, Any]) -> bool:
        """Give a call made earlier in these messages its signature."""
        for index in range(len(self.messages) - 1, -1, -1):
            message = self.messages[index]
            if any(call.id == call_id for call in message.tool_calls or ()):
                message.reasoning_details = [*(message.reasoning_details or ()), detail]
                if self._touched is None or index < self._touched:
                    self._touched = index
                return True
        return False

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        self._flush_tool_images()
        call = ChatToolCall(id=call_id, function=ChatFunctionCall(name=name, arguments=arguments))
        turn = self.open_turn
        if turn is None and self.continued is not None:
            # The conversation's last turn, translated before: joined on a copy.
            tail = self.continued
            turn = msgspec.structs.replace(tail, tool_calls=list(tail.tool_calls or ()))
            self.messages.append(turn)
            self.open_turn = turn
            self.replaces_last = True
            self.continued = None
        elif turn is None or turn is not self.messages[-1]:
            turn = self._assistant(None)
            self.messages.append(turn)
            self.open_turn = turn
        elif self._touched is None or len(self.messages) - 1 < self._touched:
            self._touched = len(self.messages) - 1
        if turn.tool_calls is None:
            turn.tool_calls = []
        turn.tool_calls.append(call)
        self.call_ids.add(call_id)
        signature = self.signatures.pop(call_id, None)
        if signature is not None:
            turn.reasoning_details = [*(turn.reasoning_details or ()), signature]

    def tool_output(self, item: ToolOutputItem, param: str, replayed: bool = False) -> None:
        """A tool message; RequestError for an output that answers no call (the Open
        Responses specification fails the turn), unless it comes from history the bridge
        keeps (a stored chain or conversation, which an older release may have stored
        with one): Chat Completions takes no tool message without its call, so it is left
        out there."""
        if item.call_id not in self.call_ids:
            if not replayed:
                raise RequestError(
                    f"No tool call found for function call output with call_id "
                    f"'{item.call_id}': a tool output must answer a function_call or "
                    "custom_tool_call earlier in the conversation",
                    f"{param}.call_id",
                )
            self.skipped_outputs.append(item.call_id)
            return
        self.open_turn = None
        self.continued = None
        output = item.output
        if isinstance(output, str):
            text = output
        else:
            text = text_of([p for p in output if p.type in TEXT_PART_TYPES], "\n")
            for index, part in enumerate(output):
                if part.type != "input_image" or not part.image_url:
                    continue
                if self.images:
                    self.tool_images.append(image_part(part, f"{param}.output[{index}]"))
                else:
                    self.omitted_images += 1
                    text = f"{text}\n{IMAGE_OMITTED}" if text else IMAGE_OMITTED
        self.messages.append(ChatMessage(role="tool", content=text, tool_call_id=item.call_id))

    def compaction(self, item: CompactionItem) -> None:
        """A compaction item the bridge made: its summary, as a user message where it
        stands; one from elsewhere (OpenAI's own) cannot be read and is left out."""
        carried = decode_compaction(item.encrypted_content)
        if carried is None:
            self.foreign_compactions += 1
            return
        self._flush_tool_images()
        self.open_turn = None
        self.continued = None
        self.reasoning = []
        if carried.summary:
            self.messages.append(ChatMessage(role="user", content=summary_text(carried.summary)))
        self.compacted_reasoning.update(carried.reasoning)

    def _restore_compacted_reasoning(self) -> None:
        """Kept tool-call turns that came back without their reasoning get the one the
        compaction carried."""
        for message in self.messages:
            if message.role != "assistant" or not message.tool_calls or message.reasoning_content:
                continue
            for call in message.tool_calls:
                found = self.compacted_reasoning.get(call.id)
                if found is not None and (found.text or found.details):
                    message.reasoning_content = found.text or message.reasoning_content
                    if message.reasoning_details is None:
                        message.reasoning_details = found.details
                    break

    def finish(self) -> list[ChatMessage]:
        self._flush_tool_images()
        if self.compacted_reasoning:
            self._restore_compacted_reasoning()
        return self.messages

    def add_items(self, items: Sequence[Any], name: str) -> None:
        """Translate `items` (named `name[i]` in errors) and finish."""
        for index, item in enumerate(items):
            _add_item(self, item, f"{name}[{index}]")
        self.finish()

    def continuation(self, messages: int) -> Continuation:
        """Where this translation stopped, for the conversation's next turn, which has
        `messages` messages so far (its instructions not counted)."""
        return Continuation(
            messages=messages,
            call_ids=frozenset(self.call_ids),
            tail=self.tail,
            reasoning=tuple(self.reasoning),
        )


def _arguments_or_empty_object(arguments: str) -> str:
    # Zero-argument calls come back from some upstreams with "" arguments; every upstream
    # accepts "{}" on replay, several reject "".
    return arguments if arguments.strip() else "{}"


def translate_input(
    instructions: str | None,
    items: Sequence[Any],
    developer_role: bool = False,
    history: Sequence[dict[str, Any]] = (),
    want_details: bool = False,
    images: bool = True,
    continuation: Continuation | None = None,
) -> MessageBuilder:
    """Instructions, earlier items (a stored chain) and input items -> upstream messages
    (the builder's `messages`). With a `continuation` the messages are only what follows
    it: the conversation translated before goes between the instructions and them."""
    messages = MessageBuilder(developer_role, want_details, images, continuation)
    if instructions:
        messages.messages.append(ChatMessage(role="system", content=instructions))
    for index, item in enumerate(history):
        _add_item(messages, item, f"history[{index}]", replayed=True)
    messages.add_items(items, "input")
    return messages


def _add_item(history: MessageBuilder, raw: Any, param: str, replayed: bool = False) -> None:
    if not isinstance(raw, dict):
        raise RequestError(f"{param} must be an object", param)
    kind = raw.get("type") or ("message" if "role" in raw else None)
    if kind == "message":
        history.message(convert_field(raw, MessageItem, param), param)
    elif kind == "reasoning":
        history.reasoning_item(convert_field(raw, ReasoningItem, param))
    elif kind == "function_call":
        call = convert_field(raw, FunctionCallItem, param)
        name = upstream_tool_name(call.name, call.namespace)
        history.tool_call(call.call_id, name, _arguments_or_empty_object(call.arguments))
    elif kind == "custom_tool_call":
        custom = convert_field(raw, CustomToolCallItem, param)
        arguments = msgspec.json.encode({CUSTOM_TOOL_ARGUMENT: custom.input}).decode()
        history.tool_call(custom.call_id, upstream_tool_name(custom.name, None), arguments)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        history.tool_output(convert_field(raw, ToolOutputItem, param), param, replayed)
    elif kind == "compaction":
        history.compaction(convert_field(raw, CompactionItem, param))
    elif kind == "compaction_trigger":
        # Codex's remote compaction "v2" (Codex 0.169.0 uses it for a provider named azure):
        # it wants an answer of exactly one compaction item, which the model cannot give.
        raise RequestError(
            "compaction_trigger items (remote compaction) are not supported by "
            "responses-bridge: compact with POST /v1/responses/compact, or let Codex compact "
            "locally (do not name the provider azure or openai)",
            f"{param}.type",
        )
    elif kind in SKIPPED_ITEM_TYPES:
        log.debug("skipping %s input item: no Chat Completions equivalent", kind)
    elif kind is None:
        raise RequestError(f"{param} has no type", f"{param}.type")
    else:
        log.debug("skipping unknown input item type %r", kind)
