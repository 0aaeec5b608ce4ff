"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the file is valid
against the Compose Specification's JSON schema (tests/schemas/compose-spec.json, vendored:
docs/dependencies.md), and it holds what the deployment relies on (issue 15, items 4 and 7):
migrations once, before the service; restart policies; a health check on /readyz; host ports
that leave a local PostgreSQL and Redis alone; Prometheus and Grafana in a profile."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "schemas" / "compose-spec.json"
LONG_RUNNING = ("postgres", "redis", "idcode", "prometheus", "grafana")
# Written by the metrics part of issue 15 (item 4): the compose profile points at them.
FROM_THE_METRICS_WORK = (
    "deploy/prometheus/prometheus.yml",
    "deploy/prometheus/alerts.yml",
    "deploy/grafana/idcode-dashboard.json",
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def test_the_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text(encoding="utf-8")))
    problems = [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert problems == []


def test_the_schema_check_refuses_what_compose_refuses(compose: dict[str, Any]) -> None:
    validator = jsonschema_rs.validator_for(json.loads(SCHEMA.read_text(encoding="utf-8")))
    broken = {**compose, "services": {**services(compose)}}
    broken["services"]["idcode"] = {
        **services(compose)["idcode"],
        "depends_on": {"migrate": {"condition": "service_finished"}},
    }
    assert not validator.is_valid(broken)


def test_migrations_run_once_in_a_one_shot_service_before_the_service_starts(
    compose: dict[str, Any],
) -> None:
    migrate, idcode = services(compose)["migrate"], services(compose)["idcode"]
    assert migrate["command"] == ["idcode", "db", "upgrade"]
    assert migrate["restart"] == "no"  # one shot: it exits 0, and is not started again
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert idcode["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "upgrade" not in " ".join(idcode["command"])
    assert (
        migrate["environment"]["IDCODE_DATABASE_URL"]
        == (idcode["environment"]["IDCODE_DATABASE_URL"])
    )
    assert migrate["build"] == idcode["build"] and migrate["image"] == idcode["image"]


def test_every_long_running_service_restarts_and_nothing_else_is_there(
    compose: dict[str, Any],
) -> None:
    assert set(services(compose)) == {*LONG_RUNNING, "migrate"}
    for name in LONG_RUNNING:
        assert services(compose)[name]["restart"] == "unless-stopped", name
        assert "healthcheck" in services(compose)[name], name


def test_the_services_health_check_is_readyz_in_compose_and_in_the_image(
    compose: dict[str, Any],
) -> None:
    check = " ".join(services(compose)["idcode"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in check
    healthcheck = re.search(r"^HEALTHCHECK .*\n(?:.*\n)*?.*$", DOCKERFILE.read_text(), re.M)
    assert healthcheck is not None and "http://127.0.0.1:8000/readyz" in healthcheck.group()


def test_host_ports_are_on_loopback_and_leave_a_local_postgresql_and_redis_alone(
    compose: dict[str, Any],
) -> None:
    published: dict[str, tuple[str, str]] = {}
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            published_port = re.fullmatch(
                r"127\.0\.0\.1:\$\{IDCODE_(?:\w+_)?PORT:-(\d+)\}:(\d+)", port
            )
            assert published_port is not None, f"{name}: {port} (loopback, a variable)"
            host, container = published_port.groups()
            published[name] = (host, container)
    assert published == {
        "postgres": ("15432", "5432"),
        "redis": ("16379", "6379"),
        "idcode": ("8000", "8000"),
        "prometheus": ("19090", "9090"),
        "grafana": ("13000", "3000"),
    }


def test_monitoring_is_a_profile_and_the_rest_starts_without_it(
    compose: dict[str, Any],
) -> None:
    profiled = {name for name, s in services(compose).items() if "profiles" in s}
    assert profiled == {"prometheus", "grafana"}
    assert all(services(compose)[name]["profiles"] == ["monitoring"] for name in profiled)


def bind_sources(compose: dict[str, Any]) -> dict[str, str]:
    """Each bind mount's source (relative to the repository) and its target."""
    return {
        volume["source"].removeprefix("./"): volume["target"]
        for service in services(compose).values()
        for volume in service.get("volumes", [])
        if isinstance(volume, dict) and volume["type"] == "bind"
    }


def test_bind_mounts_are_read_only_and_never_create_a_missing_source(
    compose: dict[str, Any],
) -> None:
    for service in services(compose).values():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                assert volume["read_only"] is True
                assert volume["bind"]["create_host_path"] is False
            else:  # the short syntax is for named volumes only
                assert volume.split(":")[0] in compose["volumes"]


def test_grafana_is_provisioned_with_prometheus_and_the_idcode_dashboard(
    compose: dict[str, Any],
) -> None:
    binds = bind_sources(compose)
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert binds["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"  # the compose service and its port
    [provider] = yaml.safe_load((provisioning / "dashboards" / "idcode.yml").read_text())[
        "providers"
    ]
    dashboard = binds["deploy/grafana/idcode-dashboard.json"]
    assert provider["options"]["path"] == str(Path(dashboard).parent)
    grafana = services(compose)["grafana"]["environment"]
    assert grafana["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboard


def test_prometheus_gets_its_metrics_token_file(compose: dict[str, Any]) -> None:
    [secret] = services(compose)["prometheus"]["secrets"]
    assert secret["target"] == "/etc/prometheus/secrets/idcode-metrics-token"
    default = re.fullmatch(
        r"\$\{IDCODE_METRICS_TOKEN_FILE:-\./(.+)\}",
        compose["secrets"][secret["source"]]["file"],
    )
    assert default is not None and (ROOT / default.group(1)).is_file()


def test_the_files_the_monitoring_profile_mounts_are_in_the_repository(
    compose: dict[str, Any],
) -> None:
    binds = bind_sources(compose)
    assert set(FROM_THE_METRICS_WORK) <= set(binds)
    missing = [path for path in binds if not (ROOT / path).exists()]
    assert missing == []
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        target
        for job in scrape["scrape_configs"]
        for config in job.get("static_configs", [])
        for target in config["targets"]
    ]
    assert "idcode:8000" in targets  # the compose service's name and its container port
    token = scrape["scrape_configs"][0]["authorization"]["credentials_file"]
    assert token == services(compose)["prometheus"]["secrets"][0]["target"]


def test_the_dockerfile_agrees_with_the_compose_file(compose: dict[str, Any]) -> None:
    dockerfile = DOCKERFILE.read_text()
    idcode = services(compose)["idcode"]
    assert "EXPOSE 8000" in dockerfile and "IDCODE_PORT=8000" in dockerfile
    assert idcode["ports"][0].endswith(":8000")
    assert "IDCODE_KEYS_DIR=/app/keys" in dockerfile
    assert "idcode-keys:/app/keys" in idcode["volumes"]
    # Run on its own, the image migrates, then serves (safe with replicas: the advisory lock).
    assert 'CMD ["sh", "-c", "idcode db upgrade && exec idcode serve --host 0.0.0.0"]' in (
        dockerfile
    )
