"""The built-in demo model (`profile = "demo"`): a scripted thinking model inside the bridge.

It answers a Chat Completions request as a thinking provider streams: reasoning first, then
text, and a tool call when the request offers tools. It asks no provider and needs no
account, so a new installation shows every part of the bridge working (reasoning stored
and replayed, tool loops, Codex). Like DeepSeek's thinking models it refuses a replayed
tool-call turn whose reasoning_content is missing, which the bridge must restore. Every
answer says it is the demo's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import msgspec

from bridge.body import UpstreamBody
from bridge.config import Config, ProviderConfig, UpstreamConfig
from bridge.config_env import resolve_api_keys, used_providers
from bridge.errors import upstream_error
from bridge.upstream import UpstreamClient
from bridge.wire.chat import (
    ChatChunk,
    ChatMessage,
    ChatUsage,
    ChunkChoice,
    ChunkDelta,
    CompletionTokensDetails,
    FunctionDelta,
    ToolCallDelta,
)

log = logging.getLogger(__name__)

DEMO_URL = "builtin:demo"
LABEL = "[responses-bridge demo model: a scripted answer; no provider was asked]"
# Seconds between two streamed chunks, so a terminal shows the stream arriving.
PACE = 0.02
# Tools the demo prefers to call: Codex's shells, with a harmless command.
SHELL_TOOLS = ("exec_command", "shell_command", "shell")
ECHO = "echo hello from the responses-bridge demo model"


class DemoFunction(msgspec.Struct, kw_only=True):
    name: str
    parameters: dict[str, Any] = {}


class DemoTool(msgspec.Struct, kw_only=True):
    type: str = "function"
    function: DemoFunction | None = None


class DemoRequest(msgspec.Struct, kw_only=True):
    """What the demo reads of a Chat Completions request; the rest is ignored."""

    model: str = "demo"
    messages: list[ChatMessage] = []
    tools: list[DemoTool] = []
    tool_choice: Any = None


_REQUEST = msgspec.json.Decoder(DemoRequest)
_ENCODER = msgspec.json.Encoder()


class DemoUpstream(UpstreamClient):
    """A provider whose answers are made here: `answer` streams a request's reply as SSE
    bytes (bridge.relay reads them as it reads a provider's stream)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        name: str,
        provider: ProviderConfig,
        settings: UpstreamConfig,
    ) -> None:
        super().__init__(session, name, provider, None, settings)
        self.url = self.display_url = DEMO_URL

    async def answer(self, body: UpstreamBody) -> AsyncGenerator[bytes, None]:
        """The reply as SSE frames; ApiError (as a provider's 400) for a bad request."""
        try:
            request = _REQUEST.decode(body.as_bytes())
        except msgspec.DecodeError as exc:
            raise upstream_error(400, f"demo model: unreadable request: {exc}") from None
        chunks = script(request)
        log.info("demo model: a scripted answer for model %s (no provider asked)", request.model)
        for chunk in chunks:
            yield b"data: " + _ENCODER.encode(chunk) + b"\n\n"
            await asyncio.sleep(PACE)
        yield b"data: [DONE]\n\n"


def script(request: DemoRequest) -> list[ChatChunk]:
    """The chunks of the demo's reply to `request`."""
    _check_replay(request.messages)
    last = request.messages[-1] if request.messages else None
    tool = _tool_to_call(request)
    if last is not None and last.role == "tool":
        name = _called_name(request.messages, last.tool_call_id)
        reasoning = f"The tool {name} has answered. I will report what it returned."
        text = f"{LABEL}\nThe tool `{name}` returned:\n{_text(last.content)[:500]}"
        return _reply(reasoning, text, None, request)
    said = _text(last.content) if last is not None else ""
    quoted = said if len(said) <= 200 else said[:200] + "..."
    if tool is not None:
        reasoning = (
            f"The user wrote: {quoted!r}. A tool is offered ({tool.name}); as a demo I call "
            "it once to show a tool call going through the bridge."
        )
        text = f"{LABEL}\nCalling `{tool.name}`."
        return _reply(reasoning, text, tool, request)
    reasoning = (
        f"The user wrote: {quoted!r}. I am the demo model, so I answer with a greeting and "
        "say how to reach a real model."
    )
    text = (
        f"{LABEL}\nHello! You wrote: {quoted!r}. This reply streamed through the bridge as "
        "a thinking model's would: reasoning first, then this text. Set your provider's API "
        "key (see config.toml) and use one of its models for real answers."
    )
    return _reply(reasoning, text, None, request)


