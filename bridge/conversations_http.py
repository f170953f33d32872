"""The Conversations API in OpenAI's shapes: /v1/conversations and its items.

A conversation is a history the bridge keeps: a response request that names it gets its
items before the request's input, and its turn's input and output are appended to it
(bridge.turn_setup). Conversations are the client's own, like stored responses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from bridge.app_keys import BODIES, BODY_SHARE, CLIENT, CONFIG, STORE
from bridge.bodies import read_body
from bridge.errors import ApiError, duplicate_item
from bridge.handlers import json_response, list_params, list_response
from bridge.lone_surrogates import replace_lone_surrogates
from bridge.records import item_id_of, normalize_input_item, repeated_id
from bridge.store import ConversationRow, Item, ItemNotFound
from bridge.translate.ids import new_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Items one request may add (OpenAI's limit).
MAX_ITEMS = 20
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
ROLES = frozenset({"user", "assistant", "system", "developer"})


def conversation_object(row: ConversationRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "conversation",
        "created_at": row.created_at,
        "metadata": orjson.loads(row.metadata),
    }


def conversation_not_found(conversation_id: str) -> ApiError:
    return ApiError(
        404,
        f"Conversation with id '{conversation_id}' not found.",
        param="conversation_id",
        code="not_found",
    )


def item_not_found(item_id: str) -> ApiError:
    return ApiError(404, f"Item with id '{item_id}' not found.", param="item_id", code="not_found")


async def _json_body(request: web.Request, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object, read as every body is (bridge.bodies): within the body
    timeout, the size limit and the process's budget (held until the request ends)."""
    settings = request.app[CONFIG].server
    data = await read_body(
        request,
        request[BODY_SHARE],
        seconds=settings.body_timeout,
        limit=settings.max_request_bytes,
    )
    if not data.strip():
        if required:
            raise ApiError.invalid("The request needs a JSON body", code="invalid_json")
        return {}
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # Half an emoji from a JavaScript client (bridge.lone_surrogates): kept, replaced.
        try:
            body = orjson.loads(replace_lone_surrogates(data) or b"")
        except orjson.JSONDecodeError:
            raise ApiError.invalid(
                f"The body is not valid JSON: {exc}", code="invalid_json"
            ) from None
    if not isinstance(body, dict):
        raise ApiError.invalid("The body must be a JSON object", code="invalid_json")
    return body


def metadata_bytes(value: Any) -> bytes:
    """Metadata as OpenAI takes it: up to 16 string pairs, bounded in length."""
    if value is None:
        return b"{}"
    valid = (
        isinstance(value, dict)
        and len(value) <= MAX_METADATA_KEYS
        and all(
            isinstance(k, str)
            and isinstance(v, str)
            and len(k) <= MAX_METADATA_KEY
            and len(v) <= MAX_METADATA_VALUE
            for k, v in value.items()
        )
    )
    if not valid:
        raise ApiError.invalid(
            f"Invalid value for 'metadata': an object of up to {MAX_METADATA_KEYS} string "
            f"values (keys up to {MAX_METADATA_KEY} characters, values up to "
            f"{MAX_METADATA_VALUE})",
            "metadata",
        )
    return orjson.dumps(value)


