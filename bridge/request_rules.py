"""What a request may ask of the bridge: a 400 or 404 naming the field for what it cannot
serve (pure)."""

from __future__ import annotations

from bridge.config import Config
from bridge.errors import ApiError
from bridge.wire.responses import ResponsesRequest


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
