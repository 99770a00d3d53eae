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


class ClientErrorFilter(logging.Filter):
    """aiohttp logs a client's malformed request (an unsupported Content-Encoding, a corrupt
    gzip stream) at ERROR with a traceback, after answering it 400. That is the client's
    fault, not ours: keep one warning line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        from aiohttp.http_exceptions import HttpProcessingError
        from aiohttp.web_protocol import RequestPayloadError

        error: BaseException | None = record.exc_info[1]
        while error is not None:
            if isinstance(error, HttpProcessingError | RequestPayloadError):
                record.msg = f"bad request from a client: {str(error).strip()}".replace("\n", " ")
                record.args = None
                record.exc_info = None
                record.exc_text = None
                record.levelno, record.levelname = logging.WARNING, "WARNING"
                return True
            error = error.__cause__ or error.__context__
        return True


def setup(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    handler.addFilter(ClientErrorFilter())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is one line per request: keep it at warning unless debugging.
    logging.getLogger("aiohttp.access").setLevel("DEBUG" if level == "debug" else "WARNING")
    # APScheduler narrates every job run at INFO; our jobs log their own outcome.
    logging.getLogger("apscheduler").setLevel("WARNING")
