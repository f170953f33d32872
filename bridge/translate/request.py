"""Responses request -> Chat Completions request body (pure)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from bridge.translate.reasoning import Reasoning, decode_reasoning, turn_fingerprint
from bridge.translate.tools import ToolMap, ToolRef, upstream_tool_name
from bridge.wire import validation_error_parts
from bridge.wire.chat import ChatFunctionCall, ChatMessage, ChatToolCall
from bridge.wire.responses import (
    ContentPart,
    CustomTool,
    CustomToolCallItem,
    FunctionCallItem,
    FunctionTool,
    MessageItem,
    NamespaceTool,
    ReasoningItem,
    ResponsesRequest,
    ToolOutputItem,
    input_items,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Hosted tools run by OpenAI itself; a Chat Completions upstream cannot run them.
HOSTED_TOOL_TYPES = frozenset(
    {
        "web_search",
        "web_search_preview",
        "tool_search",
        "file_search",
        "local_shell",
        "shell",
        "image_generation",
        "code_interpreter",
        "computer_use_preview",
        "computer",
        "mcp",
    }
)
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
        "compaction",
        "item_reference",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
    }
)
TEXT_PART_TYPES = frozenset({"input_text", "output_text", "text"})
# What a text-only model is given in place of an image.
IMAGE_OMITTED = "[An image was attached here; it was left out because this model takes text only.]"
CUSTOM_TOOL_ARGUMENT = "input"
# Opens the user message that carries the images tool outputs returned (Chat Completions
# tool messages hold text only).
TOOL_IMAGES_NOTE = "Images returned by the tool calls above:"


class RequestError(Exception):
    """A request the bridge cannot translate; becomes a 400 naming `param`."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class ReasoningGap:
    """A replayed assistant turn that came without its reasoning (or without the details
    a provider wants back)."""

    message: ChatMessage
    call_ids: list[str]
    fingerprint: str
    # Where the message is in the upstream messages, and its context key once computed
    # (bridge.translate.context), which finds its reasoning only in the same conversation.
    index: int = 0
    context_key: str | None = None

    def fill(self, reasoning: Reasoning) -> None:
        if self.message.reasoning_content is None:
            self.message.reasoning_content = reasoning.text or None
        if self.message.reasoning_details is None:
            self.message.reasoning_details = reasoning.details


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


@dataclass(slots=True)
class ChatRequestPlan:
    """The upstream body plus what the stream translator needs to map calls back."""

    body: dict[str, Any]
    tool_map: ToolMap
    # Replayed assistant turns whose reasoning must be looked up elsewhere.
    reasoning_gaps: list[ReasoningGap] = field(default_factory=list)
    # Leading messages that are not conversation (the instructions): context digests skip them.
    context_start: int = 0
    # Images replaced by a note because the model takes text only.
    omitted_images: int = 0
    # What built the messages; it goes on with the response's output (bridge.socket_state).
    builder: MessageBuilder | None = None

    @property
    def messages(self) -> list[ChatMessage]:
        messages: list[ChatMessage] = self.body["messages"]
        return messages


class _ToolType(msgspec.Struct):
    type: str = "function"


_TOOL_TYPE = msgspec.json.Decoder(_ToolType)
_FUNCTION_TOOL = msgspec.json.Decoder(FunctionTool)
_CUSTOM_TOOL = msgspec.json.Decoder(CustomTool)
_NAMESPACE_TOOL = msgspec.json.Decoder(NamespaceTool)


def _invalid(exc: msgspec.ValidationError, param: str) -> RequestError:
    message, where = validation_error_parts(exc)
    path = f"{param}.{where}" if where and not where.startswith("[") else param + where
    return RequestError(f"Invalid {path}: {message}", path)


def _convert(value: Any, kind: type[T], param: str) -> T:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, param) from None


def _decode_tool(decoder: msgspec.json.Decoder[T], raw: msgspec.Raw, param: str) -> T:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, param) from None
    except RecursionError:
        raise RequestError(f"{param} is nested too deeply", param) from None


def _function_tool(
    name: str, description: str | None, parameters: dict[str, Any] | None, strict: bool | None
) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": name,
        "parameters": parameters or {"type": "object", "properties": {}},
    }
    if description:
        function["description"] = description
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _custom_as_function(tool: CustomTool, upstream_name: str) -> dict[str, Any]:
    """A custom (free-text) tool offered as a function with one string parameter."""
    description = tool.description or ""
    fmt = tool.format
    if fmt is not None and fmt.definition:
        description += (
            f"\n\nPass the raw text as `{CUSTOM_TOOL_ARGUMENT}`. It must follow this "
            f"{fmt.syntax or ''} grammar:\n{fmt.definition}"
        )
    parameters = {
        "type": "object",
        "properties": {CUSTOM_TOOL_ARGUMENT: {"type": "string", "description": "The raw input."}},
        "required": [CUSTOM_TOOL_ARGUMENT],
        "additionalProperties": False,
    }
    return _function_tool(upstream_name, description.strip() or None, parameters, None)


