"""`responses-bridge codex-config`: a Codex provider snippet and a model catalog for it;
with `--write`, merged into Codex's own config.toml.

Codex decides which tools to offer (apply_patch among them), which reasoning efforts to
allow and when to compact from its model metadata. A model name it does not know gets
"fallback metadata": no apply_patch and a warning. The catalog written here gives each
configured model the metadata of a model from the installed Codex's own catalog
(`codex debug models`), with the name and context window from the bridge's config.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions
from tomlkit.items import Item, Table
from tomlkit.toml_document import TOMLDocument

from bridge.config import Config
from bridge.config_env import CLIENT_KEY_ENV, local_url
from bridge.demo import demo_mode, demo_models
from bridge.exit_codes import Exit

PROVIDER_ID = "responses-bridge"
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


def default_catalog_path(environ: Mapping[str, str], beside: Path | None = None) -> Path:
    """Beside Codex's own config: `beside` (a config.toml being written), else in
    $CODEX_HOME, else in ~/.codex."""
    if beside is not None:
        return beside.parent / "responses-bridge-models.json"
    return default_config_path(environ).parent / "responses-bridge-models.json"


def _key_comment(config: Config) -> str:
    """What Codex must put in the env_key variable."""
    if config.server.api_keys_env:
        return (
            f"one of the client keys in the bridge's ${config.server.api_keys_env} "
            "(its [server] api_keys_env)"
        )
    return "any value; the bridge holds the real API keys"


def provider_table(config: Config) -> Table:
    """[model_providers.responses-bridge]: where Codex finds the bridge and how it talks."""
    idle_ms = max(300_000, int(config.server.heartbeat_interval * 1000 * 10))
    table = tomlkit.table()
    table["name"] = PROVIDER_ID
    table["base_url"] = f"{local_url(config)}/v1"
    table["env_key"] = _commented(CLIENT_KEY_ENV, _key_comment(config))
    table["wire_api"] = "responses"
    table["stream_idle_timeout_ms"] = _commented(
        idle_ms, f"the bridge sends an event at least every {config.server.heartbeat_interval:g} s"
    )
    if config.websocket.enabled:
        table["supports_websockets"] = _commented(
            True, "one socket per session; each turn sends only what is new (false: HTTP)"
        )
    return table


def _commented(value: str | int | bool, text: str) -> Item:
    """A value with a comment after it on its line."""
    item = tomlkit.item(value)
    item.comment(text)
    return item


def _choice(document: TOMLDocument, model: str, catalog: Path | None) -> None:
    """The model Codex uses and where its metadata is, as top-level keys of `document`."""
    document["model"] = model
    document["model_provider"] = PROVIDER_ID
    if catalog is not None:
        document["model_catalog_json"] = str(catalog)
    elif "model_catalog_json" in document:
        del document["model_catalog_json"]


def provider_snippet(config: Config, model: str, catalog: Path | None) -> str:
    """The lines to put in ~/.codex/config.toml."""
    document = tomlkit.document()
    document.add(
        tomlkit.comment(f"Codex through {PROVIDER_ID} (written by `{PROVIDER_ID} codex-config`).")
    )
    _choice(document, model, catalog)
    providers = tomlkit.table(is_super_table=True)
    providers[PROVIDER_ID] = provider_table(config)
    document["model_providers"] = providers
    return tomlkit.dumps(document)


def profile_text(model: str, catalog: Path | None) -> str:
    """Codex's profile file for the bridge (`codex --profile responses-bridge`)."""
    document = tomlkit.document()
    document.add(
        tomlkit.comment(
            f"Codex profile for {PROVIDER_ID}: `codex --profile {PROVIDER_ID}`. Written by "
            f"`{PROVIDER_ID} codex-config --write`; rewritten each time."
        )
    )
    _choice(document, model, catalog)
    return tomlkit.dumps(document)


