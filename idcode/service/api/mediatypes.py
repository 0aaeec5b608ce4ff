"""JSON bodies only as JSON: a route that reads a JSON body answers a body of another media
type with 415 ``unsupported_media_type``, naming the type it takes.

FastAPI parses a body as JSON only when its Content-Type says so; any other body reaches
validation as bytes, and the caller read ``422 Input should be a valid dictionary`` about a
request whose only fault was its header (``curl -d`` sends
``application/x-www-form-urlencoded``). A body without a Content-Type is refused alike: FastAPI
does not read it as JSON either. The import route (``/v1/cards/import``) takes its own types
and checks them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from idcode.service.api.problems import Problem

JSON = "application/json"


def is_json(content_type: str) -> bool:
    """``application/json`` or a ``+json`` type (``application/merge-patch+json``), with or
    without parameters."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length != "0")


class JsonBodyRoute(APIRoute):
    """A route whose body, when it declares one, must be sent as JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        body = self.body_field
        if body is None or getattr(body.field_info, "media_type", JSON) != JSON:
            return handler

        async def json_only(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if _has_body(request) and not is_json(content_type or ""):
                raise Problem(
                    415,
                    "unsupported_media_type",
                    "The request body must be JSON.",
                    f"Send it as {JSON}.",
                    headers={"Accept-Post": JSON} if request.method == "POST" else None,
                )
            return await handler(request)

        return json_only