# Tool lists translated lately, by their exact JSON: a client sends the same list with every
# turn of a conversation (Codex: some thirty tools, 0.15 ms to translate each time).
_TOOLS_CACHE: OrderedDict[bytes, tuple[list[dict[str, Any]], ToolMap]] = OrderedDict()
TOOLS_CACHE_SIZE = 64
_TOOLS_LOCK = threading.Lock()


def translate_tools(raw_tools: list[msgspec.Raw]) -> tuple[list[dict[str, Any]], ToolMap]:
    """Client tools -> upstream function tools, and the map back. Hosted tools are dropped.

    The result may be shared with other requests that sent the same tools: read it, never
    change it."""
    key = b"\x00".join(bytes(raw) for raw in raw_tools)
    with _TOOLS_LOCK:  # long conversations are translated in a thread
        cached = _TOOLS_CACHE.get(key)
        if cached is not None:
            _TOOLS_CACHE.move_to_end(key)
            return cached
    translated = _translate_tools(raw_tools)
    with _TOOLS_LOCK:
        _TOOLS_CACHE[key] = translated
        if len(_TOOLS_CACHE) > TOOLS_CACHE_SIZE:
            _TOOLS_CACHE.popitem(last=False)
    return translated


def _translate_tools(raw_tools: list[msgspec.Raw]) -> tuple[list[dict[str, Any]], ToolMap]:
    tools: list[dict[str, Any]] = []
    tool_map = ToolMap()
    for index, raw in enumerate(raw_tools):
        param = f"tools[{index}]"
        kind = _decode_tool(_TOOL_TYPE, raw, param).type
        if kind == "function":
            fn = _decode_tool(_FUNCTION_TOOL, raw, param)
            name = tool_map.add(ToolRef(fn.name))
            tools.append(_function_tool(name, fn.description, fn.parameters, fn.strict))
        elif kind == "custom":
            custom = _decode_tool(_CUSTOM_TOOL, raw, param)
            name = tool_map.add(ToolRef(custom.name, kind="custom"))
            tools.append(_custom_as_function(custom, name))
        elif kind == "namespace":
            namespace = _decode_tool(_NAMESPACE_TOOL, raw, param)
            for inner_index, inner in enumerate(namespace.tools):
                inner_param = f"{param}.tools[{inner_index}]"
                inner_kind = inner.get("type", "function")
                if inner_kind == "function":
                    fn = _convert(inner, FunctionTool, inner_param)
                    name = tool_map.add(ToolRef(fn.name, namespace.name))
                    tools.append(_function_tool(name, fn.description, fn.parameters, fn.strict))
                elif inner_kind == "custom":
                    custom = _convert(inner, CustomTool, inner_param)
                    name = tool_map.add(ToolRef(custom.name, namespace.name, "custom"))
                    tools.append(_custom_as_function(custom, name))
                else:
                    log.debug(
                        "dropping %s tool %r in namespace %s",
                        inner_kind,
                        inner.get("name"),
                        namespace.name,
                    )
        else:
            log.debug("dropping %s tool: a Chat Completions upstream cannot run it", kind)
    return tools, tool_map


_ECHO_CACHE: OrderedDict[bytes, list[msgspec.Raw]] = OrderedDict()
_RAW_ENCODER = msgspec.json.Encoder()


def echo_tools(raw_tools: list[msgspec.Raw]) -> list[msgspec.Raw]:
    """The tool list as a response echoes it: function tools with `description`,
    `parameters` and `strict` always present (null where the client gave none), as the Open
    Responses schema requires; other tools as they came. Pure and deterministic (the store
    keeps the request's list and echoes it again on reads)."""
    key = b"\x00".join(bytes(raw) for raw in raw_tools)
    with _TOOLS_LOCK:
        cached = _ECHO_CACHE.get(key)
        if cached is not None:
            _ECHO_CACHE.move_to_end(key)
            return cached
    echoed = []
    for raw in raw_tools:
        try:
            tool = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            echoed.append(raw)
            continue
        if isinstance(tool, dict) and tool.get("type", "function") == "function":
            missing = {k: None for k in ("description", "parameters", "strict") if k not in tool}
            if missing:
                raw = msgspec.Raw(_RAW_ENCODER.encode({**tool, **missing}))
        echoed.append(raw)
    with _TOOLS_LOCK:
        _ECHO_CACHE[key] = echoed
        if len(_ECHO_CACHE) > TOOLS_CACHE_SIZE:
            _ECHO_CACHE.popitem(last=False)
    return echoed