def _check_replay(messages: list[ChatMessage]) -> None:
    """A thinking model's rule (DeepSeek's): a replayed assistant turn with tool calls must
    carry the reasoning_content it was generated with."""
    for message in messages:
        if message.role == "assistant" and message.tool_calls and not message.reasoning_content:
            raise upstream_error(
                400,
                "demo model: an assistant message with tool calls has no reasoning_content; "
                "thinking models refuse such a replay",
            )


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _called_name(messages: list[ChatMessage], call_id: str | None) -> str:
    for message in messages:
        for call in message.tool_calls or ():
            if call.id == call_id:
                return call.function.name
    return "the tool"


def _tool_to_call(request: DemoRequest) -> DemoFunction | None:
    """The function tool the demo calls: the one tool_choice names, else a shell, else the
    first; None when there are none or tool_choice is "none"."""
    functions = [t.function for t in request.tools if t.type == "function" and t.function]
    choice = request.tool_choice
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        for function in functions:
            if function.name == wanted:
                return function
    for name in SHELL_TOOLS:
        for function in functions:
            if function.name == name:
                return function
    return functions[0]


def _arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy the required properties of a JSON schema, simply."""
    properties = schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in schema.get("required") or ():
        spec = properties.get(name) or {}
        arguments[name] = _value(name, spec if isinstance(spec, dict) else {})
    return arguments


def _value(name: str, spec: dict[str, Any]) -> Any:
    if spec.get("enum"):
        return spec["enum"][0]
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "array":
        items = spec.get("items") or {}
        is_text = isinstance(items, dict) and items.get("type") == "string"
        if name in ("command", "cmd") and is_text:
            return ECHO.split(" ", 1)
        return []
    if kind in ("integer", "number"):
        return spec.get("minimum", 1)
    if kind == "boolean":
        return False
    if kind == "object":
        return _arguments(spec)
    return ECHO if name in ("command", "cmd") else "demo"


def _pieces(text: str, words: int = 4) -> list[str]:
    """Text in runs of a few words, as a model streams it."""
    parts = text.split(" ")
    return [" ".join(parts[i : i + words]) + " " for i in range(0, len(parts), words)]


def _reply(
    reasoning: str, text: str, tool: DemoFunction | None, request: DemoRequest
) -> list[ChatChunk]:
    chunks = [_delta(ChunkDelta(reasoning_content=piece)) for piece in _pieces(reasoning)]
    chunks += [_delta(ChunkDelta(content=piece)) for piece in _pieces(text)]
    finish = "stop"
    if tool is not None:
        arguments = _ENCODER.encode(_arguments(tool.parameters)).decode()
        call = ToolCallDelta(
            index=0,
            id=f"call_demo_{time.time_ns():x}",
            function=FunctionDelta(name=tool.name, arguments=arguments),
        )
        chunks.append(_delta(ChunkDelta(tool_calls=[call])))
        finish = "tool_calls"
    chunks.append(ChatChunk(choices=[ChunkChoice(delta=ChunkDelta(), finish_reason=finish)]))
    prompt = sum(len(_text(m.content)) + len(m.reasoning_content or "") for m in request.messages)
    thought = len(reasoning) // 4
    chunks.append(
        ChatChunk(
            usage=ChatUsage(
                prompt_tokens=prompt // 4,
                completion_tokens=thought + len(text) // 4,
                completion_tokens_details=CompletionTokensDetails(reasoning_tokens=thought),
            )
        )
    )
    return chunks


def _delta(delta: ChunkDelta) -> ChatChunk:
    return ChatChunk(choices=[ChunkChoice(delta=delta)])


def demo_models(config: Config) -> list[str]:
    """The models the built-in demo serves."""
    return [
        name
        for name, model in config.models.items()
        if config.providers[model.provider].profile == "demo"
    ]


def keyed_providers(config: Config) -> set[str]:
    """The providers some model uses that need an API key."""
    return {name for name in used_providers(config) if config.providers[name].api_key_env}


def demo_mode(config: Config, environ: Mapping[str, str]) -> bool:
    """A first run: the config has a demo model and no provider that needs a key has one
    here. The bridge then starts anyway, and only the demo answers."""
    if not demo_models(config):
        return False
    keyed = keyed_providers(config)
    return bool(keyed) and not any(
        environ.get(config.providers[name].api_key_env or "") for name in keyed
    )


def serving_keys(
    config: Config, environ: Mapping[str, str]
) -> tuple[dict[str, str], frozenset[str]]:
    """The providers' API keys, and the providers left without one in the demo mode.
    ConfigError (as resolve_api_keys says it) when a used provider's key is unset outside
    the demo mode."""
    if not demo_mode(config, environ):
        return resolve_api_keys(config, environ), frozenset()
    keys = {
        name: environ[provider.api_key_env]
        for name, provider in config.providers.items()
        if provider.api_key_env and environ.get(provider.api_key_env)
    }
    return keys, frozenset(keyed_providers(config))
