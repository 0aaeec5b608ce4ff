"""The docs pages, their vendored files and the home page, in process (the browser's view is
tests/web/test_api_docs_browser.py): nothing points elsewhere, the files are npm's as
docs/dependencies.md records them, and the home page links only to what this service has."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from idcode.service.api.app import create_app
from idcode.service.api.examples import PUBLIC_JWK as EXAMPLE_JWK
from idcode.service.api.routes.apidocs import ASSET_FILES, SUBSTITUTIONS
from idcode.service.settings import Settings
from tests.services import REDIS_RUN_PREFIX

ROOT = Path(__file__).parents[2]
ASSETS = ROOT / "idcode" / "service" / "api-docs"
ELSEWHERE = re.compile(rb"""(?:src|href)=["']?(?:https?:)?//""")


def service(workdir: Path, postgres_url: str, redis_url: str, **overrides: Any) -> TestClient:
    settings = Settings(
        environment="development",
        keys_dir=workdir / "keys",
        data_dir=workdir / "data",
        demo_data=False,
        database_url=postgres_url,
        redis_url=redis_url,
        redis_prefix=f"{REDIS_RUN_PREFIX}{secrets.token_hex(3)}:",
        **overrides,
    )
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[TestClient]:
    """One development service for the module: these tests only read."""
    with service(tmp_path_factory.mktemp("api-docs"), postgres_url, redis_url) as test_client:
        yield test_client


def test_the_vendored_files_are_the_ones_docs_dependencies_md_names() -> None:
    recorded = (ROOT / "docs" / "dependencies.md").read_text()
    for name in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css"):
        assert hashlib.sha256((ASSETS / name).read_bytes()).hexdigest() in recorded, name
    assert hashlib.sha256((ASSETS / "redoc/redoc.standalone.js").read_bytes()).hexdigest() in (
        recorded
    )
    for folder in ("swagger-ui", "redoc"):
        assert (ASSETS / folder / "LICENSE").is_file()


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/"])
def test_pages_load_nothing_from_elsewhere_and_say_so_in_their_policy(
    client: TestClient, page: str
) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert ELSEWHERE.findall(response.content) == []
    assert b"fonts.googleapis.com" not in response.content
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "http" not in policy


def test_swagger_ui_asks_no_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_every_file_the_pages_name_is_served_from_the_package(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        for path in re.findall(r"""(?:src|href)=["'](/api-docs/[^"']+)""", client.get(page).text):
            assert client.get(path).status_code == 200, path
    for name in ASSET_FILES:
        response = client.get(f"/api-docs/{name}")
        assert response.status_code == 200, name
        again = client.get(f"/api-docs/{name}", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304


def test_redoc_is_served_without_its_cdn_logo_and_the_repository_file_keeps_it(
    client: TestClient,
) -> None:
    [(cdn_logo, _)] = SUBSTITUTIONS["redoc/redoc.standalone.js"]
    assert cdn_logo in (ASSETS / "redoc" / "redoc.standalone.js").read_bytes()
    assert b"cdn.redoc.ly" not in client.get("/api-docs/redoc/redoc.standalone.js").content


def test_a_file_not_vendored_for_the_pages_is_a_404_problem(client: TestClient) -> None:
    for path in ("/api-docs/redoc/redoc.standalone.js.LICENSE.txt", "/api-docs/../app.py"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


def links(client: TestClient) -> list[str]:
    return re.findall(r'<a href="([^"]+)"', client.get("/").text)


def test_home_page_links_the_docs_the_console_and_the_development_wallet(
    client: TestClient,
) -> None:
    assert links(client) == ["/docs", "/redoc", "/openapi.json", "/console/", "/wallet/"]
    for href in links(client):
        assert client.get(href, follow_redirects=False).status_code in (200, 303), href


@pytest.fixture
def app_without_wallet(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[TestClient]:
    """A service whose citizens sign in elsewhere, with no endpoints named for the wallet."""
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [EXAMPLE_JWK]}))
    issuer = {"oidc_issuer": "https://id.example.gov.cn", "oidc_jwks_file": jwks}
    with service(tmp_path, postgres_url, redis_url, **issuer) as test_client:
        yield test_client


def test_home_page_links_no_wallet_when_no_identity_provider_is_named_for_it(
    app_without_wallet: TestClient,
) -> None:
    assert links(app_without_wallet) == ["/docs", "/redoc", "/openapi.json", "/console/"]
    assert app_without_wallet.get("/wallet/config.json").status_code == 404
