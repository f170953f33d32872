"""The bridge's configuration: config.toml parsed into strict msgspec Structs."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from bridge.wire import validation_error_parts


class ConfigError(Exception):
    """A configuration problem; the message names the file and the key."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Config tables reject keys they do not know, so typos fail loudly."""


# Every number in the config has its range here, checked as the file is parsed (the error
# names the key and the bound): a value past it would hang or crash the bridge later.
DAY = 86_400.0
GIB = 1024**3
Seconds = Annotated[float, msgspec.Meta(gt=0, le=DAY)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65_535)]
# Things at a time (requests, connections, runs).
Count = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
# A size in bytes of one message, body or buffer.
Size = Annotated[int, msgspec.Meta(ge=1024, le=GIB)]


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: Port = 8787
    # Codex bodies reach several MB with images; 64 MiB leaves room for base64 images.
    max_request_bytes: Size = 64 * 1024 * 1024
    # The bodies of all requests being answered at once, in bytes (a WebSocket turn's
    # message counts as one); past it a request is refused (503, try again) before its body
    # is read. Each byte of a body costs a few more once decoded.
    max_request_bytes_in_flight: Annotated[int, msgspec.Meta(ge=1024, le=64 * GIB)] = (
        256 * 1024 * 1024
    )
    # Seconds of silence (upstream thinking, a slow store write) after which a heartbeat
    # event is sent; Codex's idle timer counts only events.
    heartbeat_interval: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0
    # A client must send its request headers within header_timeout and its body within
    # body_timeout (seconds) once they have started; a write to a client that has stopped
    # reading may wait client_stall_timeout, then its turn ends (recorded as failed).
    header_timeout: Seconds = 10.0
    body_timeout: Seconds = 60.0
    client_stall_timeout: Seconds = 60.0
    # On shutdown, how long open responses may go on before they are ended as failed.
    drain_seconds: Annotated[float, msgspec.Meta(ge=0, le=DAY)] = 30.0
    # debug | info | warning | error; `serve --log-level` overrides it.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "text" (a timestamp first, left out when stderr is systemd's journal) or "json" (one
    # object per line: time, level, logger, message).
    log_format: Literal["text", "json"] = "text"
    # Log request and response bodies (message content) at debug level. Off by default.
    log_bodies: bool = False
    # An environment variable holding the keys clients must send as bearer tokens
    # (separated by commas or spaces); unset: no client authentication.
    api_keys_env: str | None = None
    # Listening beyond loopback without client keys is refused unless this is true.
    allow_remote_without_auth: bool = False
    # The reasoning text events: "openai" (response.reasoning_text.delta/.done, what OpenAI
    # and Codex use) or "specification" (the Open Responses names, response.reasoning.*).
    reasoning_events: Literal["openai", "specification"] = "openai"
    # Background responses (`background: true`) running at once; more are refused (429).
    max_background: Count = 64
    # Web pages (their Origin, scheme://host[:port]) allowed to use the bridge, over HTTP and
    # WebSocket. A request with any other Origin is refused: by default no web page can use
    # the bridge. Command-line tools, the SDKs and Codex send no Origin.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    # Host names clients may address the bridge by, besides localhost, loopback IPs and the
    # address it listens on (e.g. a reverse proxy's public name; "*": any). Other Host headers
    # are refused, so a DNS-rebinding web page cannot reach it under a name of its own.
    allowed_hosts: list[str] = msgspec.field(default_factory=list)


class StoreConfig(_Strict):
    path: str = "bridge.db"
    # A PostgreSQL database instead of the SQLite file at `path`, for several bridges
    # sharing their state: postgresql://user@host:port/dbname (no password in it).
    url: str | None = None
    # The environment variable holding the PostgreSQL password, if the server wants one.
    password_env: str | None = None
    # "full": every turn is on disk before response.completed is sent; "normal": survives
    # a crash of the bridge but may lose the last turns on power loss (faster on slow disks).
    synchronous: Literal["full", "normal"] = "full"
    max_age_days: Annotated[float, msgspec.Meta(gt=0, le=36_500)] = 30.0
    max_size_mb: Annotated[float, msgspec.Meta(gt=0, le=1e9)] = 1024.0
    # How long a turn's write keeps trying while the database is locked or away; past it
    # the turn is kept in the spool until the database takes it.
    write_timeout: Seconds = 10.0
    # Whether `serve` brings an older database schema up to date at start ("auto"), or
    # refuses to start until `responses-bridge migrate` has ("never"). Other commands never
    # migrate.
    migrate: Literal["auto", "never"] = "auto"
    # Where turns the database could not take wait for it (absolute, or relative to the
    # state directory), and the most they may take; 0 keeps no spool.
    spool_dir: str = "spool"
    spool_max_mb: Annotated[float, msgspec.Meta(ge=0, le=1e9)] = 256.0


