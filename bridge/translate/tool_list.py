"""The request's tool list -> upstream function tools, the echo of it, and tool_choice (pure)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import msgspec

from bridge.translate.errors import RequestError, convert_field, invalid_field
from bridge.translate.recent import Recent
from bridge.translate.tools import ToolMap, ToolRef, upstream_tool_name
from bridge.wire.responses import CustomTool, FunctionTool, NamespaceTool

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
CUSTOM_TOOL_ARGUMENT = "input"


class _ToolType(msgspec.Struct):
    type: str = "function"


_TOOL_TYPE = msgspec.json.Decoder(_ToolType)
_FUNCTION_TOOL = msgspec.json.Decoder(FunctionTool)
_CUSTOM_TOOL = msgspec.json.Decoder(CustomTool)
_NAMESPACE_TOOL = msgspec.json.Decoder(NamespaceTool)


def _decode_tool(decoder: msgspec.json.Decoder[T], raw: msgspec.Raw, param: str) -> T:
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise invalid_field(exc, param) from None
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


TOOLS_CACHE_SIZE = 64
# Longer lists are not kept: one of 250,000 tools kept a million objects alive (and in
# every full garbage collection) after its request.
TOOLS_CACHE_MAX_BYTES = 1024 * 1024
# Tool lists translated and echoed lately, by their exact JSON: a client sends the same list
# with every turn of a conversation (Codex: some thirty tools, 0.15 ms to translate each
# time).
_TRANSLATED: Recent[tuple[list[dict[str, Any]], ToolMap]] = Recent(
    TOOLS_CACHE_SIZE, TOOLS_CACHE_MAX_BYTES
)
_ECHOED: Recent[list[msgspec.Raw]] = Recent(TOOLS_CACHE_SIZE, TOOLS_CACHE_MAX_BYTES)


def translate_tools(raw_tools: list[msgspec.Raw]) -> tuple[list[dict[str, Any]], ToolMap]:
    """Client tools -> upstream function tools, and the map back. Hosted tools are dropped.

    The result may be shared with other requests that sent the same tools: read it, never
    change it."""
    key = b"\x00".join(bytes(raw) for raw in raw_tools)
    cached = _TRANSLATED.get(key)
    if cached is not None:
        return cached
    translated = _translate_tools(raw_tools)
    _TRANSLATED.put(key, translated)
    return translated


def _described(ref: ToolRef) -> str:
    kind = "custom tool" if ref.kind == "custom" else "function"
    return f"{kind} {ref.name!r}" + (f" in namespace {ref.namespace!r}" if ref.namespace else "")


def _add(tool_map: ToolMap, ref: ToolRef, param: str, params: dict[str, str]) -> str:
    """The tool's upstream name; RequestError when another tool of the request already has
    it (namespace `ns` with `a__b` and a function `ns__a__b` both flatten to `ns__a__b`: the
    model could call only one of them)."""
    upstream = upstream_tool_name(ref.name, ref.namespace)
    taken = tool_map.get(upstream)
    if taken is not None and taken != ref:
        raise RequestError(
            f"{param} ({_described(ref)}) and {params[upstream]} ({_described(taken)}) both "
            f"become the function {upstream!r} for a Chat Completions upstream, which could "
            "then call only one of them; rename one",
            param,
        )
    params.setdefault(upstream, param)
    return tool_map.add(ref)


def _translate_tools(raw_tools: list[msgspec.Raw]) -> tuple[list[dict[str, Any]], ToolMap]:
    tools: list[dict[str, Any]] = []
    tool_map = ToolMap()
    # Upstream name -> the request field of the tool that has it.
    params: dict[str, str] = {}
    for index, raw in enumerate(raw_tools):
        param = f"tools[{index}]"
        kind = _decode_tool(_TOOL_TYPE, raw, param).type
        if kind == "function":
            fn = _decode_tool(_FUNCTION_TOOL, raw, param)
            name = _add(tool_map, ToolRef(fn.name), param, params)
            tools.append(_function_tool(name, fn.description, fn.parameters, fn.strict))
        elif kind == "custom":
            custom = _decode_tool(_CUSTOM_TOOL, raw, param)
            name = _add(tool_map, ToolRef(custom.name, kind="custom"), param, params)
            tools.append(_custom_as_function(custom, name))
        elif kind == "namespace":
            namespace = _decode_tool(_NAMESPACE_TOOL, raw, param)
            for inner_index, inner in enumerate(namespace.tools):
                inner_param = f"{param}.tools[{inner_index}]"
                inner_kind = inner.get("type", "function")
                if inner_kind == "function":
                    fn = convert_field(inner, FunctionTool, inner_param)
                    name = _add(tool_map, ToolRef(fn.name, namespace.name), inner_param, params)
                    tools.append(_function_tool(name, fn.description, fn.parameters, fn.strict))
                elif inner_kind == "custom":
                    custom = convert_field(inner, CustomTool, inner_param)
                    ref = ToolRef(custom.name, namespace.name, "custom")
                    name = _add(tool_map, ref, inner_param, params)
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


_RAW_ENCODER = msgspec.json.Encoder()


def echo_tools(raw_tools: list[msgspec.Raw]) -> list[msgspec.Raw]:
    """The tool list as a response echoes it: function tools with `description`,
    `parameters` and `strict` always present (null where the client gave none), as the Open
    Responses schema requires; other tools as they came. Pure and deterministic (the store
    keeps the request's list and echoes it again on reads)."""
    key = b"\x00".join(bytes(raw) for raw in raw_tools)
    cached = _ECHOED.get(key)
    if cached is not None:
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
    _ECHOED.put(key, echoed)
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
