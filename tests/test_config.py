"""config.toml: the shipped file, strict parsing, errors naming file and key, keys and paths."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import msgspec
import pytest

from bridge.config import (
    Config,
    ConfigError,
    DebugConfig,
    ModelConfig,
    ProviderConfig,
    ServerConfig,
    StoreConfig,
    UpstreamConfig,
    WebSocketConfig,
)
from bridge.config_env import resolve_api_keys, store_path, unset_api_keys
from bridge.config_load import load_config, parse_config
from bridge.effective_config import effective_toml

SHIPPED = Path(__file__).resolve().parent.parent / "config.toml"
SOURCE = "/etc/responses-bridge/test-config.toml"

# A minimal valid config that the error cases below extend with one mistake each.
PROVIDER = """
[providers.localllm]
base_url = "http://127.0.0.1:11434/v1"
"""
MODEL = (
    PROVIDER
    + """
[models."gpt-test-model"]
provider = "localllm"
"""
)


def config_error(text: str) -> str:
    """The ConfigError message parsing `text` raises; fails the test if it parses."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, SOURCE)
    return str(info.value)


# The shipped config.toml


def test_shipped_config_parses_with_the_keys_it_shows() -> None:
    config = load_config(SHIPPED)

    assert config.source == str(SHIPPED)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8787
    assert config.store.path == "bridge.db"
    assert config.providers == {
        "deepseek": ProviderConfig(
            base_url="https://api.deepseek.com/v1",
            api_key_env="DEEPSEEK_API_KEY",
            profile="deepseek",
            max_tokens_param="max_tokens",
        ),
        "demo": ProviderConfig(profile="demo"),
    }
    assert config.models == {
        "deepseek-v4-pro": ModelConfig(
            provider="deepseek", upstream_model="deepseek-v4-pro", input_modalities=["text"]
        ),
        "deepseek-v4-flash": ModelConfig(provider="deepseek"),
        "demo": ModelConfig(provider="demo"),
    }


def test_shipped_config_parses_the_same_from_text() -> None:
    from_text = parse_config(SHIPPED.read_text(encoding="utf-8"), str(SHIPPED))

    assert from_text == load_config(SHIPPED)


def test_upstream_model_defaults_to_the_client_name() -> None:
    config = load_config(SHIPPED)

    assert config.upstream_model("deepseek-v4-pro") == "deepseek-v4-pro"
    assert config.upstream_model("deepseek-v4-flash") == "deepseek-v4-flash"


def test_upstream_model_maps_a_client_name_to_the_provider_name() -> None:
    config = parse_config(MODEL + 'upstream_model = "qwen3:32b"\n', SOURCE)

    assert config.upstream_model("gpt-test-model") == "qwen3:32b"


@pytest.mark.parametrize(
    ("table", "struct"),
    [
        ("server", ServerConfig),
        ("store", StoreConfig),
        ("upstream", UpstreamConfig),
        ("websocket", WebSocketConfig),
        ("debug", DebugConfig),
        ("providers.deepseek", ProviderConfig),
        ("models.deepseek-v4-pro", ModelConfig),
    ],
)
def test_shipped_config_shows_every_key(table: str, struct: type[msgspec.Struct]) -> None:
    """The file promises every key is shown; a new setting must be documented there."""
    text = SHIPPED.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    section, _, name = table.partition(".")
    shown = set(raw[section][name] if name else raw[section])
    # A key whose mere presence changes behaviour may be shown commented out.
    header = f'[{section}."{name}"]' if f'[{section}."{name}"]' in text else f"[{table}]"
    block = text.split(header, 1)[1].split("\n[", 1)[0]
    shown |= set(re.findall(r"^# ([a-z_]+) = ", block, re.MULTILINE))

    assert shown == {field.name for field in msgspec.structs.fields(struct)}


def test_defaults_apply_to_an_empty_file() -> None:
    config = parse_config("", SOURCE)

    assert config == Config(source=SOURCE)
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8787
    assert config.providers == {}
    assert config.models == {}


# Errors name the file and the key


def test_unknown_top_level_key_names_key_and_file() -> None:
    message = config_error("[servre]\nport = 1\n")

    assert SOURCE in message
    assert "`servre`" in message