class UpstreamConfig(_Strict):
    connect_timeout: Seconds = 10.0
    # Longest silence tolerated between two upstream reads (including the wait for the
    # first byte); there is no total timeout because a stream may last many minutes.
    idle_timeout: Seconds = 300.0
    # Requests in flight to one provider at a time (each provider has its own share).
    max_connections: Count = 100
    # Attempts after the first, only while nothing of the answer has reached the client,
    # and only for connection errors, 502/503/504 and 429.
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    # Longest wait before a retry; a longer Retry-After is passed on to the client instead.
    max_retry_wait: Seconds = 10.0
    # The largest answer a provider may send: a stream's text, reasoning and tool calls
    # together, or the one JSON body of a provider that ignores `stream: true`; and the
    # largest single event of a stream. Past them the upstream request is closed and the
    # turn fails with a clear error.
    max_answer_bytes: Size = 32 * 1024 * 1024
    max_event_bytes: Size = 16 * 1024 * 1024


class WebSocketConfig(_Strict):
    """GET /v1/responses as a WebSocket: Codex's incremental mode (supports_websockets)."""

    enabled: bool = True
    # Sockets open at a time; an upgrade past it is refused (clients fall back to HTTP).
    max_connections: Count = 32
    # The largest message a client may send: Codex's first turn on a socket carries the
    # whole conversation, images included.
    max_message_bytes: Size = 64 * 1024 * 1024
    # Per socket: how much of its conversations (translated, encoded) is kept so that a
    # turn sends only what is new; the least recently used conversations go first, and a
    # turn that names one no longer kept is asked to send everything again.
    cache_bytes: Annotated[int, msgspec.Meta(ge=1, le=64 * GIB)] = 64 * 1024 * 1024
    # Seconds between pings; a peer that does not answer within half of that is dropped.
    ping_interval: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    # Deprecated: [server] allowed_origins covers the upgrade and every HTTP endpoint; the
    # origins listed here are added to it (check-config and serve say so).
    allowed_origins: list[str] = msgspec.field(default_factory=list)


class QuirksConfig(_Strict):
    """Workarounds for provider stream quirks; all on by default, each can be turned off."""

    # <think>...</think> at the start of content becomes reasoning.
    think_tags: bool = True
    # DeepSeek "DSML" tool-call markup leaked into content becomes real tool calls.
    dsml_tool_calls: bool = True
    # `delta.reasoning` (vLLM, Ollama, OpenRouter) read as reasoning text.
    reasoning_alias: bool = True
    # A stream that ends after a finish_reason without `data: [DONE]` counts as complete.
    missing_done: bool = True
    # A new tool-call id at an index already in use starts a new call.
    repeated_call_id: bool = True
    # A tool call with empty arguments gets "{}".
    empty_arguments: bool = True


# Providers whose models take text only (DeepSeek's chat models, MiniMax M2: no image input).
TEXT_ONLY_PROFILES = frozenset({"deepseek", "minimax"})

PROFILE = Literal[
    "openai",
    "deepseek",
    "kimi",
    "glm",
    "qwen",
    "gemini",
    "minimax",
    "openrouter",
    "vllm",
    "ollama",
    "llamacpp",
    "demo",
]


class ProviderConfig(_Strict):
    # Required, except for the built-in demo model (profile "demo"), which has no address.
    base_url: str = ""
    api_key_env: str | None = None
    # Which provider this is: reasoning fields, thinking switch, parameter quirks.
    profile: PROFILE = "openai"
    # Send `developer` messages as role developer instead of folding them into system.
    developer_role: bool = False
    # Merged into every request body (tables merge, other values replace).
    extra_body: dict[str, Any] = msgspec.field(default_factory=dict)
    # Top-level request fields removed before sending.
    drop_params: list[str] = msgspec.field(default_factory=list)
    # Send the client's own Authorization header upstream instead of api_key_env's key.
    forward_client_key: bool = False
    # The name max_output_tokens goes by upstream; None: max_tokens.
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = None
    quirks: QuirksConfig = msgspec.field(default_factory=QuirksConfig)


class ModelConfig(_Strict):
    provider: str
    upstream_model: str | None = None
    # Tokens the model takes in; Codex plans compaction with it (see `codex-config`).
    context_window: Annotated[int, msgspec.Meta(ge=1024, le=1_000_000_000)] = 128_000
    # Reasoning is always sent as reasoning text; it is also mirrored as a reasoning summary
    # (which Codex shows the user) when the request asks for one ("auto"), always, or never.
    reasoning_summary: Literal["auto", "always", "never"] = "auto"
    # What the model takes in: ["text"] or ["text", "image"]. Unset: the provider profile's
    # default. Images sent to a text-only model are replaced by a short note (a provider
    # rejects them, and Codex would replay the image on every later request).
    input_modalities: list[Literal["text", "image"]] | None = None


class DebugConfig(_Strict):
    """What the bridge keeps to show what happened (GET /debug/turns, `trace`)."""

    # The last N turns kept in memory whole: the client's request, the upstream request,
    # the raw upstream stream, the events sent (secrets redacted when shown). 0: none.
    keep_turns: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    # Bytes kept of each of those four parts of a turn; beyond it the part is cut.
    max_part_bytes: Annotated[int, msgspec.Meta(ge=1, le=GIB)] = 1024 * 1024


