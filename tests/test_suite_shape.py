"""The suite's own shape: test modules share helpers through conftest.py and helper modules,
never through each other, and build configs through the parser users' configs go through."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
# Calls that return a parsed Config.
PARSERS = frozenset({"bridge_config", "parse_config", "load_config"})


def imported_test_modules(source: str) -> list[str]:
    """The suite's test modules (tests/test_*.py) a module imports, as `line: module`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            # Relative imports are within tests/; `from tests import test_x` names it last.
            base = "tests." * bool(node.level) + (node.module or "")
            modules = [base, *(f"{base}.{alias.name}".lstrip(".") for alias in node.names)]
        else:
            continue
        for module in modules:
            package, _, name = module.rpartition(".")
            if package.rstrip(".") == "tests" and name.startswith("test_"):
                found.append(f"{node.lineno}: {module}")
                break
    return found


def _root(node: ast.expr) -> str | None:
    """The name an attribute or item chain starts from (`config` in config.server.port)."""
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def changed_configs(source: str) -> list[str]:
    """Where a function changes a config it parsed (an assignment into it, or setattr)."""
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        parsed = {
            target.id
            for node in ast.walk(function)
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id in PARSERS
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(function):
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "setattr"
                and node.args
            ):
                targets = [node.args[0]]
            else:
                continue
            for target in targets:
                direct_setattr = isinstance(node, ast.Call) and isinstance(target, ast.Name)
                nested = isinstance(target, ast.Attribute | ast.Subscript)
                if (nested or direct_setattr) and _root(target) in parsed:
                    found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_checks_find_what_they_look_for() -> None:
    sample = """
from tests.test_service import read_events
from tests import test_codex
import tests.test_clients
from .test_sdk import TOOLS
from aiohttp.test_utils import TestClient
from tests.conftest import bridge_config

def build(url):
    config = bridge_config(url)
    config.upstream.max_retries = 2
    config.providers["fake"].quirks.think_tags = False
    setattr(config.upstream, "idle_timeout", 0.5)
    other = object()
    other.port = 1
    return config
"""
    assert [line.split(": ")[1] for line in imported_test_modules(sample)] == [
        "tests.test_service",
        "tests.test_codex",
        "tests.test_clients",
        "tests.test_sdk",
    ]
    assert [line.split(": ", 1)[0] for line in changed_configs(sample)] == ["11", "12", "13"]


def test_no_module_of_the_suite_imports_a_test_module() -> None:
    """Shared helpers live in conftest.py or a helper module (fake_upstream.py, codex_cli.py,
    ...): a test module imported by another runs its tests' module code twice and ties
    the two together."""
    found = {
        str(path.relative_to(TESTS)): imports
        for path in sorted(TESTS.rglob("*.py"))
        if (imports := imported_test_modules(path.read_text()))
    }
    assert found == {}


def test_no_test_changes_a_parsed_config() -> None:
    """A config built through the users' parser (bridge_config takes TOML lines per table) is
    checked as theirs is; one changed afterwards may hold what no config file can."""
    found = {
        str(path.relative_to(TESTS)): changes
        for path in sorted(TESTS.rglob("*.py"))
        if (changes := changed_configs(path.read_text()))
    }
    assert found == {}
