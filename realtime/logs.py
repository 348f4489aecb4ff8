"""Logs: one JSON object per line on stderr.

Uvicorn's access log is off: at member-day rates it costs more than the award itself, and a
WebSocket URL may carry a member token in its query string.
"""

from __future__ import annotations

import logging
import re
import time

import orjson

# A WebSocket URL may carry a member token (`?token=`); uvicorn logs the URL of each handshake.
_TOKEN_IN_URL = re.compile(r"(token=)[^&\s\"']+")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _TOKEN_IN_URL.sub(r"\1***", record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class QuietHandshakes(logging.Filter):
    """Drop uvicorn's two info lines per WebSocket handshake: 20,000 lines per 10,000 reconnects."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = str(record.msg)
        return not ("WebSocket" in message or message in ("connection open", "connection closed"))


LOG_CONFIG: dict[str, object] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "realtime.logs.JsonFormatter"}},
    "filters": {"quiet_handshakes": {"()": "realtime.logs.QuietHandshakes"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
            "filters": ["quiet_handshakes"],
        }
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "uvicorn": {"handlers": [], "propagate": True},
        "uvicorn.error": {"handlers": [], "propagate": True},
        "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
    },
}
