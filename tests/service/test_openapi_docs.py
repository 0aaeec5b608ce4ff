"""The OpenAPI document is a reference a client can be written from: every operation has an
explicit, stable operation id, a description and examples, every example is valid against its
own schema, and closed vocabularies are named enums (docs/api.md, "Operations")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from idcode.claims import ALL_PROGRAMMES, AgeBand, Residency, programme_names
from idcode.reasons import Reason
from idcode.service.api.app import create_app
from idcode.service.api.examples import EXAMPLES
from idcode.service.models import CardStatus
from idcode.service.settings import Settings

DOCUMENT = create_app(Settings(environment="development")).openapi()
COMPONENTS = DOCUMENT["components"]
OPERATIONS = [
    (f"{method.upper()} {path}", operation)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
]
API_MD = Path(__file__).parents[2] / "docs" / "api.md"
OPERATION_ID = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


def resolved(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = COMPONENTS["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def examples_of(media: dict[str, Any]) -> list[Any]:
    """The examples a media type gives, its own or its schema's."""
    found = [media["example"]] if "example" in media else []
    found += [example["value"] for example in media.get("examples", {}).values()]
    schema = media.get("schema", {})
    found += resolved(schema).get("examples", [])
    if schema.get("type") == "array":
        found += [[item] for item in resolved(schema.get("items", {})).get("examples", [])]
    return found


def bodies(operation: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, media type object) for the request body and each success response's body."""
    found = [
        (f"request {media_type}", media)
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items()
    ]
    for status, response in operation["responses"].items():
        if status.startswith("2"):
            found += [
                (f"{status} {media_type}", media)
                for media_type, media in response.get("content", {}).items()
                # A page, or the code drawn as an image from what the JSON example shows.
                if not media_type.startswith(("text/html", "image/"))
            ]
    return found


def test_operation_ids_are_explicit_unique_and_snake_case() -> None:
    ids = [operation.get("operationId", "") for _, operation in OPERATIONS]
    assert [name for name in ids if not OPERATION_ID.fullmatch(name)] == []
    assert len(set(ids)) == len(ids)
    # FastAPI's generated ids end with the method and repeat the path: none is left.
    assert [name for name in ids if re.search(r"_(get|post|put|delete)$", name)] == []


@pytest.mark.parametrize(("route", "operation"), OPERATIONS, ids=[r for r, _ in OPERATIONS])
def test_every_operation_has_a_description_and_an_example_of_each_body(
    route: str, operation: dict[str, Any]
) -> None:
    assert operation.get("summary"), route
    assert len(operation.get("description", "")) >= 40, route
    for where, media in bodies(operation):
        assert examples_of(media), f"{route}: no example of the {where} body"


@pytest.mark.parametrize(("route", "operation"), OPERATIONS, ids=[r for r, _ in OPERATIONS])
def test_every_example_is_valid_against_its_schema(route: str, operation: dict[str, Any]) -> None:
    for where, media in bodies(operation):
        if "schema" not in media:
            continue
        validator = jsonschema_rs.Draft202012Validator(
            {**media["schema"], "components": COMPONENTS}
        )
        for example in examples_of(media):
            errors = [error.message for error in validator.iter_errors(example)]
            assert errors == [], f"{route}, {where}: {example}"


def test_docs_api_md_lists_every_operation_id_with_its_route() -> None:
    listed = set(
        re.findall(r"^\| `([a-z0-9_]+)` \| `([A-Z]+ [^`]+)` \|$", API_MD.read_text(), re.M)
    )
    assert listed == {(operation["operationId"], route) for route, operation in OPERATIONS}


def test_every_example_belongs_to_an_operation_of_the_document() -> None:
    ids = {operation["operationId"] for _, operation in OPERATIONS}
    assert set(EXAMPLES) - ids == set()


@pytest.mark.parametrize(
    ("name", "members"),
    [
        ("Reason", [reason.value for reason in Reason]),
        ("Residency", [member.name.lower() for member in Residency]),
        ("Programme", programme_names(ALL_PROGRAMMES)),
        ("AgeBand", [member.name.lower() for member in AgeBand]),
        ("CardStatus", [member.value for member in CardStatus]),
    ],
)
def test_closed_vocabularies_are_named_enums_in_the_one_spelling(
    name: str, members: list[str]
) -> None:
    schema = COMPONENTS["schemas"][name]
    assert sorted(schema["enum"]) == sorted(members)
    assert all("-" not in member for member in schema["enum"])
