"""From a request body to a turn ready to run: parsed, planned, translated, recordable.

Transport-independent: POST /v1/responses (bridge.sse_transport) and the WebSocket mode
both set their turns up here and run them with bridge.engine.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import msgspec
from multidict import CIMultiDictProxy

from bridge.body import UpstreamBody, join_messages
from bridge.config import Config, ModelConfig
from bridge.conversation import (
    PlannedTurn,
    Prefix,
    StoredHistory,
    plan_turn,
    resolve_item_references,
    turn_recorder,
)
from bridge.engine import Recorder, Shorten, Turn
from bridge.errors import ApiError, duplicate_item
from bridge.letting_go import empty_in_steps
from bridge.lone_surrogates import replace_lone_surrogates
from bridge.providers import PROFILES
from bridge.records import conversation_items, item_id_of, repeated_id
from bridge.store import StoreCorrupt, StoreError
from bridge.store.backends import StoreBackend
from bridge.translate.ids import new_id
from bridge.translate.stream import StreamTranslator
from bridge.translate.text_echo import echo_text
from bridge.translate.tool_list import echo_tools
from bridge.truncation import kept_share, truncate
from bridge.upstream import UpstreamClient
from bridge.wire import validation_error_parts
from bridge.wire.chat import ChatMessage
from bridge.wire.events import ResponseObject
from bridge.wire.responses import ResponsesRequest, input_items

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

_REQUEST_DECODER = msgspec.json.Decoder(ResponsesRequest)
ENCRYPTED_REASONING = "reasoning.encrypted_content"
# Bodies above this are decoded off the event loop (a large one takes seconds).
DECODE_IN_THREAD = 1024 * 1024


def parse_request(body: bytes) -> tuple[ResponsesRequest, list[Any]]:
    """The request body as a typed request and its input as items; ApiError 400 naming the
    field otherwise."""
    try:
        request = _REQUEST_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        message, path = validation_error_parts(exc)
        param = path or None
        text = f"Invalid value for '{param}': {message}" if param else message
        raise ApiError.invalid(text, param) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        repaired = replace_lone_surrogates(body) if isinstance(exc, msgspec.DecodeError) else None
        if repaired is not None:
            return parse_request(repaired)
        raise ApiError.invalid(f"The body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError.invalid("The body is nested too deeply", code="invalid_json") from None
    return request, input_items(request)


class _RawInput(ResponsesRequest):
    """The request with its input items left undecoded, for decoding one at a time."""

    input: str | list[msgspec.Raw] | None = None


_RAW_INPUT = msgspec.json.Decoder(_RawInput)
_ITEM = msgspec.json.Decoder(Any)


def _parse_large(body: bytes) -> tuple[ResponsesRequest, list[Any]]:
    """parse_request in short steps: one scan of the body, then each item on its own, so a
    thread doing it lets the event loop in between (one decode of everything would hold
    the interpreter for the whole body)."""
    try:
        raw = _RAW_INPUT.decode(body)
        items = [_ITEM.decode(item) for item in raw.input] if isinstance(raw.input, list) else None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return parse_request(body)  # the same error, worded as for any body
    fields = msgspec.structs.asdict(raw)
    if items is not None and isinstance(raw.input, list):
        empty_in_steps(raw.input)  # the items' raw JSON, no longer needed
    fields["input"] = raw.input if items is None else items
    request = ResponsesRequest(**fields)
    return request, input_items(request)


async def parse_request_off_loop(body: bytes) -> tuple[ResponsesRequest, list[Any]]:
    """parse_request; in a thread, in short steps, for a large body, so other streams go
    on meanwhile."""
    if len(body) < DECODE_IN_THREAD:
        return parse_request(body)
    return await asyncio.to_thread(_parse_large, body)


_ENCODER = msgspec.json.Encoder()
# Upstream bodies with more messages than this are encoded in a thread, message by message.
ENCODE_IN_THREAD = 5000
# Tool lists longer than this are echoed and encoded in a thread, tool by tool (100,000
# tools held the loop 1.3 s).
ECHO_IN_THREAD = 2000


def encode_messages(messages: Sequence[Any]) -> list[bytes]:
    """Each message (or tool) as JSON, one by one (in a thread, the loop gets in between)."""
    # A comprehension, not map(): the interpreter may switch threads between its steps.
    return [_ENCODER.encode(message) for message in messages]


def _many_tools(body: dict[str, Any]) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and len(tools) >= ECHO_IN_THREAD


def _split_body(body: dict[str, Any]) -> tuple[bytes, bytes]:
    """The body's JSON before and after its messages; a long tool list encoded tool by tool
    (in one step, 250,000 tools held the interpreter half a second)."""
    if not _many_tools(body):
        rest = _ENCODER.encode({**body, "messages": []})
    else:
        before, _, after = _ENCODER.encode({**body, "messages": [], "tools": []}).partition(
            b'"tools":[]'
        )
        tools = b",".join(encode_messages(body["tools"]))
        rest = b"".join((before, b'"tools":[', tools, b"]", after))
    head, _, tail = rest.partition(b'"messages":[]')
    return head, tail


@dataclass(slots=True)
class EncodedBody:
    body: UpstreamBody
    # The body's own messages (the instructions left out), each encoded; None unless asked.
    messages: list[bytes] | None = None


async def encode_upstream_body(
    body: dict[str, Any],
    *,
    context_start: int = 0,
    prefix: Prefix | None = None,
    replaces_last: bool = False,
    keep_messages: bool = False,
    large: bool = False,
) -> EncodedBody:
    """The upstream request body as JSON; a very long conversation off the loop.

    With a `prefix` (a WebSocket's conversation) its encoded messages go between the
    instructions (`messages[:context_start]`) and the body's own messages, its last one
    left out when `replaces_last`. `keep_messages` keeps each of the body's own messages
    encoded, for the conversation's next turn. A `large` request's is always encoded in a
    thread.
    """
    messages: list[ChatMessage] = body["messages"]
    earlier: Sequence[bytes] = ()
    if prefix is not None:
        earlier = prefix.pieces[:-1] if replaces_last else prefix.pieces
    large = large or len(messages) + len(earlier) >= ENCODE_IN_THREAD or _many_tools(body)
    if prefix is None and not keep_messages and not large:
        return EncodedBody(UpstreamBody.of(_ENCODER.encode(body)))
    assemble = functools.partial(_assemble, body, context_start, earlier, keep=keep_messages)
    if not large:
        return assemble()
    return await asyncio.to_thread(assemble)


def _assemble(
    body: dict[str, Any], context_start: int, earlier: Sequence[bytes], *, keep: bool
) -> EncodedBody:
    """The body from its encoded messages, `earlier` going after the instructions; a long
    one in a few large pieces (CPU-bound: in a thread for a long conversation)."""
    head, tail = _split_body(body)
    encoded = encode_messages(body["messages"])
    own = encoded[context_start:]
    pieces = join_messages(head, [*encoded[:context_start], *earlier, *own], tail)
    if len(pieces) < ENCODE_IN_THREAD:
        return EncodedBody(UpstreamBody(pieces), own if keep else None)
    return EncodedBody(UpstreamBody.in_runs(pieces), own if keep else None)


def unknown_model(config: Config, name: str) -> ApiError:
    known = ", ".join(sorted(config.models)) or "none configured"
    return ApiError(
        404,
        f"The model '{name}' does not exist. Configured models: {known}",
        param="model",
        code="model_not_found",
    )


def keyless_model(config: Config, name: str) -> ApiError:
    """A model whose provider has no API key where the bridge runs (it started in the demo
    mode, bridge.demo)."""
    provider = config.models[name].provider
    variable = config.providers[provider].api_key_env
    return ApiError(
        404,
        f"The model '{name}' cannot be used: its provider {provider} needs an API key, and "
        f"{variable} is not set where the bridge runs. Set it and restart the bridge; until "
        "then only the demo model answers.",
        param="model",
        code="model_not_found",
    )


async def echo_tools_off_loop(tools: list[msgspec.Raw], large: bool) -> list[msgspec.Raw]:
    """echo_tools; in a thread for a long list (or a large request), so other streams go on
    meanwhile."""
    if not large and len(tools) < ECHO_IN_THREAD:
        return echo_tools(tools)
    return await asyncio.to_thread(echo_tools, tools)


def response_template(req: ResponsesRequest, tools: list[msgspec.Raw]) -> ResponseObject:
    """The response object as it starts: the request's settings echoed (its `tools` as
    echo_tools gives them), no output yet."""
    return ResponseObject(
        id=new_id("resp"),
        created_at=int(time.time()),
        model=req.model,
        instructions=req.instructions,
        metadata=req.metadata or {},
        parallel_tool_calls=req.parallel_tool_calls
        if req.parallel_tool_calls is not None
        else True,
        temperature=_or(req.temperature, 1.0),
        top_p=_or(req.top_p, 1.0),
        presence_penalty=_or(req.presence_penalty, 0.0),
        frequency_penalty=_or(req.frequency_penalty, 0.0),
        top_logprobs=_or(req.top_logprobs, 0),
        max_output_tokens=req.max_output_tokens,
        max_tool_calls=req.max_tool_calls,
        tool_choice=req.tool_choice if req.tool_choice is not None else "auto",
        tools=tools,
        previous_response_id=req.previous_response_id,
        reasoning=msgspec.to_builtins(req.reasoning) if req.reasoning else None,
        text=echo_text(msgspec.to_builtins(req.text) if req.text is not None else None),
        store=req.store if req.store is not None else True,
        background=bool(req.background),
        truncation=req.truncation or "disabled",
        user=req.user,
        safety_identifier=req.safety_identifier,
        prompt_cache_key=req.prompt_cache_key,
    )


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


SERVICE_TIERS = (None, "auto", "default")


def refuse_unsupported(req: ResponsesRequest) -> None:
    """A 400 naming the first field set to something a Chat Completions upstream cannot
    do: better than an answer that silently ignores it."""

    def refuse(param: str, why: str) -> ApiError:
        return ApiError.invalid(f"'{param}' is not supported by responses-bridge: {why}", param)

    if req.prompt is not None:
        raise refuse(
            "prompt",
            "prompt templates live on OpenAI's platform; send instructions and input instead",
        )
    if req.top_logprobs:
        raise refuse("top_logprobs", "log probabilities are not passed through")
    if req.max_tool_calls is not None:
        raise refuse(
            "max_tool_calls",
            "a Chat Completions upstream cannot be held to a number of tool calls",
        )
    if req.service_tier not in SERVICE_TIERS:
        raise refuse("service_tier", "providers behind the bridge have one service tier")
    if req.truncation not in (None, "auto", "disabled"):
        raise ApiError.invalid(
            f"Invalid value for 'truncation': {req.truncation!r} (auto or disabled)",
            "truncation",
        )
    if req.background and req.store is False:
        raise ApiError.invalid(
            "A background response must be stored ('store' true): it is read back from the store.",
            "background",
        )


def conversation_of(req: ResponsesRequest) -> str | None:
    """The id of the conversation a request names (a string or {"id": ...})."""
    value = req.conversation
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise ApiError.invalid(
            "Invalid value for 'conversation': a conversation id, or {\"id\": ...}",
            "conversation",
        )
    if req.previous_response_id is not None:
        raise ApiError.invalid(
            "Use either 'previous_response_id' or 'conversation', not both",
            "conversation",
        )
    return value


async def conversation_history(
    store: StoreBackend, conversation_id: str, client: str
) -> StoredHistory:
    """The items of the conversation a request names (404 when it is not the client's)."""
    found = await store.conversation_items(conversation_id, client)
    if found is None:
        raise ApiError(
            404,
            f"Conversation with id '{conversation_id}' not found.",
            param="conversation",
            code="not_found",
        )
    items = [_ITEM.decode(body) for body in found]
    return StoredHistory(items, f"c:{conversation_id}")


def _appending(
    record: Recorder,
    store: StoreBackend,
    conversation_id: str,
    client: str,
    items: list[Any],
    response: ResponseObject,
) -> Recorder:
    """The turn's record, then its input and output appended to its conversation (for a
    turn that gave an answer; a failed or cancelled one leaves the conversation as it was)."""

    async def record_and_append() -> bool:
        stored = await record()
        if response.status not in ("completed", "incomplete"):
            return stored
        added = conversation_items(items) + conversation_items(msgspec.to_builtins(response.output))
        try:
            appended = await store.append_conversation(conversation_id, client, added)
        except (sqlite3.Error, StoreCorrupt, StoreError) as exc:
            log.error("response %s not added to %s: %s", response.id, conversation_id, exc)
            return stored
        if appended is None:
            log.warning(
                "response %s: conversation %s was deleted meanwhile", response.id, conversation_id
            )
        return stored

    return record_and_append


_MESSAGES = msgspec.json.Decoder(list[ChatMessage])


def _shortener(
    body: dict[str, Any], log_label: str, context_start: int = 0, earlier: Sequence[bytes] = ()
) -> Shorten:
    """`truncation: "auto"`: the body without its oldest turns, sized by the provider's
    refusal. `earlier`: the encoded messages a WebSocket kept of the conversation, which go
    between the instructions and the body's own messages; the shorter body carries them
    all itself."""

    async def shorten(error: ApiError) -> UpstreamBody | None:
        own: list[ChatMessage] = body["messages"]
        messages = own
        if earlier:
            kept_before = _MESSAGES.decode(b"[" + b",".join(earlier) + b"]")
            messages = [*own[:context_start], *kept_before, *own[context_start:]]
        kept = truncate(messages, kept_share(error.message))
        if kept is None:
            return None
        log.info(
            "%s: the provider refused the input's length; sending it again without its "
            "%d oldest messages (truncation: auto)",
            log_label,
            len(messages) - len(kept),
        )
        encoded = await encode_upstream_body({**body, "messages": kept})
        return encoded.body

    return shorten


def _wants_summary(req: ResponsesRequest, setting: str) -> bool:
    """Whether reasoning is mirrored as a summary: per model, or as the request asks."""
    if setting != "auto":
        return setting == "always"
    summary = req.reasoning.summary if req.reasoning else None
    return summary is not None and summary != "none"


@dataclass(slots=True)
class PreparedTurn:
    """A turn and what its transport needs to know about it."""

    request: ResponsesRequest
    model: ModelConfig
    turn: Turn
    planned: PlannedTurn
    # The body's own messages encoded (keep_messages), for a WebSocket's next turn.
    messages: list[bytes] | None = None


def store_errors_as_503(setup: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A store that cannot be used while a turn is set up (away, or its schema migrated
    by a newer release) is a 503 in the error shape, on every transport."""

    @functools.wraps(setup)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await setup(*args, **kwargs)
        except StoreError as exc:
            raise ApiError.server(
                f"The bridge's database is unavailable: {exc}", status=503
            ) from None

    return guarded


@store_errors_as_503
async def setup_turn(
    req: ResponsesRequest,
    items: list[Any],
    *,
    config: Config,
    store: StoreBackend,
    upstreams: dict[str, UpstreamClient],
    client: str,
    headers: CIMultiDictProxy[str],
    log_label: str,
    prefix: Prefix | None = None,
    generate: bool = True,
    keep_messages: bool = False,
    large: bool = False,
) -> PreparedTurn:
    """Plan a parsed request into a turn (ApiError for a request that cannot be served).

    `client` is who the client is (bridge.access.check_client_key), for every read and
    write of the turn. A WebSocket passes the `prefix` it kept of the conversation, if any,
    and asks to `keep_messages`; `generate` False makes a turn that answers without the
    upstream. A `large` request (a body of DECODE_IN_THREAD bytes or more) does its
    CPU-bound steps in threads, so other streams go on meanwhile.
    """
    model = config.models.get(req.model)
    if model is None:
        raise unknown_model(config, req.model)
    refuse_unsupported(req)
    store.health.check_usable()  # every turn is recorded: none starts on an unusable schema
    provider = config.providers[model.provider]
    upstream = upstreams.get(model.provider)
    if upstream is None:
        raise keyless_model(config, req.model)
    items = await resolve_item_references(store, items, client)
    conversation_id = conversation_of(req)
    history = None
    if conversation_id is not None:
        history = await conversation_history(store, conversation_id, client)
        # One id per item, the same in the response's input_items and in the conversation.
        items = [
            {**item, "id": item_id_of(item)}
            if isinstance(item, dict) and not item.get("id")
            else item
            for item in items
        ]
        repeated = repeated_id([item["id"] if isinstance(item, dict) else "" for item in items])
        if repeated is not None:
            raise duplicate_item(*repeated, "input")
    planned = await plan_turn(
        store,
        req,
        items,
        config.upstream_model(req.model),
        provider,
        client=client,
        headers=headers,
        images=config.takes_images(req.model),
        prefix=prefix,
        stored=history,
        large=large,
    )
    plan = planned.plan
    encoded = await encode_upstream_body(
        plan.body,
        context_start=plan.context_start,
        prefix=prefix,
        replaces_last=plan.builder is not None and plan.builder.replaces_last,
        keep_messages=keep_messages,
        large=large,
    )
    body = encoded.body
    if config.server.log_bodies and log.isEnabledFor(logging.DEBUG):
        log.debug("upstream request for %s: %s", log_label, body.as_bytes().decode())
    translator = StreamTranslator(
        response_template(req, await echo_tools_off_loop(req.tools or [], large)),
        plan.tool_map,
        include_encrypted_reasoning=ENCRYPTED_REASONING in (req.include or ()),
        reasoning_summary=_wants_summary(req, model.reasoning_summary),
        quirks=provider.quirks,
        reasoning_events=config.server.reasoning_events,
        dialect=PROFILES[provider.profile].dialect,
        output_check=plan.output_check,
    )
    if conversation_id is not None:
        translator.response.conversation = {"id": conversation_id}
    record = turn_recorder(store, req, items, translator.response, planned, headers, large=large)
    if conversation_id is not None:
        record = _appending(record, store, conversation_id, client, items, translator.response)
    shorten = None
    if req.truncation == "auto" and generate:
        earlier: Sequence[bytes] = ()
        if prefix is not None:
            replaced = plan.builder is not None and plan.builder.replaces_last
            earlier = prefix.pieces[:-1] if replaced else prefix.pieces
        shorten = _shortener(plan.body, log_label, plan.context_start, earlier)
    turn = Turn(
        upstream=upstream,
        body=body,
        translator=translator,
        record=record,
        # A background turn's followers get keep-alive comments instead (bridge.background):
        # a heartbeat carries the whole output so far, and would be stored with the events.
        heartbeat_interval=None if req.background else config.server.heartbeat_interval,
        authorization=headers.get("Authorization") if provider.forward_client_key else None,
        generate=generate,
        shorten=shorten,
    )
    return PreparedTurn(req, model, turn, planned, encoded.messages)
