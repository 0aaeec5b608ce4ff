"""The city load model of bench/city.py adds up: hours to days, scale to rates, and the
requests it plans are ones the service takes. No server runs here, and nothing is timed."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.service.events import ScanEventIn

BENCH = Path(__file__).parents[2] / "bench"
README = (BENCH / "README.md").read_text()


@pytest.fixture(scope="module")
def city() -> ModuleType:
    """bench/city.py as a module; its siblings (_service, soak) import as the bench does."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_city", BENCH / "city.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while defined
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_each_curve_shares_out_one_whole_day(city: Any) -> None:
    for name, curve in city.CURVES.items():
        assert len(curve) == 24, name
        assert min(curve) >= 0, name
        assert math.isclose(sum(curve), 1.0), name


def test_the_hours_add_up_to_the_daily_totals(city: Any) -> None:
    model = city.City()
    hours = model.hourly()
    daily = model.daily()
    assert set(daily) == set(city.KINDS)
    for kind in city.KINDS:
        assert math.isclose(sum(hour[kind] for hour in hours), daily[kind]), kind


def test_the_daily_totals_follow_the_stated_assumptions(city: Any) -> None:
    model = city.City()
    assert model.daily_scans == pytest.approx(3_000_000 * 0.35 * 2.0)
    daily = model.daily()
    counters = sum(s.scan_share * s.identified for s in model.scenes) * model.daily_scans
    offline = model.daily_scans - counters
    assert daily[city.CODE] == pytest.approx(offline * 1.25)
    assert daily[city.UPLOAD] == pytest.approx(offline)
    assert daily[city.CONSENT] == daily[city.IDENTIFY] == pytest.approx(counters)
    assert daily[city.DELTA] == pytest.approx(17_500 * 86_400 / 60)
    assert daily[city.BUNDLE] == pytest.approx(17_500 * 86_400 / 900)


def test_scaling_divides_every_rate_by_the_factor(city: Any) -> None:
    model = city.City()
    hours = model.hourly()
    for hour in (3, model.peak_hour()):
        whole = model.per_second(hour, 1)
        scaled = model.per_second(hour, 25)
        for kind in city.KINDS:
            assert whole[kind] == pytest.approx(hours[hour][kind] / 3600)
            assert scaled[kind] == pytest.approx(whole[kind] / 25)


def test_the_peak_hour_is_a_commute_hour(city: Any) -> None:
    assert city.City().peak_hour() in (7, 8, 17, 18)


def test_scaled_terminals_keep_at_least_one_per_scene(city: Any) -> None:
    scaled = city.City().scaled_terminals(1000)
    assert scaled["community"] == 6  # 6,000 / 1,000
    assert scaled["employment"] == 1  # 100 / 1,000, rounded up
    assert "service halls" not in scaled and None not in scaled  # online counters only


def test_shares_that_do_not_add_up_are_refused(city: Any) -> None:
    first, *rest = city.SCENES
    lopsided = city.City(scenes=(city.SceneLoad(**{**vars(first), "scan_share": 0.9}), *rest))
    with pytest.raises(ValueError, match="add up to 1"):
        lopsided.check()


def test_the_assumptions_table_is_the_one_in_the_module_and_the_readme(city: Any) -> None:
    table = city.assumptions_table()
    assert table in city.__doc__
    assert table in README


def test_the_plan_keeps_the_mix_and_uploads_events_the_service_takes(city: Any) -> None:
    key = Ed25519PrivateKey.generate()
    terminals = [
        city.Terminal(str(uuid.uuid4()), scene, f"bench-{scene}-0", key, '"tag"')
        for scene in ("community", "transport")
    ]
    party = city.RelyingParty(str(uuid.uuid4()), key, "registration", ("name",))
    mix = city.Mix(
        "127.0.0.1:1", ["citizen-token"], terminals, party, 7, {"community": 3, "transport": 1}
    )
    rates = {city.CODE: 20.0, city.CONSENT: 2.0, city.IDENTIFY: 2.0, city.UPLOAD: 10.0}
    slots = city.plan(mix, rates, 100, seed=1)
    counted = {kind: sum(1 for s in slots if s.kind == kind) for kind in city.KINDS}
    assert counted[city.IDENTIFY] == 0  # each follows its consent code
    for kind in (city.CODE, city.CONSENT, city.UPLOAD):
        expected = rates[kind] * 100
        assert abs(counted[kind] - expected) < 5 * math.sqrt(expected), kind  # Poisson
    assert [s.due for s in slots] == sorted(s.due for s in slots)
    assert all(s.party_token for s in slots if s.kind == city.CONSENT)
    uploads = [s.request for s in slots if s.kind == city.UPLOAD]
    for request in uploads:
        head, body = request.split(b"\r\n\r\n", 1)
        assert head.startswith(b"POST /v1/events HTTP/1.1\r\n")
        assert f"content-length: {len(body)}".encode() in head.lower()
        (event,) = json.loads(body)["events"]
        ScanEventIn.model_validate(event)
    ids = {json.loads(r.split(b"\r\n\r\n", 1)[1])["events"][0]["event_id"] for r in uploads}
    assert len(ids) == len(uploads)  # every upload a new event