def new_items(value: Any, param: str = "items") -> list[Item]:
    """Items a client adds, each typed and given an id (400 naming the bad one)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError.invalid(f"Invalid value for '{param}': an array of items", param)
    if len(value) > MAX_ITEMS:
        raise ApiError.invalid(
            f"Invalid value for '{param}': at most {MAX_ITEMS} items at a time", param
        )
    items = [_item(item, f"{param}[{index}]") for index, item in enumerate(value)]
    repeated = repeated_id([item_id for item_id, _ in items])
    if repeated is not None:
        raise duplicate_item(*repeated, param)
    return items


def _item(item: Any, param: str) -> Item:
    if not isinstance(item, dict) or not (item.get("type") or item.get("role")):
        raise ApiError.invalid(f"Invalid value for '{param}': an item with a type", param)
    if item.get("type") == "item_reference":
        raise ApiError.invalid(
            f"Invalid value for '{param}': a conversation holds items, not references", param
        )
    role = item.get("role")
    if (item.get("type") in (None, "message")) and role not in ROLES:
        raise ApiError.invalid(
            f"Invalid value for '{param}.role': {role!r} (user, assistant, system or developer)",
            f"{param}.role",
        )
    item_id = item_id_of(item)
    return item_id, orjson.dumps(normalize_input_item(item, item_id))


def _list(items: list[bytes], has_more: bool) -> web.Response:
    return list_response([orjson.loads(item) for item in items], has_more)


def _conversation_id(request: web.Request) -> str:
    return request.match_info["conversation_id"]


async def create_conversation(request: web.Request) -> web.Response:
    """POST /v1/conversations {metadata?, items?}."""
    body = await _json_body(request, required=False)
    metadata = metadata_bytes(body.get("metadata"))
    items = new_items(body.get("items"))
    row = await request.app[STORE].create_conversation(
        new_id("conv"), request[CLIENT], metadata, items
    )
    return json_response(conversation_object(row))


async def get_conversation(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    row = await request.app[STORE].get_conversation(conversation_id, request[CLIENT])
    if row is None:
        raise conversation_not_found(conversation_id)
    return json_response(conversation_object(row))


async def update_conversation(request: web.Request) -> web.Response:
    """POST /v1/conversations/{id} {metadata}: the metadata replaced."""
    conversation_id = _conversation_id(request)
    body = await _json_body(request, required=True)
    if "metadata" not in body:
        raise ApiError.invalid("Missing required parameter: 'metadata'", "metadata")
    metadata = metadata_bytes(body["metadata"])
    row = await request.app[STORE].update_conversation(conversation_id, request[CLIENT], metadata)
    if row is None:
        raise conversation_not_found(conversation_id)
    return json_response(conversation_object(row))


async def delete_conversation(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    if not await request.app[STORE].delete_conversation(conversation_id, request[CLIENT]):
        raise conversation_not_found(conversation_id)
    return json_response({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


async def list_items(request: web.Request) -> web.Response:
    """GET /v1/conversations/{id}/items: limit (1-100), order (desc by default), after."""
    conversation_id = _conversation_id(request)
    limit, descending, after = list_params(request)
    try:
        page = await request.app[STORE].conversation_page(
            conversation_id, request[CLIENT], limit=limit, descending=descending, after=after
        )
    except ItemNotFound as exc:
        raise ApiError.invalid(f"No item with id '{exc}' in this conversation", "after") from None
    if page is None:
        raise conversation_not_found(conversation_id)
    return _list(page.items, page.has_more)


async def add_items(request: web.Request) -> web.Response:
    """POST /v1/conversations/{id}/items {items}: up to 20 items added at the end."""
    conversation_id = _conversation_id(request)
    body = await _json_body(request, required=True)
    if "items" not in body:
        raise ApiError.invalid("Missing required parameter: 'items'", "items")
    items = new_items(body["items"])
    added = await request.app[STORE].append_conversation(conversation_id, request[CLIENT], items)
    if added is None:
        raise conversation_not_found(conversation_id)
    return _list(added, False)


async def get_item(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    item_id = request.match_info["item_id"]
    store = request.app[STORE]
    body = await store.conversation_item(conversation_id, request[CLIENT], item_id)
    if body is None:
        if await store.get_conversation(conversation_id, request[CLIENT]) is None:
            raise conversation_not_found(conversation_id)
        raise item_not_found(item_id)
    return web.Response(body=body, content_type="application/json")


async def delete_item(request: web.Request) -> web.Response:
    """DELETE /v1/conversations/{id}/items/{item_id}: answers the conversation."""
    conversation_id = _conversation_id(request)
    item_id = request.match_info["item_id"]
    store = request.app[STORE]
    client = request[CLIENT]
    deleted = await store.delete_conversation_item(conversation_id, client, item_id)
    row = await store.get_conversation(conversation_id, client)
    if row is None:
        raise conversation_not_found(conversation_id)
    if not deleted:
        raise item_not_found(item_id)
    return json_response(conversation_object(row))


def _holding_body(handler: Handler) -> Handler:
    """`handler` with a share of the body budget for its request (see _json_body)."""

    async def with_share(request: web.Request) -> web.StreamResponse:
        with request.app[BODIES].share() as share:
            request[BODY_SHARE] = share
            return await handler(request)

    return with_share


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/v1/conversations", _holding_body(create_conversation))
    router.add_get("/v1/conversations/{conversation_id}", get_conversation)
    router.add_post("/v1/conversations/{conversation_id}", _holding_body(update_conversation))
    router.add_delete("/v1/conversations/{conversation_id}", delete_conversation)
    router.add_get("/v1/conversations/{conversation_id}/items", list_items)
    router.add_post("/v1/conversations/{conversation_id}/items", _holding_body(add_items))
    router.add_get("/v1/conversations/{conversation_id}/items/{item_id}", get_item)
    router.add_delete("/v1/conversations/{conversation_id}/items/{item_id}", delete_item)
