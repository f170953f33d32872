"""Every command in the README and docs/ runs, as written, against a real bridge.

Each document's `sh` blocks run command by command in bash, in a sandbox directory with its
own config.toml (the bridge's port, a fake DeepSeek upstream), home and state directory, in
front of a bridge process started from that config with `[debug] keep_turns` on. `resp_...`,
`conv_...` and `msg_...` stand for the ids the commands before printed (each document starts
with one response and one conversation made). The `python` and `js` blocks run with this
interpreter and node, against the same bridge.

What cannot run inside a test is replaced by a recorder that only notes the command:
systemctl, journalctl, loginctl and sudo (they would change this machine), codex (interactive;
tests/test_codex.py runs the real one), createdb and createuser (tests/postgres.py makes
throwaway databases), npm and pip installs, python -m venv, and the test suite, ruff and
mypy themselves (.ci/run runs those). A command the docs give that fails, or
an id nobody printed, fails the test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.demo import LABEL as DEMO_LABEL
from tests.fake_upstream import FakeUpstream, thinking_text_reply
from tests.processes import REPO, BridgeProcess, free_port, output_of

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[a-z]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)
PLACEHOLDER = re.compile(r"\b(resp|conv|msg)_\.\.\.")
COMMAND_SECONDS = 60.0
RECORDED = ("systemctl", "journalctl", "loginctl", "sudo", "codex", "npm", "createdb", "createuser")
REAL_CODEX = REPO / "node_modules" / ".bin" / "codex"


def blocks(path: Path) -> list[tuple[str, str]]:
    """The document's fenced blocks: (language, text without the fence's indentation)."""
    found = []
    for match in FENCE.finditer(path.read_text(encoding="utf-8")):
        indent = len(match["indent"])
        text = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        found.append((match["lang"], text))
    return found


def commands(script: str) -> list[str]:
    """Logical lines: continuations joined, blank lines and whole-line comments left out."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def sandbox_config(port: int, upstream: str) -> str:
    return f"""
[server]
port = {port}

[debug]
keep_turns = 10

[providers.deepseek]
base_url = "{upstream}/v1"
api_key_env = "DEEPSEEK_API_KEY"
profile = "deepseek"

[models."deepseek-v4-pro"]
provider = "deepseek"

[models."deepseek-v4-flash"]
provider = "deepseek"

[providers.demo]
profile = "demo"

[models.demo]
provider = "demo"
"""


def write_shim(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)


def make_sandbox(root: Path, port: int, upstream: str) -> dict[str, str]:
    """The directory the commands run in, and their environment."""
    (root / "config.toml").write_text(sandbox_config(port, upstream))
    for name in ("bench", "systemd", "node_modules"):
        if (REPO / name).exists():
            (root / name).symlink_to(REPO / name)
    log = root / "recorded.log"
    record = f'echo "$(basename "$0") $*" >> {log}\n'
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    real = sys.executable
    # The bridge already runs (started from this config): `serve` checks the config only.
    write_shim(
        venv / "responses-bridge",
        f'if [ "${{1:-}}" = serve ]; then shift; {record}'
        f'exec {real} -m bridge check-config "$@" >/dev/null; fi\n'
        f'exec {real} -m bridge "$@"\n',
    )
    write_shim(venv / "pip", record)
    for tool in ("ruff", "mypy"):
        write_shim(venv / tool, record)
    write_shim(
        venv / "python",
        # The test suite and the compliance suite run in CI of their own.
        f'if [ "${{1:-}}" = -m ] && [ "${{2:-}}" = pytest ]; then {record}exit 0; fi\n'
        f'if [ "${{1:-}}" = -m ] && [ "${{2:-}}" = tests.compliance.run ]; then '
        f"{record}exit 0; fi\n"
        f'exec {real} "$@"\n',
    )
    shims = root / "shims"
    shims.mkdir()
    for tool in RECORDED:
        write_shim(shims / tool, record)
    if REAL_CODEX.exists():
        # codex-config asks the installed Codex for its model catalog.
        write_shim(
            shims / "codex",
            f'if [ "${{1:-}}" = debug ]; then exec {REAL_CODEX} "$@"; fi\n{record}',
        )
    write_shim(
        shims / "python3",
        f'if [ "${{1:-}}" = -m ] && [ "${{2:-}}" = venv ]; then {record}exit 0; fi\n'
        f'exec {real} "$@"\n',
    )
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed to run the documented commands"
    # Every curl the docs give must succeed; none may hang.
    write_shim(shims / "curl", f'exec {curl} -sS --fail-with-body --max-time 20 "$@"\n')
    home = root / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RESPONSES_BRIDGE_", "XDG_")) and key != "STATE_DIRECTORY"
    }
    env.update(
        PATH=f"{shims}:{os.environ.get('PATH', '')}",
        HOME=str(home),
        STATE_DIRECTORY=str(root / "state"),
        DEEPSEEK_API_KEY="sk-docs-test",
        USER=os.environ.get("USER", "tester"),
    )
    return env