def test_unknown_top_level_key_is_worded_like_other_unknown_keys() -> None:
    assert config_error("[servre]\nport = 1\n") == f"{SOURCE}: unknown key `servre`"


def test_unknown_key_in_server_names_key_and_file() -> None:
    message = config_error("[server]\nprot = 8787\n")

    assert message == f"{SOURCE}: unknown key `server.prot`"


def test_unknown_key_in_upstream_names_key_and_file() -> None:
    message = config_error("[upstream]\nidle_timout = 5.0\n")

    assert message == f"{SOURCE}: unknown key `upstream.idle_timout`"


def test_unknown_key_in_provider_names_the_provider_and_key() -> None:
    message = config_error(PROVIDER + 'api_key = "sk-oops"\n')

    assert SOURCE in message
    assert "api_key" in message
    assert "localllm" in message


def test_unknown_key_in_model_names_the_model_and_key() -> None:
    message = config_error(MODEL + 'upstream = "qwen3:32b"\n')

    assert SOURCE in message
    assert "upstream" in message
    assert "gpt-test-model" in message


def test_missing_base_url_names_the_provider() -> None:
    message = config_error('[providers.localllm]\napi_key_env = "LOCAL_KEY"\n')

    assert SOURCE in message
    assert "base_url" in message
    assert "localllm" in message


def test_unknown_key_in_provider_names_at_least_the_key_and_file() -> None:
    message = config_error(PROVIDER + 'api_key = "sk-oops"\n')

    assert SOURCE in message
    assert "unknown key" in message
    assert "api_key`" in message


def test_unknown_key_in_model_names_at_least_the_key_and_file() -> None:
    message = config_error(MODEL + 'upstream = "qwen3:32b"\n')

    assert SOURCE in message
    assert "unknown key" in message
    assert ".upstream`" in message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('[server]\nport = "x"\n', "server.port", "int"),
        ("[server]\nport = true\n", "server.port", "int"),
        ("[server]\nhost = 127\n", "server.host", "str"),
        ("[store]\npath = 3\n", "store.path", "str"),
        ('[upstream]\nidle_timeout = "long"\n', "upstream.idle_timeout", "float"),
        ("models = 3\n", "models", "object"),
    ],
)
def test_wrong_type_names_key_file_and_expected_type(text: str, key: str, expected: str) -> None:
    message = config_error(text)

    assert message.startswith(f"{SOURCE}: key `{key}`:")
    assert f"Expected `{expected}`" in message


def test_model_naming_an_unknown_provider_names_model_and_provider() -> None:
    message = config_error(PROVIDER + '[models."gpt-test-model"]\nprovider = "openia"\n')

    assert message.startswith(f'{SOURCE}: key `models."gpt-test-model".provider`:')
    assert "'openia'" in message
    assert "localllm" in message  # the providers that do exist


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nport = 0\n", "server.port"),
        ("[server]\nport = 65536\n", "server.port"),
        ("[server]\nheartbeat_interval = 0\n", "server.heartbeat_interval"),
        ("[upstream]\nconnect_timeout = -1.0\n", "upstream.connect_timeout"),
        ("[upstream]\nidle_timeout = 0.0\n", "upstream.idle_timeout"),
        ('[providers.localllm]\nbase_url = "127.0.0.1:11434/v1"\n', "providers.localllm.base_url"),
    ],
)
def test_out_of_range_value_names_key_and_file(text: str, key: str) -> None:
    assert config_error(text).startswith(f"{SOURCE}: key `{key}`:")


def test_invalid_toml_names_file_and_line() -> None:
    message = config_error("[server]\nport = 8787\nhost = \n")

    assert message.startswith(f"{SOURCE}: not valid TOML:")
    assert "line 3" in message


def test_source_cannot_be_overridden_by_the_file() -> None:
    """`source` records where the config came from; the file cannot override it."""
    try:
        config = parse_config('source = "/elsewhere.toml"\n', SOURCE)
    except ConfigError:
        return
    assert config.source == SOURCE


def test_source_in_the_file_is_an_unknown_key() -> None:
    message = config_error('source = "/elsewhere.toml"\n')

    assert message == f"{SOURCE}: unknown key `source`"


