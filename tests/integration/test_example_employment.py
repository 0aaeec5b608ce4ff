"""The employment examples against one live service: the job fair's stands check job-seekers
in offline, journal and upload, and the organiser's count per stand from the service's events
is the stands' own; the benefits kiosk identifies with consent and refuses other codes.

Each example runs as a user runs it (a subprocess, --json for a summary), as in
tests/integration/test_examples.py, whose helpers this module uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idcode.terminal import identity as identities
from tests.integration.test_examples import (
    EXAMPLES,
    ID_NUMBER,
    RUN_SECONDS,
    _clear_of_local_midnight,
    _controller_output,
    _outcomes,
)
from tests.live import LiveService, live_service, live_settings


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, postgres_url: str, redis_url: str
) -> Iterator[LiveService]:
    """One live service for both examples; each enrols its own citizens."""
    workdir = tmp_path_factory.mktemp("employment")
    with live_service(live_settings(workdir, postgres_url, redis_url, "employment")) as live:
        yield live


def _run(name: str, service: LiveService, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """Run examples/<name>/<name>.py against the service; its --json summary and output."""
    settings = service.settings
    assert settings.database_url is not None  # the example's dev-token reads the same cards
    operator = service.tokens.operator()["Authorization"].removeprefix("Bearer ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
    env.update(
        PYTHONUNBUFFERED="1",
        IDCODE_ENVIRONMENT="development",
        IDCODE_KEYS_DIR=str(settings.keys_dir),
        IDCODE_DATA_DIR=str(settings.data_dir),
        IDCODE_DATABASE_URL=settings.database_url,
        IDCODE_OPERATOR_TOKEN=operator,
    )
    script = EXAMPLES / name / (name.replace("-", "_") + ".py")
    completed = subprocess.run(
        [sys.executable, script, "--server", service.url, "--workdir", tmp_path / "work", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    summary: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    assert summary["example"] == name
    return summary, completed.stdout


def test_job_fair_stands_check_in_offline_once_each_and_the_organiser_counts_per_stand(
    service: LiveService, tmp_path: Path
) -> None:
    _clear_of_local_midnight()
    summary, printed = _run("job-fair", service, tmp_path)
    decisions = summary["decisions"]
    assert _outcomes(decisions) == [
        ("30-year-old at stand a-01", True, "ok", "check_in"),
        ("45-year-old at stand a-01", True, "ok", "check_in"),
        ("the 30-year-old again at a-01", False, "already_checked_in", "check_in"),
        ("17-year-old at stand a-01", False, "not_working_age", "check_in"),
        ("the 30-year-old at stand a-02", True, "ok", "check_in"),
    ]
    assert [d["result"] for d in decisions] == [
        {"stand": "a-01", "check_ins": 1},
        {"stand": "a-01", "check_ins": 2},
        {"stand": "a-01"},
        {"stand": "a-01"},
        {"stand": "a-02", "check_ins": 1},
    ]
    # The employer's screen gets no subject; the journal and the upload have it.
    assert all("subject" not in d for d in decisions)

    # Uploaded, each decision exactly once, with the fair's own subjects.
    terminals = sorted((tmp_path / "work" / "terminals").iterdir())
    events = [e for t in terminals for e in service.events(identities.load(t).id)]
    assert sorted(e["event_id"] for e in events) == sorted(d["event_id"] for d in decisions)
    key = service.subject_key("employment", "spring-job-fair")
    assert key != service.subject_key("employment", "autumn-job-fair")
    by_id = {e["event_id"]: e for e in events}
    first, again, other_stand = (by_id[decisions[i]["event_id"]] for i in (0, 2, 4))
    assert first["subject"] == again["subject"] != by_id[decisions[1]["event_id"]]["subject"]
    assert other_stand["subject"] == first["subject"]  # one fair: one subject for the person
    assert first["scene_result"] == {"action": "check_in", "stand": "a-01", "check_ins": 1}

    # The organiser's count from the service: each stand's visitors once, a stand without
    # a terminal at zero.
    assert summary["counts"] == {"a-01": 2, "a-02": 1, "b-07": 0}
    assert "NOT as the stand counted" not in printed
    assert _controller_output("job-fair", decisions) == [
        "stand a-01: welcome, visitor 1 today",
        "stand a-01: welcome, visitor 2 today",
        "stand a-01: already checked in here today",
        "stand a-01: this fair is for job-seekers of working age",
        "stand a-02: welcome, visitor 1 today",
    ]


def test_benefits_kiosk_shows_eligibility_with_consent_and_refuses_other_codes(
    service: LiveService, tmp_path: Path
) -> None:
    summary, printed = _run("benefits-kiosk", service, tmp_path)
    visits = summary["visits"]
    assert [(v["scan"], v["status"], v["outcome"]) for v in visits] == [
        ("citizen A, consent for the bureau", 200, "identified"),
        ("the same code again", 409, "code_used"),
        ("citizen B, a code without consent", 403, "no_consent"),
        ("citizen B, consent for the talent market", 403, "consented_to_another_party"),
        ("citizen B, consent for the bureau", 200, "identified"),
    ]
    identified = [v for v in visits if v["outcome"] == "identified"]
    assert [v["eligible"] for v in identified] == [
        {
            "minimum_living_allowance": True,
            "disability_allowances": True,
            "veterans_benefits": False,
        },
        {
            "minimum_living_allowance": False,
            "disability_allowances": False,
            "veterans_benefits": True,
        },
    ]
    # Where to apply otherwise: a registered resident at the street office, a citizen from
    # another city where the household is registered.
    assert [v["apply_at"] for v in identified] == ["street office", "household"]
    # A pairwise subject each at the bureau; the bureau learned programmes and residency,
    # never a name or an ID number, and the refusals disclosed nothing.
    assert len({v["subject"] for v in identified}) == 2
    operator = service.tokens.operator()
    audit = service.client.get(
        f"/v1/relying-parties/{summary['relying_party']}/disclosures", headers=operator
    )
    assert audit.status_code == 200, audit.text
    assert [(d["purpose"], d["attributes"], d["counter"]) for d in audit.json()] == [
        ("benefit_eligibility", ["residency", "programmes"], "kiosk-1")
    ] * 2
    assert summary["disclosures"] == [
        {
            "relying_party": "武汉市人力资源和社会保障局",
            "purpose": "benefit_eligibility",
            "attributes": ["residency", "programmes"],
            "counter": "kiosk-1",
        }
    ]
    assert ID_NUMBER.findall(printed) == []
    for name in ("孙丽", "周强"):
        assert name not in printed.splitlines()[-1]
    assert (tmp_path / "work" / "bureau.key").stat().st_mode & 0o077 == 0