class Config(_Strict):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    upstream: UpstreamConfig = msgspec.field(default_factory=UpstreamConfig)
    websocket: WebSocketConfig = msgspec.field(default_factory=WebSocketConfig)
    debug: DebugConfig = msgspec.field(default_factory=DebugConfig)
    providers: dict[str, ProviderConfig] = msgspec.field(default_factory=dict)
    models: dict[str, ModelConfig] = msgspec.field(default_factory=dict)
    # Where the file was read from; set by load_config, not a TOML key.
    source: str = "<memory>"

    def upstream_model(self, client_model: str) -> str:
        """The model name sent upstream for a client model name."""
        return self.models[client_model].upstream_model or client_model

    def takes_images(self, client_model: str) -> bool:
        """Whether the model takes images (its input_modalities, else its profile's)."""
        model = self.models[client_model]
        if model.input_modalities is not None:
            return "image" in model.input_modalities
        return self.providers[model.provider].profile not in TEXT_ONLY_PROFILES


_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<field>.+)`$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
T = TypeVar("T")


def _table_key(section: str, name: str) -> str:
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
        name: _convert(table, kind, source, _table_key(section, name))
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
                f"{src}: key `{_table_key('models', name)}.provider`: unknown provider "
                f"{model.provider!r} (configured providers: {known})"
            )
    for name, model in config.models.items():
        if model.input_modalities is not None and "text" not in model.input_modalities:
            raise ConfigError(
                f'{src}: key `{_table_key("models", name)}.input_modalities`: must include "text"'
            )
    for name, provider in config.providers.items():
        if not provider.base_url and provider.profile != "demo":
            raise ConfigError(
                f"{src}: key `{_table_key('providers', name)}.base_url`: required (the "
                "provider's address, e.g. https://api.deepseek.com/v1)"
            )
        if provider.profile == "demo":
            continue
        if not provider.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{src}: key `{_table_key('providers', name)}.base_url`: "
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


def used_providers(config: Config) -> set[str]:
    """The providers some model is served by."""
    return {model.provider for model in config.models.values()}


def resolve_api_keys(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """API keys by provider name, read from the environment variables the config names.

    A provider that some model uses must have its key; one that no model uses is left out
    when its variable is unset (see unset_api_keys).
    """
    used = used_providers(config)
    keys: dict[str, str] = {}
    for name, provider in config.providers.items():
        if provider.api_key_env is None:
            continue
        value = environ.get(provider.api_key_env)
        if value:
            keys[name] = value
        elif name in used:
            raise ConfigError(
                f"{config.source}: key `{_table_key('providers', name)}.api_key_env`: "
                f"environment variable {provider.api_key_env} is not set"
            )
    return keys


def unset_api_keys(config: Config, environ: Mapping[str, str]) -> list[str]:
    """What to say about each provider whose key variable is unset here."""
    used = used_providers(config)
    found: list[str] = []
    for name, provider in config.providers.items():
        if provider.api_key_env is None or environ.get(provider.api_key_env):
            continue
        key = f"{_table_key('providers', name)}.api_key_env"
        if name in used:
            found.append(
                f"{key}: environment variable {provider.api_key_env} is not set here; "
                "`serve` will refuse to start without it"
            )
        else:
            found.append(
                f"{key}: environment variable {provider.api_key_env} is not set (no model "
                "uses this provider, so `serve` does not need it)"
            )
    return found


def state_directory(environ: Mapping[str, str]) -> Path:
    """$STATE_DIRECTORY (set by systemd) or ~/.local/state/responses-bridge."""
    configured = environ.get("STATE_DIRECTORY")
    if configured:
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(configured.split(":")[0])
    return Path.home() / ".local" / "state" / "responses-bridge"


def store_path(config: Config, environ: Mapping[str, str]) -> Path:
    """The database file: absolute as configured, or relative to the state directory."""
    path = Path(config.store.path).expanduser()
    return path if path.is_absolute() else state_directory(environ) / path


def spool_path(config: Config, environ: Mapping[str, str]) -> Path | None:
    """The spool directory (bridge.store.spool), like store_path; None when it is off."""
    if config.store.spool_max_mb <= 0:
        return None
    path = Path(config.store.spool_dir).expanduser()
    return path if path.is_absolute() else state_directory(environ) / path


def resolve_client_keys(config: Config, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The keys clients must present, from the variable `[server] api_keys_env` names."""
    name = config.server.api_keys_env
    if name is None:
        return ()
    keys = tuple(key for key in re.split(r"[\s,]+", environ.get(name, "")) if key)
    if not keys:
        raise ConfigError(
            f"{config.source}: key `server.api_keys_env`: environment variable {name} is not "
            "set (or holds no key)"
        )
    return keys


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: Config, host: str, client_keys: tuple[str, ...]) -> None:
    """Refuse to listen beyond loopback without client keys, unless explicitly allowed."""
    if is_loopback(host) or client_keys or config.server.allow_remote_without_auth:
        return
    raise ConfigError(
        f"{config.source}: refusing to listen on {host} without client authentication: "
        "anyone who can reach it could spend your provider credit. Set [server] "
        "api_keys_env, listen on 127.0.0.1, or set [server] allow_remote_without_auth = true."
    )
