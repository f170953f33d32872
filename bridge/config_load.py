"""config.toml read and checked: every error names the file and the key (bridge.config has
what the tables hold)."""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from bridge.config import Config, ConfigError, ModelConfig, ProviderConfig
from bridge.wire import validation_error_parts

_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>.+)`$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
T = TypeVar("T")


def table_key(section: str, name: str) -> str:
    """`providers.deepseek` or `models."deepseek-v4-pro"`, as the docs write such keys."""
    bare = _BARE_KEY.match(name) and section != "models"
    return f"{section}.{name}" if bare else f'{section}."{name}"'


def _convert(value: Any, kind: type[T], source: str, prefix: str) -> T:
    """msgspec.convert with errors that name the file and the full TOML key."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        message, path = validation_error_parts(exc)
        key = ".".join(part for part in (prefix, path) if part)
        unknown = _UNKNOWN_RE.match(message)
        if unknown:
            full = ".".join(part for part in (key, unknown["field"]) if part)
            raise ConfigError(f"{source}: unknown key `{full}`") from None
        if message.startswith("Invalid enum value"):
            allowed = _allowed_values(kind, path)
            if allowed:
                message = f"{message} (one of: {', '.join(map(repr, allowed))})"
        if key:
            raise ConfigError(f"{source}: key `{key}`: {message}") from None
        raise ConfigError(f"{source}: {message}") from None


def _allowed_values(kind: Any, path: str) -> tuple[Any, ...]:
    """The values a Literal-typed key takes (`server.log_level` within Config), else ()."""
    current = kind
    for part in re.sub(r"\[\d+\]", "", path).split("."):
        try:
            hints = typing.get_type_hints(current)
        except TypeError:
            return ()
        current = hints.get(part)
        if current is None:
            return ()
        current = _unwrap(current)
    return typing.get_args(current) if typing.get_origin(current) is Literal else ()


def _unwrap(annotation: Any) -> Any:
    """The type inside `X | None` and `list[X]`."""
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is list or (origin in (types.UnionType, typing.Union) and len(args) == 1):
            annotation = args[0]
            continue
        return annotation


def _named_tables(raw: dict[str, Any], section: str, kind: type[T], source: str) -> dict[str, T]:
    """Each `[section.NAME]` table converted on its own, so errors can name NAME."""
    tables = raw.pop(section, {})
    if not isinstance(tables, dict):
        raise ConfigError(
            f"{source}: key `{section}`: Expected `object` (a table of [{section}.NAME] "
            f"tables), got `{type(tables).__name__}`"
        )
    return {
        name: _convert(table, kind, source, table_key(section, name))
        for name, table in tables.items()
    }


def parse_config(text: str, source: str = "<memory>") -> Config:
    """Parse config text; every error names the source and the offending key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if "source" in raw:
        # `source` is where the config was read from, never a key of the file.
        raise ConfigError(f"{source}: unknown key `source`")
    providers = _named_tables(raw, "providers", ProviderConfig, source)
    models = _named_tables(raw, "models", ModelConfig, source)
    config = _convert(raw, Config, source, "")
    config.providers = providers
    config.models = models
    config.source = source
    _check(config)
    _check_browsers(config)
    return config


def _check(config: Config) -> None:
    src = config.source
    for name, model in config.models.items():
        if model.provider not in config.providers:
            known = ", ".join(sorted(config.providers)) or "none"
            raise ConfigError(
                f"{src}: key `{table_key('models', name)}.provider`: unknown provider "
                f"{model.provider!r} (configured providers: {known})"
            )
    for name, model in config.models.items():
        if model.input_modalities is not None and "text" not in model.input_modalities:
            raise ConfigError(
                f'{src}: key `{table_key("models", name)}.input_modalities`: must include "text"'
            )
    for name, provider in config.providers.items():
        if not provider.base_url and provider.profile != "demo":
            raise ConfigError(
                f"{src}: key `{table_key('providers', name)}.base_url`: required (the "
                "provider's address, e.g. https://api.deepseek.com/v1)"
            )
        if provider.profile == "demo":
            continue
        if not provider.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{src}: key `{table_key('providers', name)}.base_url`: "
                "must start with http:// or https://"
            )
    server = config.server
    if server.max_request_bytes_in_flight < server.max_request_bytes:
        raise ConfigError(
            f"{src}: key `server.max_request_bytes_in_flight`: must be at least "
            f"`server.max_request_bytes` ({server.max_request_bytes}), or no body of the "
            "largest size could be taken"
        )
    _check_store_url(config)


def _origin(value: str, key: str, source: str) -> str:
    """An allowed origin as browsers send it: scheme://host[:port], lower case."""
    origin = value.strip().rstrip("/").lower()
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
        raise ConfigError(
            f"{source}: key `{key}`: {value!r} is not an origin (scheme://host[:port], "
            "e.g. https://app.example)"
        )
    return origin


def _check_browsers(config: Config) -> None:
    """Origins in the form browsers send them, the deprecated [websocket] allowed_origins
    added to [server]'s; host names in lower case."""
    src = config.source
    origins = [_origin(o, "server.allowed_origins", src) for o in config.server.allowed_origins]
    origins += [
        _origin(o, "websocket.allowed_origins", src) for o in config.websocket.allowed_origins
    ]
    config.server.allowed_origins = list(dict.fromkeys(origins))
    hosts = []
    for host in config.server.allowed_hosts:
        name = host.strip().lower().rstrip(".")
        if not name or "/" in name or " " in name:
            raise ConfigError(
                f"{src}: key `server.allowed_hosts`: {host!r} is not a host name (e.g. "
                'bridge.example.com, or "*" for any)'
            )
        hosts.append(name)
    config.server.allowed_hosts = hosts


def deprecations(config: Config) -> list[str]:
    """What to tell the user about deprecated keys in their config."""
    found = []
    if config.websocket.allowed_origins:
        found.append(
            "key `websocket.allowed_origins` is deprecated: [server] allowed_origins now covers "
            "the WebSocket upgrade and every HTTP endpoint; its origins are used as if listed "
            "there (move them)"
        )
    return found


def _check_store_url(config: Config) -> None:
    src = config.source
    url = config.store.url
    if url is None:
        if config.store.password_env is not None:
            raise ConfigError(
                f"{src}: key `store.password_env`: only used with a PostgreSQL `store.url`"
            )
        return
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigError(
            f"{src}: key `store.url`: a PostgreSQL URL, postgresql://user@host:port/dbname"
        )
    if parts.password is not None:
        raise ConfigError(
            f"{src}: key `store.url`: holds a password; passwords never go in the config: "
            "name the environment variable that holds it in `store.password_env`"
        )
    if importlib.util.find_spec("asyncpg") is None:
        raise ConfigError(
            f"{src}: key `store.url`: PostgreSQL needs the asyncpg package, which is not "
            "installed: pip install 'responses-bridge[postgres]' (from a checkout: "
            "pip install '.[postgres]')"
        )


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    return parse_config(text, source)
