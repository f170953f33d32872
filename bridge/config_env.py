"""What a config means where the bridge runs: the keys it reads from the environment, where its
state is, and whether its address may be listened on."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path

from bridge.config import Config, ConfigError
from bridge.config_load import table_key

# Where a client such as Codex (`env_key` in its provider table) and `trace` read the key
# they send to the bridge.
CLIENT_KEY_ENV = "RESPONSES_BRIDGE_API_KEY"


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
                f"{config.source}: key `{table_key('providers', name)}.api_key_env`: "
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
        key = f"{table_key('providers', name)}.api_key_env"
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


def spool_directory(spool: Path, database: str) -> Path:
    """The spool of one database inside the configured spool directory: bridges on the same
    database share it, and no other database's bridge ever writes its entries."""
    return spool / f"db-{hashlib.sha256(database.encode()).hexdigest()[:16]}"


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


def local_url(config: Config) -> str:
    """Where a client on this machine reaches the bridge: its listening address (a wildcard
    address answers on loopback), without /v1."""
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"
