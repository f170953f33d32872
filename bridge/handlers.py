"""HTTP handlers: parse, delegate to the translators and the relay, answer."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web
from aiohttp_sse import EventSourceResponse

from bridge.access import bearer_token
from bridge.app_keys import CLIENT, CONFIG, REQUEST_LOG, STORE, TURNS, UPSTREAMS
from bridge.config import ProviderConfig
from bridge.conversation import plan_turn, turn_recorder
from bridge.errors import ApiError
from bridge.relay import BeforeFinal, EventSink, encode_frames, relay_turn
from bridge.scope import client_identity
from bridge.store import ItemNotFound
from bridge.translate.ids import new_id
from bridge.translate.stream import StreamTranslator
from bridge.turns import TurnAborted
from bridge.upstream import UpstreamClient
from bridge.wire import validation_error_parts
from bridge.wire.events import ResponseEvent, ResponseObject
from bridge.wire.responses import ResponsesRequest, input_items

log = logging.getLogger(__name__)

_BODY_ENCODER = msgspec.json.Encoder()
_REQUEST_DECODER = msgspec.json.Decoder(ResponsesRequest)
ENCRYPTED_REASONING = "reasoning.encrypted_content"


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=_BODY_ENCODER.encode(payload), status=status, content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is alive and answering."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: config loaded and the database writable; 503 otherwise or when stopping."""
    problems = await request.app[STORE].write_problem()
    if request.app[TURNS].draining:
        problems = problems or "shutting down"
    body = {
        "status": "unavailable" if problems else "ready",
        "config": request.app[CONFIG].source,
        "database": problems or "ok",
    }
    return json_response(body, status=503 if problems else 200)


def _model_object(name: str, provider: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": provider}


def _unknown_model(request: web.Request, name: str) -> ApiError:
    known = ", ".join(sorted(request.app[CONFIG].models)) or "none configured"
    return ApiError(
        404,
        f"The model '{name}' does not exist. Configured models: {known}",
        param="model",
        code="model_not_found",
    )


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models: the client model names of the config, in OpenAI's list shape."""
    models = request.app[CONFIG].models
    data = [_model_object(name, model.provider) for name, model in models.items()]
    return json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    """GET /v1/models/{model}."""
    name = request.match_info["model"]
    model = request.app[CONFIG].models.get(name)
    if model is None:
        raise _unknown_model(request, name)
    return json_response(_model_object(name, model.provider))


def parse_request(body: bytes) -> tuple[ResponsesRequest, list[Any]]:
    """The request body as a typed request and its input as items; ApiError 400 naming the
    field otherwise."""
    try:
        request = _REQUEST_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        message, path = validation_error_parts(exc)
        param = path or None
        text = f"Invalid value for '{param}': {message}" if param else message
        raise ApiError(400, text, param=param, code="invalid_value") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "The body is nested too deeply", code="invalid_json") from None
    return request, input_items(request)


def _client(request: web.Request, provider: ProviderConfig) -> str:
    """Whose conversation this is: the client key's identity; with a provider that forwards
    the client's own key, that key's."""
    client = request[CLIENT]
    if not client and provider.forward_client_key:
        client = client_identity(bearer_token(request))
    return client


def _response_template(req: ResponsesRequest) -> ResponseObject:
    """The response object as it starts: the request's settings echoed, no output yet."""
    text: dict[str, Any] = {"format": {"type": "text"}}
    if req.text is not None:
        text = msgspec.to_builtins(req.text)
        if text.get("format") is None:
            text["format"] = {"type": "text"}
    return ResponseObject(
        id=new_id("resp"),
        created_at=int(time.time()),
        model=req.model,
        instructions=req.instructions,
        metadata=req.metadata or {},
        parallel_tool_calls=req.parallel_tool_calls
        if req.parallel_tool_calls is not None
        else True,
        temperature=req.temperature,
        top_p=req.top_p,
        max_output_tokens=req.max_output_tokens,
        tool_choice=req.tool_choice if req.tool_choice is not None else "auto",
        tools=req.tools,
        previous_response_id=req.previous_response_id,
        reasoning=msgspec.to_builtins(req.reasoning) if req.reasoning else None,
        text=text,
        store=req.store if req.store is not None else True,
        user=req.user,
    )


async def create_response(request: web.Request) -> web.StreamResponse:
    """POST /v1/responses: translate, relay, and stream (or return) the response."""
    config = request.app[CONFIG]
    store = request.app[STORE]
    if request.app[TURNS].draining:
        raise SHUTTING_DOWN
    req, items = parse_request(await request.read())
    model = config.models.get(req.model)
    if model is None:
        raise _unknown_model(request, req.model)
    entry = request[REQUEST_LOG]
    entry.model, entry.provider = req.model, model.provider
    provider = config.providers[model.provider]
    planned = await plan_turn(
        store,
        req,
        items,
        config.upstream_model(req.model),
        provider,
        client=_client(request, provider),
        headers=request.headers,
    )
    plan = planned.plan
    body = msgspec.json.encode(plan.body)
    if config.server.log_bodies and log.isEnabledFor(logging.DEBUG):
        log.debug("upstream request for %s: %s", entry.request_id, body.decode())
    translator = StreamTranslator(
        _response_template(req),
        plan.tool_map,
        include_encrypted_reasoning=ENCRYPTED_REASONING in (req.include or ()),
        reasoning_summary=_wants_summary(req, model.reasoning_summary),
        quirks=provider.quirks,
    )
    client_key = request.headers.get("Authorization") if provider.forward_client_key else None
    turn = Turn(
        upstream=request.app[UPSTREAMS][model.provider],
        body=body,
        translator=translator,
        record=turn_recorder(store, req, items, translator.response, planned, request.headers),
        client_authorization=client_key,
    )
    entry.response_id = translator.response.id
    if not req.stream:
        return await _respond_whole(request, turn)
    return await _respond_stream(request, turn, config.server.heartbeat_interval)


