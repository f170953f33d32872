"""`responses-bridge codex-config`: the snippet and the model catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bridge.codex_config import bridge_catalog, provider_snippet, template_model
from bridge.config_load import parse_config
from tests.conftest import codex_binary
from tests.processes import REPO

CONFIG = """
[server]
host = "0.0.0.0"
port = 9123

[providers.deepseek]
base_url = "https://api.deepseek.com/v1"

[models."deepseek-v4-pro"]
provider = "deepseek"
context_window = 131072

[models."deepseek-v4-flash"]
provider = "deepseek"
upstream_model = "deepseek-chat"
reasoning_summary = "never"
"""
TEMPLATE_CATALOG: dict[str, Any] = {
    "models": [
        {"slug": "other", "apply_patch_tool_type": None, "context_window": 1},
        {
            "slug": "gpt-5.5",
            "apply_patch_tool_type": "freeform",
            "shell_type": "unified_exec",
            "context_window": 272000,
            "max_context_window": 272000,
            "upgrade": {"model": "newer"},
            "service_tiers": [{"id": "priority"}],
            "supports_search_tool": True,
            "base_instructions": "You are Codex.",
        },
    ]
}


def test_catalog_borrows_the_template_and_takes_the_bridge_settings() -> None:
    config = parse_config(CONFIG)
    catalog = bridge_catalog(config, template_model(TEMPLATE_CATALOG))
    pro, flash = catalog["models"]
    assert (pro["slug"], flash["slug"]) == ("deepseek-v4-pro", "deepseek-v4-flash")
    assert pro["context_window"] == pro["max_context_window"] == 131072
    assert flash["context_window"] == 128000  # the default
    assert pro["apply_patch_tool_type"] == "freeform"  # what makes Codex offer apply_patch
    assert pro["base_instructions"] == "You are Codex."
    assert pro["upgrade"] is None and pro["service_tiers"] == []
    assert pro["supports_search_tool"] is False
    assert pro["default_reasoning_summary"] == "auto"
    assert flash["default_reasoning_summary"] == "none"
    assert "deepseek-chat" in flash["description"]
    # The template itself is left alone.
    assert TEMPLATE_CATALOG["models"][1]["slug"] == "gpt-5.5"


def test_snippet_is_valid_toml_for_codex() -> None:
    config = parse_config(CONFIG)
    snippet = provider_snippet(config, "deepseek-v4-pro", Path("/home/u/.codex/models.json"))
    parsed = tomllib.loads(snippet)
    assert parsed["model"] == "deepseek-v4-pro"
    assert parsed["model_catalog_json"] == "/home/u/.codex/models.json"
    provider = parsed["model_providers"][parsed["model_provider"]]
    # A wildcard listen address is reached through loopback.
    assert provider["base_url"] == "http://127.0.0.1:9123/v1"
    assert provider["wire_api"] == "responses"
    assert provider["env_key"] == "RESPONSES_BRIDGE_API_KEY"
    assert provider["stream_idle_timeout_ms"] >= 300000
    assert provider["supports_websockets"] is True
    assert parsed["model_provider"] != "openai"
    # A bridge with the WebSocket mode off does not offer it.
    config = parse_config(CONFIG + "[websocket]\nenabled = false\n")
    snippet = provider_snippet(config, "deepseek-v4-pro", None)
    assert (
        "supports_websockets" not in tomllib.loads(snippet)["model_providers"]["responses-bridge"]
    )


def test_the_snippet_says_which_key_codex_must_send() -> None:
    config = parse_config(CONFIG)
    assert "any value" in provider_snippet(config, "deepseek-v4-pro", None)
    keyed = parse_config(CONFIG.replace("port = 9123", 'port = 9123\napi_keys_env = "TEAM_KEYS"'))
    line = next(
        line
        for line in provider_snippet(keyed, "deepseek-v4-pro", None).splitlines()
        if line.startswith("env_key")
    )
    assert "any value" not in line and "$TEAM_KEYS" in line


def run_cli(tmp_path: Path, *args: str, path: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = {**os.environ, "PATH": path, "CODEX_HOME": str(tmp_path / "codex-home")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", "codex-config", "--config", str(config), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_codex_prints_the_snippet_and_says_why_there_is_no_catalog(
    tmp_path: Path,
) -> None:
    result = run_cli(tmp_path, path=str(Path(sys.executable).parent))
    assert result.returncode == 0, result.stderr
    assert "Codex was not found" in result.stderr
    assert "fallback metadata" in result.stderr
    parsed = tomllib.loads(result.stdout)
    assert "model_catalog_json" not in parsed
    assert not (tmp_path / "codex-home").exists()


def test_with_the_installed_codex_writes_a_catalog_codex_accepts(tmp_path: Path) -> None:
    codex = codex_binary()
    if codex is None:
        if os.environ.get("REQUIRE_CODEX") == "1":
            pytest.fail("Codex CLI not installed")
        pytest.skip("Codex CLI not installed")
    result = run_cli(
        tmp_path, "--codex", codex, "--model", "deepseek-v4-flash", path=os.environ["PATH"]
    )
    assert result.returncode == 0, result.stderr
    parsed = tomllib.loads(result.stdout)
    assert parsed["model"] == "deepseek-v4-flash"
    catalog_path = Path(parsed["model_catalog_json"])
    assert catalog_path == tmp_path / "codex-home" / "responses-bridge-models.json"
    catalog = json.loads(catalog_path.read_text())
    assert [m["slug"] for m in catalog["models"]] == ["deepseek-v4-pro", "deepseek-v4-flash"]
    # Codex itself reads the catalog back and lists the bridge's models.
    home = tmp_path / "codex-home"
    (home / "config.toml").write_text(result.stdout)
    listed = subprocess.run(
        [codex, "debug", "models"],
        env={**os.environ, "CODEX_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert listed.returncode == 0, listed.stderr
    slugs = [m["slug"] for m in json.loads(listed.stdout)["models"]]
    assert "deepseek-v4-pro" in slugs and "deepseek-v4-flash" in slugs


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--model", "nope", path=str(Path(sys.executable).parent))
    assert result.returncode == 3
    assert "unknown model 'nope'" in result.stderr


def test_a_model_name_with_a_quote_is_valid_toml_in_the_snippet() -> None:
    config = parse_config(CONFIG.replace('[models."deepseek-v4-flash"]', '[models."odd \\"x\\""]'))
    assert 'odd "x"' in config.models
    parsed = tomllib.loads(provider_snippet(config, 'odd "x"', Path('/tmp/a "b"/m.json')))
    assert parsed["model"] == 'odd "x"'
    assert parsed["model_catalog_json"] == '/tmp/a "b"/m.json'


EXISTING = """# my Codex settings
approval_policy = "on-request"   # asked before each command

