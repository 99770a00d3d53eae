"""Logging: one line per event, readable text by default or JSON; secrets never printed."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# Anything shaped like one of our tokens or secrets, or a bearer header, is masked even if a
# bug tries to log it.
_SECRET = re.compile(r"(tice_(?:dev|enr)_)[A-Za-z0-9_\-]+|(Bearer\s+)\S+", re.IGNORECASE)


def redact(text: str) -> str:
    return _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = f"{when} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return redact(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per request: keep it at warning unless debugging.
    logging.getLogger("aiohttp.access").setLevel("DEBUG" if level == "debug" else "WARNING")
    # APScheduler narrates every job run at INFO; our jobs log their own outcome.
    logging.getLogger("apscheduler").setLevel("WARNING")