def allowed_only(tools: list[dict[str, Any]], choice: Any) -> list[dict[str, Any]]:
    """The upstream tools a tool_choice of type allowed_tools leaves the model (all of them
    for any other choice); RequestError for an allowed tool the request does not define."""
    if not isinstance(choice, dict) or choice.get("type") != "allowed_tools":
        return list(tools)
    allowed = choice.get("tools")
    if not isinstance(allowed, list):
        raise RequestError("allowed_tools needs a list of tools", "tool_choice.tools")
    names: set[str] = set()
    for index, tool in enumerate(allowed):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str):
            raise RequestError("each allowed tool needs a name", f"tool_choice.tools[{index}].name")
        names.add(upstream_tool_name(name, tool.get("namespace")))
    defined = {tool["function"]["name"] for tool in tools}
    for index, tool in enumerate(allowed):
        if upstream_tool_name(tool["name"], tool.get("namespace")) not in defined:
            raise RequestError(
                f"allowed tool {tool['name']!r} is not among the request's tools",
                f"tool_choice.tools[{index}]",
            )
    return [tool for tool in tools if tool["function"]["name"] in names]


def translate_tool_choice(choice: str | dict[str, Any] | None, tool_map: ToolMap) -> Any:
    """tool_choice in Chat Completions form; None when it should be left out."""
    if choice is None or isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind in ("function", "custom") and isinstance(choice.get("name"), str):
        name = upstream_tool_name(choice["name"], choice.get("namespace"))
        return {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        return choice.get("mode", "auto")
    # A hosted tool (web_search, ...) was asked for; the upstream cannot run it.
    return "auto"


def _text_of(parts: list[ContentPart], separator: str) -> str:
    return separator.join(part.text or part.refusal or "" for part in parts)


def _content(
    parts: str | list[ContentPart], param: str, images: bool = True
) -> str | list[dict[str, Any]]:
    """Message content: a string when it is all text, else Chat content parts. Without
    `images` an image part becomes a short note saying it was left out."""
    if isinstance(parts, str):
        return parts
    if not images:
        parts = [
            ContentPart(type="input_text", text=IMAGE_OMITTED)
            if part.type == "input_image"
            else part
            for part in parts
        ]
    if all(part.type in TEXT_PART_TYPES or part.type == "refusal" for part in parts):
        return _text_of(parts, "\n\n")
    converted: list[dict[str, Any]] = []
    for index, part in enumerate(parts):
        if part.type in TEXT_PART_TYPES or part.type == "refusal":
            converted.append({"type": "text", "text": part.text or part.refusal or ""})
        elif part.type == "input_image":
            converted.append(_image_part(part, f"{param}[{index}]"))
        else:
            raise RequestError(
                f"Content part type {part.type!r} is not supported by a Chat Completions upstream",
                f"{param}[{index}].type",
            )
    return converted


def _image_part(part: ContentPart, param: str) -> dict[str, Any]:
    if not part.image_url:
        raise RequestError(
            "input_image needs image_url (a URL or a data: URL); file_id needs OpenAI file "
            "storage, which the upstream does not have",
            f"{param}.image_url",
        )
    image: dict[str, Any] = {"url": part.image_url}
    if part.detail and part.detail != "auto":
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


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
            content = item.content if isinstance(item.content, str) else _text_of(item.content, "")
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
        return _content(parts, param, self.images)

    def reasoning_item(self, item: ReasoningItem) -> None:
        self._flush_tool_images()
        self.open_turn = None
        self.continued = None
        reasoning = _replayed_reasoning(item, self.want_details)
        if reasoning is not None:
            self.reasoning.append(reasoning)

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

    def tool_output(self, item: ToolOutputItem, param: str) -> None:
        if item.call_id not in self.call_ids:
            # Chat Completions rejects a tool message with no matching call; such orphans
            # come from clients that trimmed their history.
            log.warning("skipping tool output for unknown call_id %s", item.call_id)
            return
        self.open_turn = None
        self.continued = None
        output = item.output
        if isinstance(output, str):
            text = output
        else:
            text = _text_of([p for p in output if p.type in TEXT_PART_TYPES], "\n")
            for index, part in enumerate(output):
                if part.type != "input_image" or not part.image_url:
                    continue
                if self.images:
                    self.tool_images.append(_image_part(part, f"{param}.output[{index}]"))
                else:
                    self.omitted_images += 1
                    text = f"{text}\n{IMAGE_OMITTED}" if text else IMAGE_OMITTED
        self.messages.append(ChatMessage(role="tool", content=text, tool_call_id=item.call_id))

    def finish(self) -> list[ChatMessage]:
        self._flush_tool_images()
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
        _add_item(messages, item, f"history[{index}]")
    messages.add_items(items, "input")
    return messages


def _add_item(history: MessageBuilder, raw: Any, param: str) -> None:
    if not isinstance(raw, dict):
        raise RequestError(f"{param} must be an object", param)
    kind = raw.get("type") or ("message" if "role" in raw else None)
    if kind == "message":
        history.message(_convert(raw, MessageItem, param), param)
    elif kind == "reasoning":
        history.reasoning_item(_convert(raw, ReasoningItem, param))
    elif kind == "function_call":
        call = _convert(raw, FunctionCallItem, param)
        name = upstream_tool_name(call.name, call.namespace)
        history.tool_call(call.call_id, name, _arguments_or_empty_object(call.arguments))
    elif kind == "custom_tool_call":
        custom = _convert(raw, CustomToolCallItem, param)
        arguments = msgspec.json.encode({CUSTOM_TOOL_ARGUMENT: custom.input}).decode()
        history.tool_call(custom.call_id, upstream_tool_name(custom.name, None), arguments)
    elif kind in ("function_call_output", "custom_tool_call_output"):
        history.tool_output(_convert(raw, ToolOutputItem, param), param)
    elif kind in SKIPPED_ITEM_TYPES:
        log.debug("skipping %s input item: no Chat Completions equivalent", kind)
    elif kind is None:
        raise RequestError(f"{param} has no type", f"{param}.type")
    else:
        log.debug("skipping unknown input item type %r", kind)


def reasoning_gaps(messages: list[ChatMessage], want_details: bool = False) -> list[ReasoningGap]:
    """Assistant turns without reasoning text (or details, when the provider wants them),
    with what identifies them in the store."""
    gaps = []
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        complete = message.reasoning_content is not None
        if want_details and message.reasoning_details is None:
            complete = False
        if complete:
            continue
        call_ids = [call.id for call in message.tool_calls or ()]
        text = message.content if isinstance(message.content, str) else ""
        gaps.append(ReasoningGap(message, call_ids, turn_fingerprint(text, call_ids), index))
    return gaps


def _response_format(request: ResponsesRequest) -> dict[str, Any] | None:
    fmt = request.text.format if request.text else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.type == "json_schema":
        if fmt.schema is None or not fmt.name:
            raise RequestError("text.format json_schema needs name and schema", "text.format")
        schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema}
        if fmt.description:
            schema["description"] = fmt.description
        if fmt.strict is not None:
            schema["strict"] = fmt.strict
        return {"type": "json_schema", "json_schema": schema}
    raise RequestError(f"Unknown text.format type {fmt.type!r}", "text.format.type")


