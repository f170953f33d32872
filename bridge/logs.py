"""Where the bridge's log lines go and how they look: text or JSON, on stderr.

Under systemd, stderr is the journal, which stamps every line itself: a timestamp of ours
would be printed twice, so it is left out there. systemd sets JOURNAL_STREAM to the
device and inode of that stream (systemd.exec(5)); it counts only while stderr is still it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import IO

import orjson

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_UNDER_JOURNALD = "%(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and the
    exception's traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def writes_to_journal(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Whether `stream` is the journal's stream systemd connected (JOURNAL_STREAM)."""
    expected = environ.get("JOURNAL_STREAM")
    if not expected:
        return False
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def configure_logging(
    level: str, log_format: str, environ: Mapping[str, str], stream: IO[str] | None = None
) -> None:
    """The root logger's one handler, on stderr."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif writes_to_journal(stream, environ):
        handler.setFormatter(logging.Formatter(TEXT_UNDER_JOURNALD))
    else:
        handler.setFormatter(logging.Formatter(TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
