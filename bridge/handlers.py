"""HTTP handlers for everything but creating a response (bridge.sse_transport): health,
models, and the stored responses."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from bridge import __version__
from bridge.app_keys import CLIENT, CONFIG, STORE, TURNS
from bridge.errors import ApiError
from bridge.request_rules import unknown_model
from bridge.store import ItemNotFound

log = logging.getLogger(__name__)

_BODY_ENCODER = msgspec.json.Encoder()


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=_BODY_ENCODER.encode(payload), status=status, content_type="application/json"
    )


def _schema(request: web.Request) -> dict[str, int]:
    """The database's schema version as last read, and the newest this release knows."""
    schema = request.app[STORE].health.schema
    return {"database": schema.version, "bridge": schema.latest}


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: the process is alive and answering (asks the database nothing)."""
    return json_response({"status": "ok", "version": __version__, "schema": _schema(request)})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: config loaded, the database writable and its schema usable; 503
    otherwise or when stopping. Also how many writes wait in the spool."""
    store = request.app[STORE]
    problems = await store.write_problem()
    if request.app[TURNS].draining:
        problems = problems or "shutting down"
    body = {
        "status": "unavailable" if problems else "ready",
        "config": request.app[CONFIG].source,
        "database": problems or "ok",
        "schema": _schema(request),
        "spooled": store.health.pending,
    }
    return json_response(body, status=503 if problems else 200)


def _model_object(name: str, provider: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": provider}


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
        raise unknown_model(request.app[CONFIG], name)
    return json_response(_model_object(name, model.provider))


def response_id_of(request: web.Request) -> str:
    return request.match_info["response_id"]


def response_not_found(response_id: str) -> ApiError:
    return ApiError(
        404,
        f"Response with id '{response_id}' not found.",
        param="response_id",
        code="not_found",
    )


async def delete_response(request: web.Request) -> web.Response:
    """DELETE /v1/responses/{id}."""
    response_id = response_id_of(request)
    if not await request.app[STORE].delete_response(response_id, client=request[CLIENT]):
        raise response_not_found(response_id)
    return json_response({"id": response_id, "object": "response.deleted", "deleted": True})


async def list_input_items(request: web.Request) -> web.Response:
    """GET /v1/responses/{id}/input_items: OpenAI's list shape with limit, order, after."""
    response_id = response_id_of(request)
    limit, descending, after = list_params(request)
    try:
        page = await request.app[STORE].input_items(
            response_id, request[CLIENT], limit=limit, descending=descending, after=after
        )
    except ItemNotFound as exc:
        raise ApiError(
            400, f"No input item with id '{exc}'", param="after", code="invalid_value"
        ) from None
    if page is None:
        raise response_not_found(response_id)
    return list_response(page.items, page.has_more)


def list_params(request: web.Request) -> tuple[int, bool, str | None]:
    """A list's query: limit (1-100, default 20), whether descending (order, desc by
    default), and the item id to start after."""
    query = request.query
    limit = int_param(query.get("limit", "20"), "limit", 1, 100)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be 'asc' or 'desc'", param="order", code="invalid_value")
    return limit, order == "desc", query.get("after")


def list_response(data: list[Any], has_more: bool) -> web.Response:
    """OpenAI's list shape."""
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


def int_param(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ApiError(
            400, f"{name} must be an integer from {low} to {high}", param=name, code="invalid_value"
        )
    return number