def test_load_config_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config.toml"

    with pytest.raises(ConfigError) as info:
        load_config(missing)

    assert str(info.value) == f"{missing}: cannot read: No such file or directory"


def test_load_config_names_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)

    assert str(info.value).startswith(f"{tmp_path}: cannot read:")


def test_load_config_names_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[server]\nhost = "\xff"\n')

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value) == f"{path}: not UTF-8 text"


def test_load_config_errors_name_the_path_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[server]\nprot = 1\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_config(path)

    assert str(info.value) == f"{path}: unknown key `server.prot`"


# API keys from the environment

TWO_PROVIDERS = """
[providers.deepseek]
base_url = "https://api.deepseek.com/v1"
api_key_env = "DEEPSEEK_API_KEY"

[providers.localllm]
base_url = "http://127.0.0.1:11434/v1"

[models.chat]
provider = "deepseek"
"""


def test_resolve_api_keys_reads_the_named_variable() -> None:
    config = parse_config(TWO_PROVIDERS, SOURCE)

    keys = resolve_api_keys(config, {"DEEPSEEK_API_KEY": "sk-test", "OTHER": "x"})

    assert keys == {"deepseek": "sk-test"}


@pytest.mark.parametrize("environ", [{}, {"DEEPSEEK_API_KEY": ""}])
def test_resolve_api_keys_names_an_unset_or_empty_variable(environ: dict[str, str]) -> None:
    config = parse_config(TWO_PROVIDERS, SOURCE)

    with pytest.raises(ConfigError) as info:
        resolve_api_keys(config, environ)

    message = str(info.value)
    assert message.startswith(f"{SOURCE}: key `providers.deepseek.api_key_env`:")
    assert "DEEPSEEK_API_KEY" in message


def test_a_provider_no_model_uses_needs_no_key() -> None:
    config = parse_config(TWO_PROVIDERS.replace('provider = "deepseek"', 'provider = "localllm"'))

    assert resolve_api_keys(config, {}) == {}
    (warning,) = unset_api_keys(config, {})
    assert "DEEPSEEK_API_KEY" in warning and "no model uses" in warning


def test_an_invalid_choice_lists_the_valid_ones() -> None:
    message = config_error(PROVIDER + 'profile = "deepsek"\n')
    assert "`providers.localllm.profile`" in message
    assert "'deepseek'" in message and "'openrouter'" in message


def test_resolve_api_keys_needs_nothing_for_keyless_providers() -> None:
    config = parse_config(PROVIDER, SOURCE)

    assert resolve_api_keys(config, {}) == {}


# Where the database lives


def with_store(path: str) -> Config:
    return parse_config(f'[store]\npath = "{path}"\n', SOURCE)


def test_store_path_keeps_an_absolute_path(tmp_path: Path) -> None:
    absolute = tmp_path / "db" / "bridge.db"

    assert store_path(with_store(str(absolute)), {"STATE_DIRECTORY": "/srv/state"}) == absolute


def test_store_path_is_relative_to_state_directory() -> None:
    config = with_store("sub/bridge.db")

    assert store_path(config, {"STATE_DIRECTORY": "/var/lib/bridge"}) == Path(
        "/var/lib/bridge/sub/bridge.db"
    )


def test_store_path_uses_the_first_of_several_state_directories() -> None:
    config = with_store("bridge.db")
    environ = {"STATE_DIRECTORY": "/var/lib/bridge:/var/lib/other"}

    assert store_path(config, environ) == Path("/var/lib/bridge/bridge.db")


@pytest.mark.parametrize("environ", [{}, {"STATE_DIRECTORY": ""}])
def test_store_path_defaults_to_the_users_state_directory(
    environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    assert store_path(with_store("bridge.db"), environ) == (
        tmp_path / ".local" / "state" / "responses-bridge" / "bridge.db"
    )


def test_store_path_default_config_is_under_the_state_directory() -> None:
    config = parse_config("", SOURCE)

    assert store_path(config, {"STATE_DIRECTORY": "/var/lib/bridge"}) == Path(
        "/var/lib/bridge/bridge.db"
    )


def test_store_path_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))

    assert store_path(with_store("~/bridge.db"), {"STATE_DIRECTORY": "/srv"}) == (
        tmp_path / "bridge.db"
    )