def merged_config(text: str, config: Config, model: str, catalog: Path | None) -> tuple[str, bool]:
    """Codex's config.toml with the bridge's provider table added or replaced, everything
    else (and its comments) kept; the bridge becomes the default only when the file chose
    no other model or provider. Returns the text and whether the bridge is the default.
    Raises CodexConfigError for a file that is not TOML."""
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise CodexConfigError(f"it is not valid TOML ({exc}); nothing was changed") from None
    chosen = document.get("model_provider")
    default = chosen == PROVIDER_ID or (chosen is None and "model" not in document)
    if default:
        _choice(document, model, catalog)
    providers = document.get("model_providers")
    if not isinstance(providers, Table):
        if providers is not None:
            raise CodexConfigError("its `model_providers` is not a table; nothing was changed")
        providers = tomlkit.table(is_super_table=True)
        document["model_providers"] = providers
    providers[PROVIDER_ID] = provider_table(config)
    return tomlkit.dumps(document), default


def default_config_path(environ: Mapping[str, str]) -> Path:
    """Codex's own config: $CODEX_HOME/config.toml, else ~/.codex/config.toml."""
    home = environ.get("CODEX_HOME")
    base = Path(home) if home else Path.home() / ".codex"
    return base / "config.toml"


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all (a temporary file renamed over it)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, "utf-8")
    temporary.replace(path)


def write_codex_config(config: Config, path: Path, model: str, catalog: Path | None) -> None:
    """`--write`: merge into Codex's config.toml (the old one kept as .bak) and write the
    profile file beside it; says on stderr what was done."""
    old = path.read_text("utf-8") if path.exists() else ""
    text, default = merged_config(old, config, model, catalog)
    path.parent.mkdir(parents=True, exist_ok=True)
    if old and old != text:
        backup = path.with_name(path.name + ".bak")
        backup.write_text(old, "utf-8")
        print(f"{PROVIDER_ID}: the previous {path.name} is kept as {backup}", file=sys.stderr)
    _replace(path, text)
    profile = path.with_name(f"{PROVIDER_ID}.config.toml")
    _replace(profile, profile_text(model, catalog))
    print(f"{PROVIDER_ID}: wrote [model_providers.{PROVIDER_ID}] into {path}", file=sys.stderr)
    print(f"{PROVIDER_ID}: wrote the profile {profile}", file=sys.stderr)
    if default:
        print(f"{PROVIDER_ID}: `codex` now uses {model} through the bridge", file=sys.stderr)
    else:
        print(
            f"{PROVIDER_ID}: {path.name} already chooses another model or provider, which "
            f"stays the default: run `codex --profile {PROVIDER_ID}` to use the bridge",
            file=sys.stderr,
        )


def write_catalog(catalog: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, json.dumps(catalog, indent=2, ensure_ascii=False) + "\n")


def run(
    config: Config,
    *,
    model: str | None,
    catalog_path: Path,
    codex: str | None,
    write: Path | None = None,
) -> int:
    """Write the catalog (when Codex is installed), then print the snippet, or merge it
    into Codex's config.toml at `write`; an exit code."""
    chosen = model or next(iter(config.models), None)
    if model is None and demo_mode(config, os.environ):
        # No provider key is set here (a first run): the demo is what answers.
        chosen = demo_models(config)[0]
        print(
            f"responses-bridge: no provider key is set here, so Codex gets the demo model "
            f"({chosen}); set the key and run this again, or pass --model",
            file=sys.stderr,
        )
    if chosen is None:
        print("responses-bridge: the config has no [models] to offer Codex", file=sys.stderr)
        return Exit.CONFIG
    if chosen not in config.models:
        known = ", ".join(config.models)
        print(f"responses-bridge: unknown model {chosen!r} (configured: {known})", file=sys.stderr)
        return Exit.CONFIG
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
            return Exit.CODEX
        write_catalog(catalog, catalog_path)
        written = catalog_path
        print(f"responses-bridge: wrote the model catalog to {catalog_path}", file=sys.stderr)
    if write is None:
        sys.stdout.write(provider_snippet(config, chosen, written))
        return Exit.OK
    try:
        write_codex_config(config, write, chosen, written)
    except CodexConfigError as exc:
        print(f"responses-bridge: {write}: {exc}", file=sys.stderr)
        return Exit.CODEX
    except OSError as exc:
        print(f"responses-bridge: cannot write {write}: {exc.strerror}", file=sys.stderr)
        return Exit.CODEX
    return Exit.OK