class Ids:
    """The ids printed so far, the latest of each kind standing for its placeholder."""

    def __init__(self) -> None:
        self.latest: dict[str, str] = {}

    def note(self, text: str) -> None:
        for kind in ("resp", "conv", "msg"):
            found = re.findall(rf"\b{kind}_[0-9a-f]{{32}}\b", text)
            if found:
                self.latest[kind] = found[-1]

    def fill(self, command: str) -> str:
        def one(match: re.Match[str]) -> str:
            kind = match[1]
            assert kind in self.latest, f"no {kind} id was printed before: {command}"
            return self.latest[kind]

        return PLACEHOLDER.sub(one, command)


async def run(command: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-o",
        "pipefail",
        "-c",
        command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await output_of(process, COMMAND_SECONDS)
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace")


async def seed(url: str, ids: Ids) -> None:
    """One response and one conversation (with a message), for commands that name one."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/v1/conversations",
            json={"items": [{"type": "message", "role": "user", "content": "seed"}]},
        ) as response:
            ids.note(await response.text())
        async with session.get(f"{url}/v1/conversations/{ids.latest['conv']}/items") as response:
            ids.note(await response.text())
        async with session.post(
            f"{url}/v1/responses", json={"model": "deepseek-v4-pro", "input": "seed"}
        ) as response:
            ids.note(await response.text())


@pytest.fixture
async def documented_bridge(fake_upstream: FakeUpstream, tmp_path: Path) -> Any:
    fake_upstream.responder = lambda body: thinking_text_reply(["Thinking."], ["Hello, world."])
    port = free_port()
    root = tmp_path / "sandbox"
    root.mkdir()
    env = make_sandbox(root, port, fake_upstream.url)
    bridge = BridgeProcess(
        root / "config.toml",
        port,
        env={"STATE_DIRECTORY": env["STATE_DIRECTORY"], "DEEPSEEK_API_KEY": "sk-docs-test"},
        log=tmp_path / "bridge.log",
    )
    await bridge.start()
    try:
        yield bridge, root, env, port
    finally:
        await bridge.stop()


def expected_answer(example: str) -> str:
    """What an example prints: the demo model's label, or the fake DeepSeek's answer."""
    return DEMO_LABEL if '"demo"' in example else "Hello, world."


def readable(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("document", DOCUMENTS, ids=readable)
async def test_every_documented_command_runs(documented_bridge: Any, document: Path) -> None:
    bridge, root, env, port = documented_bridge
    ids = Ids()
    await seed(bridge.url, ids)
    prelude: list[str] = []
    ran = 0
    for lang, text in blocks(document):
        text = text.replace("8787", str(port))
        if lang == "sh":
            for command in commands(text):
                command = ids.fill(command)
                if "codex-config" in command and not REAL_CODEX.exists():
                    if os.environ.get("REQUIRE_CODEX") == "1":
                        pytest.fail("the Codex CLI from npm is needed for codex-config")
                    continue
                script = "\n".join([*prelude, command])
                code, output = await run(script, root, env)
                assert code == 0, (
                    f"{readable(document)}: `{command}` exited {code}:\n{output[-3000:]}"
                )
                ids.note(output)
                ran += 1
                # Assignments and exports hold for the commands after them.
                if re.fullmatch(r"(export )?[A-Z_]+=\S+( +#.*)?", command.strip()):
                    prelude.append(command)
        elif lang == "python":
            example = root / "example.py"
            example.write_text(text)
            code, output = await run(f"{sys.executable} example.py", root, env)
            assert code == 0, f"{readable(document)}: python example failed:\n{output[-3000:]}"
            assert expected_answer(text) in output
            ran += 1
        elif lang == "js":
            if shutil.which("node") is None or not (REPO / "node_modules" / "openai").exists():
                if os.environ.get("REQUIRE_JS_CLIENTS") == "1":
                    pytest.fail("node and npm's openai are needed for the js examples")
                continue
            example = root / "example.mjs"
            example.write_text(text)
            code, output = await run("node example.mjs", root, env)
            assert code == 0, f"{readable(document)}: js example failed:\n{output[-3000:]}"
            assert expected_answer(text) in output
            ran += 1
    recorded = root / "recorded.log"
    if recorded.exists():
        for line in recorded.read_text().splitlines():
            assert line.split()[0] in (
                *RECORDED,
                "pip",
                "ruff",
                "mypy",
                "python",
                "python3",
                "responses-bridge",
            ), line
    if document.name in ("README.md", "cli.md", "service.md"):
        assert ran > 0, "this document's commands were expected to run"


def test_the_readme_starts_with_the_two_commands() -> None:
    """What the tool is, then installing and running it, then the test suite: the same
    command .ci/run ends with."""
    readme = (REPO / "README.md").read_text()
    first_two = [text for lang, text in blocks(REPO / "README.md") if lang == "sh"][:2]
    assert "responses-bridge serve --config config.toml" in first_two[0]
    assert first_two[1].strip().endswith(".venv/bin/python -m pytest")
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == ".venv/bin/python -m pytest"
    assert readme.index("## Quick start") < readme.index("## Try it with curl")
    assert len(readme.splitlines()) < 250, "the README stays a first-15-minutes read"
