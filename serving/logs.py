"""The server's log lines: timestamp, level, logger and message, as text or one JSON object
per line (``PATRON_LOG_FORMAT=json``), for uvicorn's loggers and Patron's alike. Access logs
stay off (serving/workers.py): a request line carries the customer id of its path.

Handed to uvicorn as its ``log_config`` (``logging.config.dictConfig``), so every worker
process configures itself the same way at start.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LEVELS = ("critical", "error", "warning", "info", "debug")
TEXT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_config(level: str, fmt: LogFormat = "text") -> dict[str, Any]:
    """A ``dictConfig`` for the server at ``level`` (one of ``LEVELS``) in ``fmt``."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": formatter},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": lvl},
        "loggers": {
            # uvicorn's own loggers write through the root's handler, in the same format
            "uvicorn": {"handlers": [], "level": lvl, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": lvl, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # faiss's loader reports at INFO which CPU features it probed: noise, not news
            "faiss": {"handlers": [], "level": "WARNING", "propagate": True},
        },
    }