def translate_request(
    request: ResponsesRequest,
    upstream_model: str,
    *,
    items: Sequence[Any] | None = None,
    developer_role: bool = False,
    history: Sequence[dict[str, Any]] = (),
    want_details: bool = False,
    images: bool = True,
    continuation: Continuation | None = None,
) -> ChatRequestPlan:
    """The whole upstream body for a Responses request; always a streaming request.

    Without `images` (a text-only model) every image is replaced by a short note.

    `items` are the request's input items, decoded (bridge.wire.responses.input_items; by
    default decoded here), `history` the items of a stored previous_response_id chain,
    oldest first. With a `continuation` (a conversation translated on a WebSocket) the
    body's messages are the instructions and what is new; the caller puts the earlier
    messages between them (see MessageBuilder.replaces_last).
    """
    if items is None:
        items = input_items(request)
    built = translate_input(
        request.instructions, items, developer_role, history, want_details, images, continuation
    )
    messages = built.messages
    if not messages and not (continuation and continuation.messages):
        raise RequestError("input is empty: there is nothing to send", "input")
    tools, tool_map = translate_tools(request.tools)
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tools = allowed_only(tools, request.tool_choice)
    if tools:
        body["tools"] = tools
        choice = translate_tool_choice(request.tool_choice, tool_map)
        if choice is not None:
            body["tool_choice"] = choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.presence_penalty is not None:
        body["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        body["frequency_penalty"] = request.frequency_penalty
    # The next three go only to providers that take them (bridge.providers.shape_body).
    if request.prompt_cache_key:
        body["prompt_cache_key"] = request.prompt_cache_key
    if request.safety_identifier:
        body["safety_identifier"] = request.safety_identifier
    if request.text is not None and request.text.verbosity:
        body["verbosity"] = request.text.verbosity
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    response_format = _response_format(request)
    if response_format is not None:
        body["response_format"] = response_format
    # `user` is what every provider takes to tell end users apart; the newer
    # safety_identifier stands in for it when only that is given.
    user = request.user or request.safety_identifier
    if user:
        body["user"] = user
    return ChatRequestPlan(
        body=body,
        tool_map=tool_map,
        reasoning_gaps=reasoning_gaps(messages, want_details),
        context_start=1 if request.instructions else 0,
        omitted_images=built.omitted_images,
        builder=built,
    )