def _wants_summary(req: ResponsesRequest, setting: str) -> bool:
    """Whether reasoning is mirrored as a summary: per model, or as the request asks."""
    if setting != "auto":
        return setting == "always"
    summary = req.reasoning.summary if req.reasoning else None
    return summary is not None and summary != "none"


@dataclass(slots=True)
class Turn:
    """What a response needs once the request is understood."""

    upstream: UpstreamClient
    body: bytes
    translator: StreamTranslator
    record: BeforeFinal
    # The client's own Authorization header, for providers with forward_client_key.
    client_authorization: str | None = None

    def ended(self, request: web.Request) -> None:
        """Note how the response ended, for the access log (and the body, if asked)."""
        entry = request[REQUEST_LOG]
        response = self.translator.response
        entry.outcome = response.status
        if request.app[CONFIG].server.log_bodies and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "response for %s: %s", entry.request_id, _BODY_ENCODER.encode(response).decode()
            )
        if response.usage is not None:
            entry.input_tokens = response.usage.input_tokens
            entry.output_tokens = response.usage.output_tokens


async def _discard(events: list[ResponseEvent]) -> None:
    """The sink of a non-streaming request: only the final response object matters."""


SHUTTING_DOWN = ApiError(
    503,
    "responses-bridge is shutting down; send the request again in a moment",
    type="server_error",
    code="server_error",
)


async def _relay(request: web.Request, turn: Turn, sink: EventSink) -> ApiError | None:
    """relay_turn as a turn in flight: a shutdown that cannot wait for it ends it failed."""
    translator = turn.translator
    try:
        return await request.app[TURNS].run(
            relay_turn(
                turn.upstream,
                turn.body,
                translator,
                sink,
                turn.record,
                authorization=turn.client_authorization,
            ),
            lambda: translator.ended,
        )
    except TurnAborted:
        final = translator.fail(SHUTTING_DOWN)
        await turn.record()
        await sink(final)
        return SHUTTING_DOWN


async def _respond_whole(request: web.Request, turn: Turn) -> web.Response:
    translator = turn.translator
    error = await _relay(request, turn, _discard)
    turn.ended(request)
    if error is not None:
        raise error
    return json_response(translator.response)


async def _respond_stream(
    request: web.Request, turn: Turn, heartbeat_interval: float
) -> web.StreamResponse:
    translator = turn.translator
    response = EventSourceResponse(allow_all_methods=True, sep="\n")
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    last_write = loop.time()

    async def send(events: list[ResponseEvent]) -> None:
        nonlocal last_write
        last_write = loop.time()
        await response.write(encode_frames(events))

    async def heartbeat() -> None:
        # Thinking models may be silent for minutes; clients time out on missing events.
        while True:
            await asyncio.sleep(max(0.0, last_write + heartbeat_interval - loop.time()))
            if loop.time() - last_write >= heartbeat_interval:
                await send([translator.heartbeat()])

    beat = asyncio.create_task(heartbeat())
    try:
        await send(translator.start())
        await _relay(request, turn, send)
        turn.ended(request)
        await response.write_eof()
    except ConnectionResetError:
        # The client went away (a write failed before aiohttp cancelled this handler);
        # leaving relay_turn closed the upstream request.
        log.info("client disconnected during %s", translator.response.id)
    finally:
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        response.stop_streaming()
    return response


def _response_id(request: web.Request) -> str:
    return request.match_info["response_id"]


def _response_not_found(response_id: str) -> ApiError:
    return ApiError(
        404,
        f"Response with id '{response_id}' not found.",
        param="response_id",
        code="not_found",
    )


async def get_response(request: web.Request) -> web.Response:
    """GET /v1/responses/{id}: a stored response (not those created with store: false)."""
    response_id = _response_id(request)
    stored = await request.app[STORE].get_response(response_id, request[CLIENT])
    if stored is None:
        raise _response_not_found(response_id)
    return web.Response(body=stored, content_type="application/json")


async def delete_response(request: web.Request) -> web.Response:
    """DELETE /v1/responses/{id}."""
    response_id = _response_id(request)
    if not await request.app[STORE].delete_response(response_id, client=request[CLIENT]):
        raise _response_not_found(response_id)
    return json_response({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(request: web.Request) -> web.Response:
    """GET /v1/responses/{id}/input_items: OpenAI's list shape with limit, order, after."""
    response_id = _response_id(request)
    query = request.query
    limit = _int_param(query.get("limit", "20"), "limit", 1, 100)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be 'asc' or 'desc'", param="order", code="invalid_value")
    try:
        page = await request.app[STORE].input_items(
            response_id,
            request[CLIENT],
            limit=limit,
            descending=order == "desc",
            after=query.get("after"),
        )
    except ItemNotFound as exc:
        raise ApiError(
            400, f"No input item with id '{exc}'", param="after", code="invalid_value"
        ) from None
    if page is None:
        raise _response_not_found(response_id)
    data = page.items
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


def _int_param(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ApiError(
            400, f"{name} must be an integer from {low} to {high}", param=name, code="invalid_value"
        )
    return number