def test_the_effective_config_reads_back_as_the_same_config() -> None:
    """check-config's effective settings are TOML that parses to the config they show:
    every table ([debug] too), and names that need quoting."""
    config = parse_config(
        SHIPPED.read_text()
        .replace("keep_turns = 0", "keep_turns = 7")
        .replace('[models."deepseek-v4-flash"]', '[models."odd \\"name\\" ü.x"]')
        + '\n[providers."my provider"]\nbase_url = "http://127.0.0.1:9/v1"\n'
        "extra_body = { top_k = 5, nested = { on = true } }\n"
        '\n[models."tricky"]\nprovider = "my provider"\n',
        "config.toml",
    )
    shown = effective_toml(config)
    again = parse_config(shown, "config.toml")
    assert again == config
    assert again.debug.keep_turns == 7
    assert 'odd "name" ü.x' in again.models


# Every number has a declared range, and a value past it is refused before anything runs


def numeric_fields() -> list[
    tuple[tuple[str, ...], msgspec.inspect.IntType | msgspec.inspect.FloatType]
]:
    """(TOML path, type) of every int and float key, in every table (a provider `p`, a
    model `m`)."""
    found = []

    def walk(kind: msgspec.inspect.Type, path: tuple[str, ...]) -> None:
        if isinstance(kind, msgspec.inspect.StructType):
            for field in kind.fields:
                walk(field.type, (*path, field.name))
        elif isinstance(kind, msgspec.inspect.DictType):
            walk(kind.value_type, (*path, "m" if path == ("models",) else "p"))
        elif isinstance(kind, msgspec.inspect.UnionType):
            for member in kind.types:
                walk(member, path)
        elif isinstance(kind, msgspec.inspect.IntType | msgspec.inspect.FloatType):
            found.append((path, kind))

    walk(msgspec.inspect.type_info(Config), ())
    return found


def out_of_range(kind: msgspec.inspect.IntType | msgspec.inspect.FloatType) -> list[object]:
    low = kind.ge - 1 if kind.ge is not None else kind.gt
    high = kind.le + 1 if kind.le is not None else kind.lt
    values: list[object] = [low, high]
    if isinstance(kind, msgspec.inspect.FloatType):
        values += [float("nan"), float("inf")]
    return values


def config_with(path: tuple[str, ...], value: object) -> str:
    """A valid config (one provider, one model) with `value` at `path`."""
    tables: dict[tuple[str, ...], dict[str, object]] = {
        ("providers", "p"): {"base_url": '"http://127.0.0.1:9/v1"'},
        ("models", "m"): {"provider": '"p"'},
    }
    shown = repr(value) if not isinstance(value, float) else str(value).replace("e+", "e")
    tables.setdefault(path[:-1], {})[path[-1]] = shown
    return "".join(
        f"[{'.'.join(table)}]\n" + "".join(f"{key} = {text}\n" for key, text in keys.items())
        for table, keys in tables.items()
    )


def test_every_numeric_key_declares_both_bounds() -> None:
    fields = numeric_fields()
    assert len(fields) >= 25
    for path, kind in fields:
        assert kind.ge is not None or kind.gt is not None, path
        assert kind.le is not None or kind.lt is not None, path


def test_every_numeric_key_refuses_out_of_range_values_with_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`upstream.max_connections = 0` passed check-config (then every POST hung), -1
    crashed serve: one of eight keys without a range check."""
    from bridge.cli import main
    from bridge.exit_codes import Exit

    path = tmp_path / "bridge.toml"
    path.write_text(config_with(("server", "port"), 8787))
    assert main(["check-config", "--config", str(path)]) == 0
    for key, kind in numeric_fields():
        for value in out_of_range(kind):
            path.write_text(config_with(key, value))
            assert main(["check-config", "--config", str(path)]) == Exit.CONFIG, (key, value)
            name = ".".join(f'"{part}"' if part == "m" else part for part in key)
            assert f"key `{name}`" in capsys.readouterr().err, (key, value)