[projects."/home/u/work"]
trust_level = "trusted"

[mcp_servers.docs]
command = "npx"   # the docs server
args = ["-y", "docs-mcp"]

[model_providers.other]
name = "other"
base_url = "https://example.invalid/v1"
"""


def write_cli(
    tmp_path: Path, *args: str, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`codex-config --write` without Codex on PATH (no catalog), CODEX_HOME at `home`."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent),
        "CODEX_HOME": str(home or tmp_path / "codex-home"),
    }
    return subprocess.run(
        [sys.executable, "-m", "bridge", "codex-config", "--config", str(config), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_write_merges_into_an_existing_codex_config_and_keeps_the_old_one(tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(EXISTING)
    result = write_cli(tmp_path, "--write")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    text = (home / "config.toml").read_text()
    # Everything the user had stays, comments included.
    for line in EXISTING.splitlines():
        assert line in text, line
    parsed = tomllib.loads(text)
    assert parsed["projects"]["/home/u/work"]["trust_level"] == "trusted"
    assert parsed["mcp_servers"]["docs"]["args"] == ["-y", "docs-mcp"]
    assert parsed["model_providers"]["other"]["name"] == "other"
    assert parsed["model_providers"]["responses-bridge"]["base_url"] == "http://127.0.0.1:9123/v1"
    # The file chose no model of its own: the bridge becomes Codex's default.
    assert parsed["model"] == "deepseek-v4-pro"
    assert parsed["model_provider"] == "responses-bridge"
    assert (home / "config.toml.bak").read_text() == EXISTING
    profile = tomllib.loads((home / "responses-bridge.config.toml").read_text())
    assert profile == {"model": "deepseek-v4-pro", "model_provider": "responses-bridge"}
    assert "`codex` now uses deepseek-v4-pro" in result.stderr

    # Again, with another model and the WebSocket mode off in the bridge: only the bridge's
    # own entries change.
    config = CONFIG.replace("port = 9123", "port = 9124") + "\n[websocket]\nenabled = false\n"
    (tmp_path / "config.toml").write_text(config)
    again = subprocess.run(
        [
            sys.executable, "-m", "bridge", "codex-config", "--config",
            str(tmp_path / "config.toml"), "--model", "deepseek-v4-flash",
            "--write", str(home / "config.toml"),
        ],
        cwd=REPO,
        env={**os.environ, "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    reparsed = tomllib.loads((home / "config.toml").read_text())
    bridge = reparsed["model_providers"]["responses-bridge"]
    assert bridge["base_url"] == "http://127.0.0.1:9124/v1"
    assert "supports_websockets" not in bridge
    assert reparsed["model"] == "deepseek-v4-flash"
    assert {k: v for k, v in reparsed.items() if k not in ("model", "model_providers")} == {
        k: v for k, v in parsed.items() if k not in ("model", "model_providers")
    }
    assert reparsed["model_providers"]["other"] == parsed["model_providers"]["other"]
    assert (home / "config.toml.bak").read_text() == text


def test_write_leaves_a_default_model_the_user_chose(tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    chosen = 'model = "gpt-5.5"\n' + EXISTING
    (home / "config.toml").write_text(chosen)
    result = write_cli(tmp_path, "--write")
    assert result.returncode == 0, result.stderr
    parsed = tomllib.loads((home / "config.toml").read_text())
    assert parsed["model"] == "gpt-5.5" and "model_provider" not in parsed
    assert "responses-bridge" in parsed["model_providers"]
    assert "codex --profile responses-bridge" in result.stderr
    profile = tomllib.loads((home / "responses-bridge.config.toml").read_text())
    assert profile["model_provider"] == "responses-bridge"


def test_write_creates_a_new_codex_config(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    result = write_cli(tmp_path, "--write", home=home)
    assert result.returncode == 0, result.stderr
    parsed = tomllib.loads((home / "config.toml").read_text())
    assert parsed["model_provider"] == "responses-bridge"
    assert not (home / "config.toml.bak").exists()


def test_write_refuses_a_codex_config_that_is_not_toml(tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text("this is [not toml\n")
    result = write_cli(tmp_path, "--write")
    assert result.returncode == 7
    assert "not valid TOML" in result.stderr and "nothing was changed" in result.stderr
    assert (home / "config.toml").read_text() == "this is [not toml\n"
    assert not (home / "responses-bridge.config.toml").exists()


def test_the_real_codex_reads_the_merged_config_and_the_profile(tmp_path: Path) -> None:
    codex = codex_binary()
    if codex is None:
        if os.environ.get("REQUIRE_CODEX") == "1":
            pytest.fail("Codex CLI not installed")
        pytest.skip("Codex CLI not installed")
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text('model = "gpt-5.5"\n' + EXISTING)
    result = run_cli(tmp_path, "--codex", codex, "--write", path=os.environ["PATH"])
    assert result.returncode == 0, result.stderr
    listed = subprocess.run(
        [codex, "debug", "models"],
        env={**os.environ, "CODEX_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert listed.returncode == 0, listed.stderr
    # The user's default stays; the profile file holds the bridge's model and catalog.
    profile = tomllib.loads((home / "responses-bridge.config.toml").read_text())
    assert profile["model_catalog_json"] == str(home / "responses-bridge-models.json")
    assert profile["model"] == "deepseek-v4-pro"
