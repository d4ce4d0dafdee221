"""Structured logging: a request id on every log line, plain text or one JSON object per line.

The request id comes from the ``X-Request-ID`` header (when it is a sane token) or is made
up; it lives in Flask's ``g``, is added to every record by :class:`RequestIdFilter` (``-``
outside a request) and is echoed in the ``X-Request-ID`` response header. ``LOG_JSON=true``
switches the handler to :class:`JsonFormatter`. One access line per request
(``assistant.web.access``) gives method, path, status and duration.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone

from flask import Flask, g, has_request_context, request

HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_HANDLER_NAME = "arsonor-assistant"
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"

access_log = logging.getLogger("assistant.web.access")


def current_request_id() -> str:
    if has_request_context():
        return g.get("request_id", "-")
    return "-"


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's, or ``-``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id()
        return True


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                          "request_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC ISO), level, logger, request_id, message, any
    ``extra=`` fields, and the exception text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", None) or current_request_id(),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                data[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure_logging(json_lines: bool = False, level: int | str = logging.INFO,
                      stream=None) -> logging.Handler:
    """Install (or reconfigure) the app's one handler on the root logger; idempotent."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.set_name(_HANDLER_NAME)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    elif stream is not None:
        handler.setStream(stream)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
    wanted = logging.getLevelName(level) if isinstance(level, str) else level
    if root.level == logging.NOTSET or root.level > wanted:
        root.setLevel(wanted)
    return handler


def init_app(app: Flask) -> None:
    """Request ids in and out, and one access line per request."""

    @app.before_request
    def _request_id():
        incoming = request.headers.get(HEADER, "").strip()
        g.request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        g.log_started = time.perf_counter()

    @app.after_request
    def _echo(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers[HEADER] = request_id
        started = g.get("log_started")
        took = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        access_log.info("%s %s %s %.1f ms", request.method, request.path, response.status_code, took,
                        extra={"method": request.method, "path": request.path,
                               "status": response.status_code, "duration_ms": round(took, 1)})
        return response
