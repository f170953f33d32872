"""The log as the service writes it: text without our timestamp under journald, or JSON."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.processes import BridgeProcess, free_port

CONFIG = """
[server]
{server}

[providers.demo]
profile = "demo"

[models.demo]
provider = "demo"
"""
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


async def start_and_stop(tmp_path: Path, server: str, journal: bool) -> list[str]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(server=server))
    log = tmp_path / "bridge.log"
    log.touch()
    status = os.stat(log)
    env: dict[str, str | None] = {"STATE_DIRECTORY": str(tmp_path / "state")}
    # systemd's value: the journal stream's device and inode, here the file stderr goes to.
    env["JOURNAL_STREAM"] = f"{status.st_dev}:{status.st_ino}" if journal else None
    bridge = BridgeProcess(config, free_port(), env=env, log=log, log_level="info")
    await bridge.start()
    assert await bridge.terminate() == 0
    return log.read_text().splitlines()


async def test_under_journald_lines_have_no_timestamp_of_ours(tmp_path: Path) -> None:
    lines = await start_and_stop(tmp_path, "", journal=True)
    listening = [line for line in lines if "listening on" in line]
    assert listening and listening[0].startswith("INFO bridge: responses-bridge")
    assert not any(STAMP.match(line) for line in lines), lines


async def test_elsewhere_lines_start_with_the_time(tmp_path: Path) -> None:
    lines = await start_and_stop(tmp_path, "", journal=False)
    assert lines and all(STAMP.match(line) for line in lines), lines


async def test_log_format_json_writes_one_object_per_line(tmp_path: Path) -> None:
    lines = await start_and_stop(tmp_path, 'log_format = "json"', journal=True)
    entries = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    listening = next(e for e in entries if "listening on" in e["message"])
    assert listening["level"] == "info" and listening["logger"] == "bridge"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", listening["time"])
