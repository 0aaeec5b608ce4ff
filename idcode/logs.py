"""Log lines as text or as one JSON object per line (``IDCODE_LOG_FORMAT``), for the service
and the terminal alike: the standard library's logging with a formatter of our own.

A line carries the time (UTC, with its offset), the level, the logger, the message, the
request id of the request it belongs to (``request_id``, set by the service for the length
of a request; the formatter reads it, so every line logged while a request is handled
carries it, uvicorn's and the libraries' included) and the structured fields its caller
passed with ``extra=fields(...)``. Callers log identifiers the service made (route
templates, reasons, terminal ids), never personal data: no formatter can tell an ID number
from a counter, so none tries.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The id of the request being handled, for every line logged while it is.
request_id: ContextVar[str | None] = ContextVar("idcode_request_id", default=None)

#: The attribute of a LogRecord that holds its structured fields (``fields(...)``).
FIELDS = "idcode_fields"


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured fields a JSON line carries as its own members
    (and a text line leaves to its message). None values are left out."""
    return {FIELDS: {name: value for name, value in values.items() if value is not None}}


def _time(record: logging.LogRecord) -> str:
    at = datetime.fromtimestamp(record.created, UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, then
    ``request_id`` and the record's fields. Non-ASCII stays readable (``ensure_ascii``
    off); a newline in a message is escaped, so one record is always one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            line["request_id"] = current
        extra = getattr(record, FIELDS, None)
        if isinstance(extra, dict):
            for name, value in extra.items():
                line.setdefault(name, value)
        if record.exc_info and record.exc_info[1] is not None:
            # The type and where, never the exception's message: it is not vetted text.
            error = record.exc_info[1]
            line["exception"] = type(error).__name__
            line["stack"] = "".join(traceback.format_tb(error.__traceback__))
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, with ``request_id=...`` appended to the lines of a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        current = request_id.get()
        return text if current is None else f"{text} request_id={current}"


def formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def logging_config(
    log_format: LogFormat, *, level: str = "INFO", quiet: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document: every line to stderr in ``log_format``.

    It is what ``idcode serve`` gives uvicorn as ``log_config``, so each worker process
    applies it as it starts: uvicorn's loggers have no handler of their own and reach the
    root's. ``quiet`` loggers write warnings and worse only."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"idcode": {"()": f"{__name__}.formatter", "log_format": log_format}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "idcode",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"level": "WARNING"} for name in quiet},
    }


def configure(log_format: LogFormat, level: int = logging.INFO) -> None:
    """Send this process's log lines to stderr in ``log_format`` (the terminal's ``run``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler], force=True)
