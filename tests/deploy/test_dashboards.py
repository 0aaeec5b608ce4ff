"""The Grafana dashboard and the Prometheus configuration in deploy/: they parse, they use only
series the service and the terminal publish (as docs/operations.md lists them, which is what
the code emits), and Prometheus's own checker accepts them (promtool, from Debian's
``prometheus`` package, where it is installed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from idcode.service import metrics
from idcode.terminal.metrics import RuntimeSnapshot, render

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "idcode-dashboard.json"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
SERIES = re.compile(r"\bidcode_[a-z_]+[a-z]")
GRID_WIDTH = 24


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def queries() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def names(families: Any) -> set[str]:
    """Series names as docs/operations.md writes them: counters with ``_total``."""
    return {
        family.name + ("_total" if family.type == "counter" else "")
        for family in families
        if family.name.startswith("idcode_")
    }


def emitted() -> set[str]:
    """Every series the service and the terminal runtime publish."""
    metrics.initialise("WH1:")
    service = names(text_string_to_metric_families(generate_latest(REGISTRY).decode()))
    fleet: list[Metric] = [
        *metrics.FleetCollector._per_scene([], 0),
        *metrics.FleetCollector._per_terminal([], 0),
    ]
    snapshot = RuntimeSnapshot(
        terminal="00000000-0000-4000-8000-000000000000",
        scene="community",
        site="site-1",
        now=100.0,
        online=True,
        decisions={(True, "ok"): 1},
        journal_backlog=0,
        last_sync=90.0,
        trust_version=1,
        trust_signed_at=50,
        trust_fresh_until=500,
        clock_drift=0,
    )
    terminal = names(text_string_to_metric_families(render(snapshot)))
    return service | names(fleet) | terminal


def documented() -> set[str]:
    return set(re.findall(r"`(idcode_[a-z_]+[a-z])", OPERATIONS.read_text(encoding="utf-8")))


def used_series(expression: str) -> set[str]:
    """The series an expression reads, histogram suffixes taken off."""
    return {
        re.sub(r"_(bucket|count|sum)$", "", name)
        if name.startswith("idcode_http_request_duration_seconds")
        else name
        for name in SERIES.findall(expression)
    }


def test_operations_doc_lists_exactly_the_series_the_code_publishes() -> None:
    assert documented() == emitted()


def test_the_dashboard_and_the_alerts_use_only_published_series() -> None:
    published = emitted()
    expressions = queries() + [rule["expr"] for rule in alert_rules()]
    used = set().union(*(used_series(expression) for expression in expressions))
    assert used, "no idcode series in the dashboard or the alerts"
    assert used <= published, used - published
    # Each part of the issue is on the dashboard: the service and both sides of the fleet.
    dashboard_series = set().union(*(used_series(query) for query in queries()))
    for expected in (
        "idcode_codes_issued_total",
        "idcode_verifications_total",
        "idcode_identifications_total",
        "idcode_http_request_duration_seconds",
        "idcode_rate_limited_requests_total",
        "idcode_state_degraded",
        "idcode_database_errors_total",
        "idcode_terminal_last_seen_timestamp_seconds",
        "idcode_terminal_clock_drift_seconds",
        "idcode_terminal_trust_version_lag",
        "idcode_terminal_journal_backlog_events",
        "idcode_runtime_decisions_total",
    ):
        assert expected in dashboard_series, expected


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    document = dashboard()
    for key in ("uid", "title", "panels", "schemaVersion", "templating", "time"):
        assert key in document, key
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = document["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) and grid[k] >= 0 for k in ("x", "y", "w", "h"))
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        covered = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["title"] and panel["targets"], panel
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip(), panel["title"]


def test_the_scrape_configuration_scrapes_the_service_and_the_terminals() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["idcode"]["metrics_path"] == "/metrics"
    assert jobs["idcode"]["authorization"]["type"] == "Bearer"
    assert "file_sd_configs" in jobs["idcode-terminals"]
    assert config["rule_files"] == [ALERTS.name]
    assert all(rule["alert"] and rule["expr"] for rule in alert_rules())


def test_grafana_provisioning_names_a_prometheus_and_a_dashboard_folder() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"]
    assert sources["datasources"][0]["isDefault"] is True
    boards = yaml.safe_load((PROVISIONING / "dashboards" / "idcode.yml").read_text())
    assert [p["type"] for p in boards["providers"]] == ["file"]
    assert boards["providers"][0]["options"]["path"].startswith("/")


PROMTOOL = shutil.which("promtool")
# scripts/test installs promtool where it is missing and sets IDCODE_TEST_PROMTOOL=required,
# so that there these tests fail rather than skip without it.
if PROMTOOL is None and os.environ.get("IDCODE_TEST_PROMTOOL") == "required":
    raise RuntimeError("promtool is missing: apt-get install prometheus (Debian)")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: apt-get install prometheus (Debian)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, check=False)


@needs_promtool
def test_promtool_accepts_the_scrape_configuration_and_the_alerts(tmp_path: Path) -> None:
    # promtool wants the token file to exist: the configuration as shipped, pointed at one.
    token = tmp_path / "idcode-metrics-token"
    token.write_text("a-metrics-token-for-the-check")
    shipped = PROMETHEUS.read_text(encoding="utf-8")
    assert "/etc/prometheus/secrets/idcode-metrics-token" in shipped
    (tmp_path / "prometheus.yml").write_text(
        shipped.replace("/etc/prometheus/secrets/idcode-metrics-token", str(token))
    )
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query as a recording rule: promtool then parses its PromQL (Grafana's
    ``$__rate_interval`` given a value, as Grafana does)."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"idcode:dashboard_query_{i}",
                        "expr": expr.replace("$__rate_interval", "5m"),
                    }
                    for i, expr in enumerate(queries())
                ],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", str(tmp_path / "queries.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
