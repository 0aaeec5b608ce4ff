"""Run the idcode CLI with the floor routes of ``bench/identify_floor.py`` added to its app.

    python bench/_floor_server.py serve --port P ...    (as ``python -m idcode.cli ...``)

``idcode serve`` exactly as the service runs it (the same start-up, uvicorn options, app and
middleware), except that uvicorn is handed :func:`floor_app`: the service's own app with
five more routes, each doing one more of the steps ``POST /v1/identify`` cannot skip, with
the service's own functions and state (nothing stubbed). Each takes the body ``POST
/v1/identify`` takes and a relying party's token, and answers a small JSON document:

- ``POST /bench/floor/body``: the body parsed and validated by FastAPI into the route's model
  (``Identification``), the ``Authorization`` header read;
- ``.../token``: and the relying party's token read and checked (``read_request_token``,
  ``check_read_token`` against the party from the process's cache): its signature verified;
- ``.../code``: and the code verified (``idcode.verifier.verify`` with the online trust): the
  second signature;
- ``.../spend``: and a single use spent in Redis (``spend_request_token``; the token is sent
  again and again, so the spent ``jti`` is a fresh random one, the same work);
- ``.../raw``: what ``.../spend`` does from a plain Starlette route, the body parsed with
  ``json.loads`` and checked by hand: how much leaving FastAPI's request handling would save.

These routes exist only in this process: the service never has them.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from starlette.routing import Route

from idcode.errors import Refusal
from idcode.service.api.app import create_app
from idcode.service.api.deps import Services, bearer_token, spend_request_token
from idcode.service.api.routes.identity import Identification
from idcode.service.relyingparties import NOT_SIGNED
from idcode.service.requesttokens import check_read_token, read_request_token
from idcode.terminaltoken import RELYING_PARTY_AUDIENCE
from idcode.verifier import verify

STEPS = ("body", "token", "code", "spend")


class FloorRefused(Refusal):
    """The bench sent something the floor routes refuse: the run is void."""


async def _token(services: Services, token: str | None) -> str:
    """The party id of a checked relying-party token (as identity._relying_party checks it)."""
    if token is None:
        raise FloorRefused("missing_token", "no token")
    read = read_request_token(token, refused=FloorRefused, not_signed=NOT_SIGNED)
    party = services.parties.fresh(read.party_id) or services.parties.load(read.party_id)
    check_read_token(
        read,
        audience=RELYING_PARTY_AUDIENCE,
        public_jwk=None if party is None else party.public_jwk,
        refused=FloorRefused,
        not_signed=NOT_SIGNED,
        now=time.time(),
    )
    return read.party_id


def _code(services: Services, code: str) -> None:
    now = int(time.time())
    if not verify(code, services.online_trust(now), now).valid:
        raise FloorRefused("code", "the code does not verify")


def _answer(**extra: Any) -> Response:
    body = {"subject": "0" * 24, "attributes": {}, "purpose": "registration", **extra}
    return Response(json.dumps(body), media_type="application/json")


def _step_route(app: FastAPI, step: str) -> None:
    depth = STEPS.index(step)

    async def floor(presented: Identification, request: Request) -> Response:
        services: Services = request.app.state.services
        token = bearer_token(request)
        if depth >= 1:
            party_id = await _token(services, token)
        if depth >= 2:
            _code(services, presented.code)
        if depth >= 3:
            await spend_request_token(services, "relying party", party_id, secrets.token_hex(16))
        return _answer()

    app.post(f"/bench/floor/{step}", include_in_schema=False)(floor)


async def _raw(request: Request) -> Response:
    services: Services = request.app.state.services
    party_id = await _token(services, bearer_token(request))
    body = json.loads(await request.body())
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        return Response(status_code=422)
    if not isinstance(body.get("purpose"), str):
        return Response(status_code=422)
    _code(services, body["code"])
    await spend_request_token(services, "relying party", party_id, secrets.token_hex(16))
    return _answer()


def floor_app() -> FastAPI:
    app = create_app()
    for step in STEPS:
        _step_route(app, step)
    app.router.routes.append(Route("/bench/floor/raw", _raw, methods=["POST"]))

    @app.exception_handler(FloorRefused)
    async def refused(request: Request, exc: FloorRefused) -> Response:
        return Response(str(exc), status_code=400)

    return app


def main() -> int:
    run = uvicorn.run

    def run_floor(app: Any, **options: Any) -> None:
        # idcode serve hands uvicorn the service's factory; the same options, this factory.
        run("_floor_server:floor_app", **options)

    uvicorn.run = run_floor
    from idcode.cli import main as cli

    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
