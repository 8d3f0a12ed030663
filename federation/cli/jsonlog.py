"""Structured logs: one JSON object per line (``--log-json``).

Fields: ``ts`` (RFC 3339 UTC), ``level``, ``logger``, ``msg``, and
``exc`` when an exception is attached. Extra attributes given with
``log.info(..., extra={...})`` are copied when they are JSON values.
"""
from __future__ import annotations

import json
import logging
import time

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and isinstance(value, (str, int, float, bool, type(None))):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


def use_json_logs(level: int = logging.INFO) -> None:
    """Replace the root logger's handlers' formatters with ``JsonFormatter``."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level)
    for h in root.handlers:
        h.setFormatter(JsonFormatter())
