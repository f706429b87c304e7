"""The server's log output: one stream (stdout, as containers and log collectors expect), text or JSON lines.

`--json-output` writes one JSON object per line with the time (ISO 8601, UTC), level, logger and message, and
the exception's traceback as one string when there is one, so a log shipper never splits a record across
lines. e5rt's own access line carries no text of any request.
"""

from __future__ import annotations

import json
import logging
import sys
import time

# The loggers a served process writes to: e5rt's own (server, pull) and uvicorn's.
_LOGGERS = ("e5rt", "uvicorn", "uvicorn.error", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """A LogRecord as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry = {
            "time": f"{created}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, json_lines: bool) -> None:
    """Send e5rt's and uvicorn's records to one stdout handler at LEVEL, as text or JSON lines.

    uvicorn is started with log_config=None (server/main.py), so it adds no handlers of its own: every record
    reaches this one and is formatted alike."""
    handler = logging.StreamHandler(sys.stdout)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.setLevel(level.upper())
        logger.propagate = False
        logger.addHandler(handler)
