"""`responses-bridge codex-config`: a Codex provider snippet and a model catalog for it.

Codex decides which tools to offer (apply_patch among them), which reasoning efforts to
allow and when to compact from its model metadata. A model name it does not know gets
"fallback metadata": no apply_patch and a warning. The catalog written here gives each
configured model the metadata of a model from the installed Codex's own catalog
(`codex debug models`), with the name and context window from the bridge's config.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.config import Config

PROVIDER_ID = "responses-bridge"
CLIENT_KEY_ENV = "RESPONSES_BRIDGE_API_KEY"
# The catalog model whose metadata serves as the template, when the catalog has it: a
# coding model with the freeform apply_patch tool and the unified exec shell.
PREFERRED_TEMPLATE = "gpt-5.5"
CODEX_TIMEOUT = 60.0


class CodexConfigError(Exception):
    """Codex's catalog could not be read or used."""


def find_codex(explicit: str | None) -> str | None:
    """The Codex executable: as given, else `codex` on PATH."""
    if explicit:
        return explicit
    return shutil.which("codex")


def codex_catalog(codex: str) -> dict[str, Any]:
    """The installed Codex's model catalog, as `codex debug models` prints it."""
    try:
        done = subprocess.run(
            [codex, "debug", "models"],
            capture_output=True,
            text=True,
            timeout=CODEX_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CodexConfigError(f"could not run `{codex} debug models`: {exc}") from None
    if done.returncode != 0:
        raise CodexConfigError(
            f"`{codex} debug models` exited {done.returncode}: {done.stderr.strip()[-500:]}"
        )
    try:
        catalog = json.loads(done.stdout)
    except ValueError:
        raise CodexConfigError(f"`{codex} debug models` did not print JSON") from None
    if not isinstance(catalog, dict) or not isinstance(catalog.get("models"), list):
        raise CodexConfigError(f"`{codex} debug models` printed no `models` list")
    return catalog


def template_model(catalog: dict[str, Any]) -> dict[str, Any]:
    """The catalog entry whose metadata the bridge's models borrow."""
    models = [m for m in catalog["models"] if isinstance(m, dict)]
    for model in models:
        if model.get("slug") == PREFERRED_TEMPLATE:
            return model
    for model in models:
        if model.get("apply_patch_tool_type") and model.get("supported_in_api", True):
            return model
    if models:
        return models[0]
    raise CodexConfigError("Codex's model catalog is empty")


def bridge_catalog(config: Config, template: dict[str, Any]) -> dict[str, Any]:
    """A catalog with one entry per configured model, in the shape Codex reads."""
    entries = []
    for priority, (name, model) in enumerate(config.models.items(), start=1):
        entry = copy.deepcopy(template)
        upstream = config.upstream_model(name)
        entry.update(
            {
                "slug": name,
                "display_name": name,
                "description": f"{upstream} from {model.provider}, through responses-bridge",
                "context_window": model.context_window,
                "max_context_window": model.context_window,
                "default_reasoning_summary": "none"
                if model.reasoning_summary == "never"
                else "auto",
                "visibility": "list",
                "supported_in_api": True,
                "priority": priority,
                # Nothing of OpenAI's own service applies to these models.
                "upgrade": None,
                "availability_nux": None,
                "service_tiers": [],
                "additional_speed_tiers": [],
                "supports_search_tool": False,
                # Codex offers view_image and takes `-i` attachments only for these.
                "input_modalities": ["text", "image"] if config.takes_images(name) else ["text"],
            }
        )
        entries.append(entry)
    return {"models": entries}


def default_catalog_path(environ: Mapping[str, str]) -> Path:
    """Beside Codex's own config: $CODEX_HOME, else ~/.codex."""
    home = environ.get("CODEX_HOME")
    base = Path(home) if home else Path.home() / ".codex"
    return base / "responses-bridge-models.json"


def provider_snippet(config: Config, model: str, catalog: Path | None) -> str:
    """The lines to put in ~/.codex/config.toml."""
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    idle_ms = max(300_000, int(config.server.heartbeat_interval * 1000 * 10))
    lines = [
        "# Codex through responses-bridge (written by `responses-bridge codex-config`).",
        f'model = "{model}"',
        f'model_provider = "{PROVIDER_ID}"',
    ]
    if catalog is not None:
        lines.append(f"model_catalog_json = {json.dumps(str(catalog))}")
    lines += [
        "",
        f"[model_providers.{PROVIDER_ID}]",
        f'name = "{PROVIDER_ID}"',
        f'base_url = "http://{host}:{config.server.port}/v1"',
        f'env_key = "{CLIENT_KEY_ENV}"          # {_key_comment(config)}',
        'wire_api = "responses"',
        f"stream_idle_timeout_ms = {idle_ms}   # the bridge sends an event at least every "
        f"{config.server.heartbeat_interval:g} s",
    ]
    if config.websocket.enabled:
        lines.append(
            "supports_websockets = true       # one socket per session; each turn sends only "
            "what is new (false: HTTP)"
        )
    return "\n".join(lines) + "\n"


def _key_comment(config: Config) -> str:
    """What Codex must put in the env_key variable."""
    if config.server.api_keys_env:
        return (
            f"one of the client keys in the bridge's ${config.server.api_keys_env} "
            "(its [server] api_keys_env)"
        )
    return "any value; the bridge holds the real API keys"


def write_catalog(catalog: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(catalog, indent=2, ensure_ascii=False) + "\n", "utf-8")
    temporary.replace(path)


def run(config: Config, *, model: str | None, catalog_path: Path, codex: str | None) -> int:
    """Write the catalog (when Codex is installed) and print the snippet; an exit code."""
    chosen = model or next(iter(config.models), None)
    if chosen is None:
        print("responses-bridge: the config has no [models] to offer Codex", file=sys.stderr)
        return 3
    if chosen not in config.models:
        known = ", ".join(config.models)
        print(f"responses-bridge: unknown model {chosen!r} (configured: {known})", file=sys.stderr)
        return 3
    executable = find_codex(codex)
    written: Path | None = None
    if executable is None:
        print(
            "responses-bridge: Codex was not found (not on PATH; pass --codex PATH). No model "
            "catalog was written, so Codex will use fallback metadata for these models: no "
            "apply_patch tool and a warning at start. Install Codex and run this again.",
            file=sys.stderr,
        )
    else:
        # The catalog's directory (by default $CODEX_HOME) must exist for Codex to start.
        catalog_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            catalog = bridge_catalog(config, template_model(codex_catalog(executable)))
        except CodexConfigError as exc:
            print(f"responses-bridge: {exc}", file=sys.stderr)
            return 7
        write_catalog(catalog, catalog_path)
        written = catalog_path
        print(f"responses-bridge: wrote the model catalog to {catalog_path}", file=sys.stderr)
    sys.stdout.write(provider_snippet(config, chosen, written))
    return 0
