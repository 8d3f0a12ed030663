"""Logging of the CLI: plain lines by default, JSON lines with ``--log-json``.

Every long-running command (``serve``, ``sync --watch``, ``export --watch``,
``cosign run``, ``witness serve``, ``platform serve``) takes ``--log-json``
(``log_json_option``). JSON lines come from python-json-logger: one object per
line with ``ts`` (RFC 3339, UTC), ``level`` (lower case), ``logger``, ``msg``,
``exc`` when an exception is attached, and every ``extra={...}`` field of the
call, e.g. ``feed``, ``outcome``, ``kind``, ``version`` of a sync outcome
(``sync.orchestrator``) or ``remote_address``, ``first_request_line``,
``response_status``, ``response_size``, ``request_time`` of an access-log
line (``aiohttp.access``, which every server started by
``net.httpserver.run_app`` writes).

Logs go to stderr; stdout stays the command's own output.
"""
from __future__ import annotations

import logging
from datetime import datetime

import click
from pythonjsonlogger.json import JsonFormatter as _LibraryJsonFormatter

PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_JSON = "federation.log_json"  # set in the click context's meta when --log-json is given


class JsonFormatter(_LibraryJsonFormatter):
    """python-json-logger with our field names (stable since the first ``--log-json``)."""

    def __init__(self):
        super().__init__("{levelname}{name}{message}", style="{", timestamp="ts",
                         rename_fields={"levelname": "level", "name": "logger", "message": "msg",
                                        "exc_info": "exc"})

    def process_log_record(self, log_data):
        log_data["level"] = str(log_data.get("level", "")).lower()
        ts = log_data.get("ts")
        if isinstance(ts, datetime):  # the library's UTC datetime, as RFC 3339 with "Z"
            log_data["ts"] = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return log_data


def setup(verbose: bool = False) -> None:
    """Plain log lines on stderr (the group's default, before any command option)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=PLAIN)


def use_json_logs() -> None:
    """Switch every root handler to ``JsonFormatter``."""
    root = logging.getLogger()
    if not root.handlers:
        setup()
    for h in root.handlers:
        h.setFormatter(JsonFormatter())


def _on_log_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[LOG_JSON] = True
        use_json_logs()
    return value


def log_json_option(f):
    """``--log-json`` on a long-running command; takes effect before the command runs."""
    return click.option("--log-json", is_flag=True, expose_value=False, callback=_on_log_json,
                        help="Write logs as JSON lines on stderr (ts, level, logger, msg, and fields "
                             "such as feed, outcome, kind, version; access-log fields for servers).")(f)
