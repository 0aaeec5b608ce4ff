"""What a command says about the service's problem documents (idcode.httpclient): the detail
and, for a 422, its validation errors; a hostile shape of either is left out, never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest

from idcode.errors import ServiceError
from idcode.httpclient import _problem


def said(document: dict[str, Any]) -> str:
    error = _problem(
        422, {"Content-Type": "application/problem+json"}, json.dumps(document).encode()
    )
    assert isinstance(error, ServiceError)
    return str(error)


def test_validation_errors_are_said_field_by_field_without_the_body_prefix() -> None:
    document = {
        "reason": "invalid_request",
        "detail": "The request is not valid.",
        "errors": [
            {"loc": ["body", "scene"], "msg": "scene must be one of community, parking"},
            {"loc": ["query", "limit"], "msg": "Input should be a valid integer"},
        ],
    }
    assert said(document) == (
        "the service answered 422 invalid_request: The request is not valid. "
        "scene: scene must be one of community, parking. limit: Input should be a valid integer."
    )


@pytest.mark.parametrize(
    "errors",
    [None, "not a list", [1, "two", None], [{"loc": "body", "msg": 3}], [{"msg": None}]],
)
def test_errors_of_another_shape_are_left_out(errors: object) -> None:
    assert said({"reason": "invalid_request", "detail": "No.", "errors": errors}) == (
        "the service answered 422 invalid_request: No."
    )


def test_control_characters_and_length_in_errors_are_neutralised() -> None:
    errors = [{"loc": ["body", "x\n\x1b[2J"], "msg": "m" * 5000}] * 50
    text = said({"reason": "invalid_request", "errors": errors})
    assert "\n" not in text and "\x1b" not in text
    assert len(text) < 700
