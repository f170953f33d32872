"""The bridge's configuration: config.toml parsed into strict msgspec Structs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec


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
    # The whole of a non-streamed answer (a request with `stream` false asks the provider
    # for one JSON answer): from sending the request to its last byte, thinking included.
    answer_timeout: Seconds = 600.0
    # Requests in flight to one provider at a time (each provider has its own share).
    max_connections: Count = 100
    # Attempts after the first, only while nothing of the answer has reached the client,
    # and only for connection errors, 502/503/504 and 429.
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    # Longest wait before a retry; a longer Retry-After is passed on to the client instead.
    max_retry_wait: Seconds = 10.0
    # The largest answer a provider may send: a stream's text, reasoning and tool calls
    # together, or the one JSON body of a non-streamed answer; and the largest single
    # event of a stream. Past them the upstream request is closed and the turn fails with
    # a clear error.
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
