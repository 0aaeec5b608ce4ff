"""The log formatters (idcode/logs.py): one JSON object per line with the request id and the
caller's fields; an exception's type and place, never its message."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest

from idcode.config import CoreSettings
from idcode.errors import ConfigurationError
from idcode.logs import JsonFormatter, TextFormatter, fields, request_id


def _record(message: str, *args: object, exc: bool = False, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("idcode.test", logging.WARNING, __file__, 1, message, args, None)
    if exc:
        id_number = "110101199003077777"
        try:
            raise ValueError(f"holds {id_number}")
        except ValueError:
            record.exc_info = sys.exc_info()
    record.__dict__.update(extra)
    return record


def test_a_json_line_has_time_level_logger_message_and_the_callers_fields() -> None:
    line = json.loads(
        JsonFormatter().format(_record("%s refused", "gate", **fields(reason="expired", n=None)))
    )
    assert line["time"].endswith("Z") and line["time"][10] == "T"
    assert (line["level"], line["logger"], line["message"]) == (
        "warning",
        "idcode.test",
        "gate refused",
    )
    assert line["reason"] == "expired" and "n" not in line and "request_id" not in line


def test_a_line_logged_within_a_request_carries_its_id_in_both_formats() -> None:
    token = request_id.set("req-00000001")
    try:
        assert json.loads(JsonFormatter().format(_record("x")))["request_id"] == "req-00000001"
        assert TextFormatter().format(_record("x")).endswith(" request_id=req-00000001")
    finally:
        request_id.reset(token)


def test_a_newline_in_a_message_stays_inside_one_json_line() -> None:
    formatted = JsonFormatter().format(_record("first\nsecond 江汉"))
    assert "\n" not in formatted and "江汉" in formatted
    assert json.loads(formatted)["message"] == "first\nsecond 江汉"


def test_an_exception_is_logged_by_type_and_place_never_by_its_message() -> None:
    formatted = JsonFormatter().format(_record("failed", exc=True))
    line = json.loads(formatted)
    assert line["exception"] == "ValueError" and "test_logs.py" in line["stack"]
    assert "110101199003077777" not in formatted


def test_an_unknown_log_format_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError) as refused:
        CoreSettings.from_environment({"IDCODE_LOG_FORMAT": "xml"})
    assert "IDCODE_LOG_FORMAT" in str(refused.value) and "'json'" in str(refused.value)
    assert CoreSettings.from_environment({"IDCODE_LOG_FORMAT": "json"}).log_format == "json"
