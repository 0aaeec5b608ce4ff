#!/usr/bin/env python3
"""A day of a city of three million on the real service: the load model, its scaled peak
hour against ``idcode serve`` on PostgreSQL and Redis, a capacity table for the whole city,
and two replicas behind a load balancer against one.

    .venv/bin/python bench/city.py [--scale N] [--duration S] [--quick] [--replicas R]

The load model (the assumptions, each with its reasoning; ``assumptions_table()`` renders
it, and bench/README.md carries the same table):

| assumption | value | source or reasoning |
| --- | --- | --- |
| residents | 3,000,000 | the city of issue 17 |
| share of residents who use the code on a given day | 35 % | about 80 % of residents carry a smartphone; of them, about 4 in 10 pass a code scene on an ordinary day (a gated community's gate, a bus, a car park); an estimate, not a measurement |
| scans per daily user | 2.0 | out and back through a community gate, or a bus there and back; a few users scan more (transfers, shops) |
| codes per scan | 1.25 | a code lives about 60 s: the app asks for one when opened and again before expiry while the screen stays up; most scans come within the first minute, queues (hospital, canteen) take a second code; offline device codes (no request) are not counted, so this errs high |
| codes per daily user | 2.5 | scans per daily user x codes per scan |
| scans a day | 2,100,000 | residents x daily share x scans per user |
| status delta per terminal | every 60 s | the terminal runtime's default --sync-interval (docs/terminal.md) |
| bundle check per terminal | every 900 s | the runtime's default --bundle-interval; answered 304 unless keys or scene data changed |
| uploads | one POST /v1/events per offline scan, one event | the runtime's uploader wakes on every scan (TerminalRuntime.scan sets it going); events coalesce only when a terminal scans faster than an upload's round trip |
| identification | one consent code and one POST /v1/identify per counter visit | docs/identity.md: the citizen's app asks for a code that names the counter, the counter presents it once |
| community gates | 45 % of scans, 6,000 terminals, commute curve | about 3,000 gated communities with 2 lanes each; residents pass out in the morning and back in the evening |
| buses | 22 % of scans, 4,500 terminals, commute curve | about 15 buses per 10,000 residents, one validator each; 1.2 million boardings a day, about 40 % paid with the code |
| car parks | 8 % of scans, 2,400 terminals, commute curve | 1,200 car parks with an entry and an exit lane; a stay is two scans |
| shops | 8 % of scans, 3,000 terminals, retail curve | resident and senior discounts at participating tills, evening peak |
| hospitals | 4 % of scans, 600 terminals, office curve; 40 % identified at a desk | about 6 outpatient visits per resident a year (50,000 a day); 60 hospitals with 10 kiosks each; registration desks identify online |
| scenic spots | 4 % of scans, 300 terminals, leisure curve | 50 sites with 6 turnstiles |
| libraries and culture venues | 3 % of scans, 200 terminals, leisure curve | 100 venues with 2 gates or desks |
| elderly canteens | 3 % of scans, 400 terminals, meal curve | 18 % of residents are over 60; 400 community canteens with one pad each, lunch and supper |
| service halls | 2 % of scans, no terminals, office curve; all identified | the counters are online relying parties, they hold no trust bundle |
| employment and social insurance | 1 % of scans, 100 terminals, office curve; 30 % identified | job-fair stands (offline) and benefits kiosks (online, with consent) |

The diurnal curves (``CURVES``: each hour's share of a scene's day) follow the usual shape of
urban travel: the commute curve puts about 10 % of the day's trips in each of the morning
and evening peak hours, the planning figure for peak-hour share in Chinese city transport
surveys; the others are working hours with hospitals' evening clinics (office), shop hours
with an evening peak (retail), daytime outings (leisure) and meal times (meal). They are
estimates to be replaced by the city's own scan counts once terminals upload them.

Against the real service: one ``idcode serve`` (bench/_service.py: its own PostgreSQL
database and Redis prefix, cards enrolled, citizens' ID tokens), the city's terminals
registered at the scale chosen (each with its own Ed25519 key, signing one request token per
request), a relying party for the consented identifications. The generator is this process:
asyncio on raw keep-alive HTTP/1.1 (bench/soak.py's client), an open loop that sends each
request at its scheduled time (Poisson arrivals at the scaled peak hour's rates) and times it
from then. Its own CPU is measured and printed beside the service's. The capacity table
multiplies the CPU each process used per request by the whole city's rate. Then each request
type alone in a closed loop, with ``GET /healthz`` as the yardstick, and the scaling
comparison: HAProxy on loopback in front of one replica, and in front of ``--replicas``
replicas sharing the database and Redis, each arm a closed loop of the same request mix, in
alternating rounds. Needs ``haproxy`` for that part (Debian/Ubuntu: ``apt-get install
haproxy``; ``--replicas 1`` leaves the comparison out) and PostgreSQL and Redis as for the
tests (IDCODE_TEST_POSTGRES_URL, IDCODE_TEST_REDIS_URL). Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import platform
import random
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from _service import (
    REDIS_URL,
    BenchError,
    RelyingParty,
    Server,
    check_consent_issuance,
    check_issuance,
    cpu_model,
    free_port,
    http,
    interrupt_on_sigterm,
    prepare_service,
    register_relying_party,
    running_server,
    server_versions,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm
from soak import CLOCK_TICKS, CONNECTION_ERROR, Connection, _process_tree, percentile, watchdog

from idcode.protocol import MAX_CLOCK_DRIFT
from idcode.service.auth import dev_token
from idcode.terminaltoken import MAX_TOKEN_LIFETIME, relying_party_token, terminal_token

try:  # uvicorn[standard] brings uvloop; the generator runs on it when it is there
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]

# --- the load model (pure: no I/O) ------------------------------------------------------

#: Request kinds, in the order the tables print them.
CODE = "code"  # POST /v1/codes
CONSENT = "consent"  # POST /v1/codes with a consent body
IDENTIFY = "identify"  # POST /v1/identify, right after its consent code
UPLOAD = "upload"  # POST /v1/events, one event
DELTA = "delta"  # GET /v1/trust-bundle/status-delta
BUNDLE = "bundle"  # GET /v1/trust-bundle with If-None-Match
KINDS = (CODE, CONSENT, IDENTIFY, UPLOAD, DELTA, BUNDLE)
NOOP = "noop"  # GET /healthz: the yardstick the types' costs are divided by
ROUTES = {
    CODE: "POST /v1/codes",
    CONSENT: "POST /v1/codes (consent)",
    IDENTIFY: "POST /v1/identify",
    UPLOAD: "POST /v1/events",
    DELTA: "GET status-delta",
    BUNDLE: "GET trust-bundle",
    NOOP: "GET /healthz",
}
#: p99 targets at the service, in ms (loopback: the network comes on top).
#: Codes: DESIGN.md's "a code in < 100 ms" for the citizen at the gate, taken as the p99 at
#: the service. Identification: a clerk at a counter waits for it once per visit; 300 ms is
#: well under what a person notices in a counter's routine. Terminals' syncs and uploads run
#: in background threads nobody waits for: 1 s keeps them far from their timeouts (10 s)
#: and from backing up.
P99_TARGET_MS = {CODE: 100.0, CONSENT: 100.0, IDENTIFY: 300.0, UPLOAD: 1000.0, DELTA: 1000.0}
P99_TARGET_MS[BUNDLE] = 1000.0


def _shares(weights: Sequence[float]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(w / total for w in weights)


#: Each hour's share of a scene's scans (local time, hour 0 = midnight to 1 am).
CURVES: dict[str, tuple[float, ...]] = {
    "commute": _shares(
        [
            *(0.4, 0.2, 0.1, 0.1, 0.2, 0.8, 3.0, 8.5, 10.0, 5.5, 4.0, 4.0),
            *(4.5, 4.0, 3.8, 4.0, 4.8, 7.5, 9.5, 6.5, 5.0, 3.8, 2.5, 1.2),
        ]
    ),
    "office": _shares([0] * 8 + [8, 14, 14, 12, 6, 9, 12, 11, 9, 4, 2, 1] + [0] * 4),
    "retail": _shares([0] * 9 + [3, 5, 7, 8, 7, 6, 6, 7, 8, 10, 12, 11, 8, 2] + [0]),
    "leisure": _shares([0] * 8 + [2, 8, 12, 11, 8, 10, 12, 12, 10, 6, 4, 3, 2] + [0] * 3),
    "meal": _shares([0] * 7 + [2, 1, 1, 4, 30, 25, 4, 1, 1, 6, 18, 7] + [0] * 5),
}


@dataclass(frozen=True)
class SceneLoad:
    """One kind of place where codes are scanned, for the whole city."""

    label: str
    scene: str | None  # the adapter its terminals run; None: online counters only
    scan_share: float  # of the city's scans
    terminals: int  # offline terminals in the city (each syncs and uploads)
    curve: str  # a key of CURVES
    identified: float  # share of its scans that are identifications at an online counter
    why: str


SCENES: tuple[SceneLoad, ...] = (
    SceneLoad(
        "community gates",
        "community",
        0.45,
        6000,
        "commute",
        0.0,
        "about 3,000 gated communities with 2 lanes each; residents pass out in the morning "
        "and back in the evening",
    ),
    SceneLoad(
        "buses",
        "transport",
        0.22,
        4500,
        "commute",
        0.0,
        "about 15 buses per 10,000 residents, one validator each; 1.2 million boardings a day, "
        "about 40 % paid with the code",
    ),
    SceneLoad(
        "car parks",
        "parking",
        0.08,
        2400,
        "commute",
        0.0,
        "1,200 car parks with an entry and an exit lane; a stay is two scans",
    ),
    SceneLoad(
        "shops",
        "merchant",
        0.08,
        3000,
        "retail",
        0.0,
        "resident and senior discounts at participating tills, evening peak",
    ),
    SceneLoad(
        "hospitals",
        "hospital",
        0.04,
        600,
        "office",
        0.4,
        "about 6 outpatient visits per resident a year (50,000 a day); 60 hospitals with 10 "
        "kiosks each; registration desks identify online",
    ),
    SceneLoad(
        "scenic spots",
        "tourism",
        0.04,
        300,
        "leisure",
        0.0,
        "50 sites with 6 turnstiles",
    ),
    SceneLoad(
        "libraries and culture venues",
        "culture",
        0.03,
        200,
        "leisure",
        0.0,
        "100 venues with 2 gates or desks",
    ),
    SceneLoad(
        "elderly canteens",
        "eldercare",
        0.03,
        400,
        "meal",
        0.0,
        "18 % of residents are over 60; 400 community canteens with one pad each, lunch and supper",
    ),
    SceneLoad(
        "service halls",
        None,
        0.02,
        0,
        "office",
        1.0,
        "the counters are online relying parties, they hold no trust bundle",
    ),
    SceneLoad(
        "employment and social insurance",
        "employment",
        0.01,
        100,
        "office",
        0.3,
        "job-fair stands (offline) and benefits kiosks (online, with consent)",
    ),
)


@dataclass(frozen=True)
class City:
    """The city's day of code traffic: who asks for what, how often, at which hour."""

    residents: int = 3_000_000
    daily_share: float = 0.35
    scans_per_user: float = 2.0
    codes_per_scan: float = 1.25
    sync_interval: float = 60.0
    bundle_interval: float = 900.0
    scenes: tuple[SceneLoad, ...] = SCENES

    @property
    def daily_users(self) -> float:
        return self.residents * self.daily_share

    @property
    def daily_scans(self) -> float:
        return self.daily_users * self.scans_per_user

    @property
    def terminals(self) -> int:
        return sum(s.terminals for s in self.scenes)

    def check(self) -> None:
        """ValueError when the shares do not add up or a curve is unknown."""
        if not math.isclose(sum(s.scan_share for s in self.scenes), 1.0, abs_tol=1e-9):
            raise ValueError("the scenes' shares of the scans must add up to 1")
        for scene in self.scenes:
            if scene.curve not in CURVES or not 0 <= scene.identified <= 1:
                raise ValueError(f"{scene.label}: unknown curve or share identified")

    def hourly(self) -> list[dict[str, float]]:
        """Requests of each kind in each hour of the day, for the whole city."""
        hours: list[dict[str, float]] = []
        syncs = 3600 / self.sync_interval * self.terminals
        checks = 3600 / self.bundle_interval * self.terminals
        for hour in range(24):
            row = dict.fromkeys(KINDS, 0.0)
            for scene in self.scenes:
                scans = self.daily_scans * scene.scan_share * CURVES[scene.curve][hour]
                at_counter = scans * scene.identified
                offline = scans - at_counter
                row[CODE] += offline * self.codes_per_scan
                row[CONSENT] += at_counter
                row[IDENTIFY] += at_counter
                row[UPLOAD] += offline
            row[DELTA] = syncs
            row[BUNDLE] = checks
            hours.append(row)
        return hours

    def daily(self) -> dict[str, float]:
        """Requests of each kind in the whole day, from the daily figures alone (no curve)."""
        offline = self.daily_scans * sum(s.scan_share * (1 - s.identified) for s in self.scenes)
        at_counter = self.daily_scans * sum(s.scan_share * s.identified for s in self.scenes)
        return {
            CODE: offline * self.codes_per_scan,
            CONSENT: at_counter,
            IDENTIFY: at_counter,
            UPLOAD: offline,
            DELTA: 86_400 / self.sync_interval * self.terminals,
            BUNDLE: 86_400 / self.bundle_interval * self.terminals,
        }

    def peak_hour(self) -> int:
        """The hour with the most requests."""
        hours = self.hourly()
        return max(range(24), key=lambda h: sum(hours[h].values()))

    def per_second(self, hour: int, scale: float) -> dict[str, float]:
        """Requests per second of each kind in ``hour``, the city scaled down by ``scale``."""
        return {kind: n / 3600 / scale for kind, n in self.hourly()[hour].items()}

    def offline_scans(self, hour: int) -> dict[str, float]:
        """Offline scans in ``hour`` by scene (adapter name): where the uploads come from."""
        return {
            s.scene: self.daily_scans * s.scan_share * (1 - s.identified) * CURVES[s.curve][hour]
            for s in self.scenes
            if s.scene is not None and s.terminals
        }

    def scaled_terminals(self, scale: float) -> dict[str, int]:
        """Terminals to register per scene at ``scale``: at least one where there are any."""
        return {
            s.scene: max(1, math.ceil(s.terminals / scale))
            for s in self.scenes
            if s.scene is not None and s.terminals
        }


def assumptions_table(city: City = City()) -> str:
    """The model's assumptions as a Markdown table (the module docstring and bench/README.md
    carry it; a test keeps them the same)."""
    rows = [
        ("residents", f"{city.residents:,}", "the city of issue 17"),
        (
            "share of residents who use the code on a given day",
            f"{city.daily_share:.0%}".replace("%", " %"),
            "about 80 % of residents carry a smartphone; of them, about 4 in 10 pass a code "
            "scene on an ordinary day (a gated community's gate, a bus, a car park); an "
            "estimate, not a measurement",
        ),
    ]
    rows += [
        (
            "scans per daily user",
            f"{city.scans_per_user:.1f}",
            "out and back through a community gate, or a bus there and back; a few users scan "
            "more (transfers, shops)",
        ),
        (
            "codes per scan",
            f"{city.codes_per_scan:.2f}",
            "a code lives about 60 s: the app asks for one when opened and again before expiry "
            "while the screen stays up; most scans come within the first minute, queues "
            "(hospital, canteen) take a second code; offline device codes (no request) are not "
            "counted, so this errs high",
        ),
        (
            "codes per daily user",
            f"{city.scans_per_user * city.codes_per_scan:.1f}",
            "scans per daily user x codes per scan",
        ),
        (
            "scans a day",
            f"{city.daily_scans:,.0f}",
            "residents x daily share x scans per user",
        ),
        (
            "status delta per terminal",
            f"every {city.sync_interval:g} s",
            "the terminal runtime's default --sync-interval (docs/terminal.md)",
        ),
        (
            "bundle check per terminal",
            f"every {city.bundle_interval:g} s",
            "the runtime's default --bundle-interval; answered 304 unless keys or scene data "
            "changed",
        ),
        (
            "uploads",
            "one POST /v1/events per offline scan, one event",
            "the runtime's uploader wakes on every scan (TerminalRuntime.scan sets it going); "
            "events coalesce only when a terminal scans faster than an upload's round trip",
        ),
        (
            "identification",
            "one consent code and one POST /v1/identify per counter visit",
            "docs/identity.md: the citizen's app asks for a code that names the counter, the "
            "counter presents it once",
        ),
    ]
    for scene in city.scenes:
        terminals = f"{scene.terminals:,} terminals" if scene.terminals else "no terminals"
        value = f"{scene.scan_share:.0%}".replace("%", " %") + f" of scans, {terminals}, "
        value += f"{scene.curve} curve"
        if 0 < scene.identified < 1:
            value += f"; {scene.identified:.0%}".replace("%", " %") + " identified"
        elif scene.identified == 1:
            value += "; all identified"
        if scene.label == "hospitals":
            value = value.replace(" identified", " identified at a desk")
        rows.append((scene.label, value, scene.why))
    lines = ["| assumption | value | source or reasoning |", "| --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


# --- the city's terminals and counters at the service -----------------------------------

SITES_PER_SCENE = 10  # terminals of a scene spread over this many sites
SETUP_THREADS = 8  # registering terminals, fetching their first bundles (not timed)
COUNTER_LABEL = "bench-desk-1"


@dataclass(frozen=True)
class Terminal:
    """A registered terminal as the generator plays it: its id, key and held trust."""

    id: str
    scene: str
    site: str
    key: Ed25519PrivateKey
    etag: str = ""  # of the bundle it holds (If-None-Match)


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A GET with the answer's headers, names in lower case (bench/_service.py's http()
    drops them)."""
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (our server)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our server)
            headers = {k.lower(): v for k, v in response.headers.items()}
            return int(response.status), headers, bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def register_terminals(base_url: str, operator: str, counts: dict[str, int]) -> list[Terminal]:
    """Register ``counts[scene]`` terminals of each scene through the operator API, then
    fetch one bundle per site for the ETag its terminals hold."""
    wanted = [
        (scene, f"bench-{scene}-{n % SITES_PER_SCENE}")
        for scene, count in counts.items()
        for n in range(count)
    ]

    def register(scene_site: tuple[str, str]) -> Terminal:
        scene, site = scene_site
        key = Ed25519PrivateKey.generate()
        body = {
            "scene": scene,
            "site": site,
            "public_jwk": OKPAlgorithm.to_jwk(key.public_key(), as_dict=True),
        }
        status, answer = http(
            "POST",
            base_url + "/v1/terminals",
            {"Authorization": f"Bearer {operator}", "Content-Type": "application/json"},
            json.dumps(body).encode(),
        )
        if status != 201:
            raise BenchError(f"POST /v1/terminals answered {status}: {answer[:300]!r}")
        return Terminal(json.loads(answer)["id"], scene, site, key)

    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        terminals = list(pool.map(register, wanted))
        first: dict[tuple[str, str], Terminal] = {}
        for terminal in terminals:
            first.setdefault((terminal.scene, terminal.site), terminal)

        def etag(terminal: Terminal) -> str:
            token = terminal_token(terminal.id, terminal.key)
            status, headers, body = _get(
                base_url + "/v1/trust-bundle", {"Authorization": f"Bearer {token}"}
            )
            if status != 200 or not headers.get("etag"):
                raise BenchError(f"GET /v1/trust-bundle answered {status}: {body[:300]!r}")
            return headers["etag"]

        tags = dict(zip(first, pool.map(etag, first.values()), strict=True))
    return [Terminal(t.id, t.scene, t.site, t.key, tags[(t.scene, t.site)]) for t in terminals]


def status_version(base_url: str, terminal: Terminal) -> int:
    """The service's status-list version: what an up-to-date terminal asks a delta since."""
    token = terminal_token(terminal.id, terminal.key)
    status, _, body = _get(
        base_url + "/v1/trust-bundle/status-delta?since=0", {"Authorization": f"Bearer {token}"}
    )
    if status != 200:
        raise BenchError(f"GET /v1/trust-bundle/status-delta answered {status}: {body[:300]!r}")
    payload = body.split(b".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    return int(claims["delta"]["target"])


# --- the requests, formatted before the timed part ----------------------------------------


@dataclass
class Mix:
    """What the generator sends from: citizens' tokens, the city's terminals (by scene), the
    relying party, and the status version terminals hold."""

    host: str
    citizens: list[str]
    terminals: list[Terminal]
    party: RelyingParty
    version: int
    upload_weights: dict[str, float]  # scene -> its share of the hour's offline scans
    by_scene: dict[str, list[Terminal]] = field(default_factory=dict)
    turn: int = 0

    def __post_init__(self) -> None:
        for terminal in self.terminals:
            self.by_scene.setdefault(terminal.scene, []).append(terminal)

    def _next(self) -> int:
        self.turn += 1
        return self.turn

    def request(self, kind: str, rng: random.Random) -> tuple[bytes, str]:
        """One request of ``kind`` (with its relying-party token for a consent slot)."""
        n = self._next()
        host = self.host
        if kind in (CODE, CONSENT):
            citizen = self.citizens[n % len(self.citizens)]
            body = self.party.consent_body() if kind == CONSENT else b""
            head = (
                f"POST /v1/codes HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {citizen}\r\n"
                f"Accept: application/json\r\n"
                + ("Content-Type: application/json\r\n" if body else "")
                + f"Content-Length: {len(body)}\r\n\r\n"
            )
            extra = ""
            if kind == CONSENT:
                extra = relying_party_token(
                    self.party.id, self.party.private_key, lifetime=MAX_TOKEN_LIFETIME
                )
            return head.encode() + body, extra
        if kind == UPLOAD:
            scenes = list(self.upload_weights)
            scene = rng.choices(scenes, [self.upload_weights[s] for s in scenes])[0]
            pool = self.by_scene[scene]
            terminal = pool[n % len(pool)]
            event = {
                "event_id": secrets.token_hex(12),
                "occurred_at": datetime.now(UTC).isoformat(),
                "valid": True,
                "reason": "ok",
                "scene_result": {},
                "subject": secrets.token_hex(12),
            }
            body = json.dumps({"events": [event]}, separators=(",", ":")).encode()
            token = terminal_token(terminal.id, terminal.key, lifetime=MAX_TOKEN_LIFETIME)
            head = (
                f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            return head.encode() + body, ""
        terminal = self.terminals[n % len(self.terminals)]
        token = terminal_token(terminal.id, terminal.key, lifetime=MAX_TOKEN_LIFETIME)
        if kind == DELTA:
            path = f"/v1/trust-bundle/status-delta?since={self.version}"
            extra_header = ""
        else:
            path, extra_header = "/v1/trust-bundle", f"If-None-Match: {terminal.etag}\r\n"
        return (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"{extra_header}\r\n"
        ).encode(), ""


@dataclass(frozen=True)
class Slot:
    due: float  # seconds from the start
    kind: str
    request: bytes
    party_token: str  # a consent slot: the counter's token for the identification after it


def plan(mix: Mix, rates: dict[str, float], seconds: float, seed: int) -> list[Slot]:
    """Poisson arrivals of each kind at its rate for ``seconds``, merged by due time. An
    identification is not planned on its own: it follows its consent code."""
    rng = random.Random(seed)
    slots: list[Slot] = []
    for kind, rate in rates.items():
        if kind == IDENTIFY or rate <= 0:
            continue
        at = rng.expovariate(rate)
        while at < seconds:
            request, extra = mix.request(kind, rng)
            slots.append(Slot(at, kind, request, extra))
            at += rng.expovariate(rate)
    slots.sort(key=lambda slot: slot.due)
    return slots


def identify_request(host: str, party: RelyingParty, token: str, code: str) -> bytes:
    body = json.dumps(
        {"code": code, "purpose": party.purpose, "counter": COUNTER_LABEL}, separators=(",", ":")
    ).encode()
    return (
        f"POST /v1/identify HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- the generator: open loop at the scaled peak, closed loop for the scaling -------------


class BodyConnection(Connection):
    """bench/soak.py's keep-alive connection, keeping the answer's body (a consent code)."""

    async def exchange_body(self, request: bytes) -> tuple[int, bytes]:
        self.busy_since = time.monotonic()
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 5.0
                )
            assert self.reader is not None and self.writer is not None
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 "):
                raise ValueError
            status = int(head[9:12])
            lowered = head.lower()
            at = lowered.find(b"\r\ncontent-length:")
            length = int(lowered[at + 17 : lowered.index(b"\r\n", at + 2)]) if at >= 0 else 0
            body = await self.reader.readexactly(length)
            if b"\r\nconnection: close" in lowered:
                self.close()
            return status, body
        except (ValueError, asyncio.LimitOverrunError):
            self.close()
            return 3, b""  # soak.PROTOCOL_ERROR
        except (OSError, asyncio.IncompleteReadError):
            outcome = 1 if self.timed_out else CONNECTION_ERROR  # soak.TIMEOUT
            self.close()
            return outcome, b""
        finally:
            self.busy_since = None
            self.timed_out = False


@dataclass
class Outcome:
    """Every answer of a run by kind: latency (ms) and status."""

    latency_ms: dict[str, array[float]] = field(
        default_factory=lambda: {k: array("d") for k in (*KINDS, NOOP)}
    )
    status: dict[str, array[int]] = field(
        default_factory=lambda: {k: array("H") for k in (*KINDS, NOOP)}
    )
    seconds: float = 0.0
    generator_cpu: float = 0.0
    queued: int = 0  # open loop: slots that found every connection busy
    ran_out: bool = False  # closed loop: the plan ended before the time did

    def add(self, kind: str, latency_ms: float, status: int) -> None:
        self.latency_ms[kind].append(latency_ms)
        self.status[kind].append(status)

    def ok(self, kind: str | None = None) -> int:
        kinds = (*KINDS, NOOP) if kind is None else (kind,)
        return sum(1 for k in kinds for s in self.status[k] if 200 <= s < 400)

    def requests(self) -> int:
        return sum(len(s) for s in self.status.values())

    def failures(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for kind in (*KINDS, NOOP):
            for status in self.status[kind]:
                if not 200 <= status < 400:
                    name = f"{kind} {status}" if status >= 100 else f"{kind} no answer"
                    counted[name] = counted.get(name, 0) + 1
        return counted


async def _serve_slot(
    connection: BodyConnection, slot: Slot, mix: Mix, outcome: Outcome, since: float
) -> None:
    status, body = await connection.exchange_body(slot.request)
    outcome.add(slot.kind, (time.monotonic() - since) * 1e3, status)
    if slot.kind == CONSENT and status == 200:
        # The counter scans the consent code and presents it at once.
        code = json.loads(body)["code"]
        sent = time.monotonic()
        request = identify_request(mix.host, mix.party, slot.party_token, code)
        status, _ = await connection.exchange_body(request)
        outcome.add(IDENTIFY, (time.monotonic() - sent) * 1e3, status)
    if status == CONNECTION_ERROR:
        await asyncio.sleep(0.01)  # the server is gone: do not spin


async def open_loop(
    address: tuple[str, int], slots: Sequence[Slot], mix: Mix, connections: int
) -> Outcome:
    """Each slot sent at its due time by a free connection, timed from its due time."""
    pool = [BodyConnection(*address) for _ in range(connections)]
    outcome = Outcome()
    cpu = time.process_time()
    start = time.monotonic() + 0.1
    next_slot = 0

    async def run(connection: BodyConnection) -> None:
        nonlocal next_slot
        while next_slot < len(slots):
            slot = slots[next_slot]
            next_slot += 1
            due = start + slot.due
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                outcome.queued += 1
            await _serve_slot(connection, slot, mix, outcome, min(due, time.monotonic()))

    await _with_watchdog(pool, [run(c) for c in pool])
    outcome.seconds = time.monotonic() - start
    outcome.generator_cpu = time.process_time() - cpu
    return outcome


async def closed_loop(
    address: tuple[str, int], slots: Sequence[Slot], mix: Mix, connections: int, seconds: float
) -> Outcome:
    """Each connection sends the plan's next slot as soon as its previous answer is in."""
    pool = [BodyConnection(*address) for _ in range(connections)]
    outcome = Outcome()
    cpu = time.process_time()
    start = time.monotonic()
    end = start + seconds
    next_slot = 0

    async def run(connection: BodyConnection) -> None:
        nonlocal next_slot
        while time.monotonic() < end:
            if next_slot >= len(slots):
                outcome.ran_out = True
                return
            slot = slots[next_slot]
            next_slot += 1
            await _serve_slot(connection, slot, mix, outcome, time.monotonic())

    await _with_watchdog(pool, [run(c) for c in pool])
    outcome.seconds = time.monotonic() - start
    outcome.generator_cpu = time.process_time() - cpu
    return outcome


async def _with_watchdog(pool: Sequence[BodyConnection], workers: list[Any]) -> None:
    guard = asyncio.get_running_loop().create_task(watchdog(pool, 5.0))
    try:
        await asyncio.gather(*workers)
    finally:
        guard.cancel()
        for connection in pool:
            connection.close()


# --- what each process used: /proc and the servers' own counters --------------------------

SERVICE, POSTGRES, REDIS, PROXY = "service", "postgres", "redis", "haproxy"
POLL_SECONDS = 0.1  # how often the PostgreSQL backends are looked for
WATCH_NAME = "idcode-bench-city-watch"  # the application_name of its own connections


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _memory_kb(pid: int, field_name: str = "Rss") -> int:
    """Rss or Pss (kB) of one process, from smaps_rollup (Pss shares shared pages fairly:
    PostgreSQL's backends all map its shared buffers)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class Usage:
    """CPU seconds of each process group at one moment (by pid, to take differences) and
    their memory."""

    at: float
    cpu: dict[str, dict[int, float]]
    memory_kb: dict[str, int]
    generator: float
    machine: float
    commits: int  # transactions committed in the bench's database (pg_stat_database)
    sessions: int  # connections opened to it so far (pg_stat_database)


class Watch:
    """The processes the city's load lands on: the service replicas' process trees, the
    PostgreSQL backends connected to the bench's database, redis-server (its own CPU
    counters: it is shared with anyone else on this Redis) and HAProxy."""

    def __init__(self, database_url: str, redis_client: redis.Redis, prefix: str) -> None:
        self.database = psycopg.connect(database_url, autocommit=True, application_name=WATCH_NAME)
        self.redis = redis_client
        self.prefix = prefix
        self.services: list[int] = []
        self.proxies: list[int] = []
        # Every backend seen and its CPU when last seen: one that ends (a connection a pool
        # replaced, or a pool of an older service that closed its overflow connections when
        # they were returned) keeps what it used until then. A poller thread looks ten times a
        # second.
        self._backends: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll, args=(database_url,), name="city-postgres-watch", daemon=True
        )
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        self._poller.join(timeout=5)
        self.database.close()

    def _poll(self, database_url: str) -> None:
        with psycopg.connect(
            database_url, autocommit=True, application_name=WATCH_NAME
        ) as connection:
            while not self._stop.wait(POLL_SECONDS):
                self._backends_now(connection)

    def _backends_now(self, connection: psycopg.Connection[Any]) -> list[int]:
        """The backends on the bench's database now (not the watch's own two), recorded."""
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name <> %s",
            (WATCH_NAME,),
        ).fetchall()
        pids = [int(row[0]) for row in rows]
        with self._lock:
            for pid in pids:
                seconds = _cpu_seconds(pid)
                if seconds is not None:
                    self._backends[pid] = seconds
        return pids

    def sample(self) -> Usage:
        cpu: dict[str, dict[int, float]] = {SERVICE: {}, POSTGRES: {}, PROXY: {}}
        memory = dict.fromkeys((SERVICE, POSTGRES, PROXY), 0)
        groups = (
            (SERVICE, [p for s in self.services for p in _process_tree(s)], "Rss"),
            (POSTGRES, self._backends_now(self.database), "Pss"),
            (PROXY, self.proxies, "Rss"),
        )
        with self._lock:  # every backend seen so far, ended ones at their last figure
            cpu[POSTGRES] = dict(self._backends)
        for name, pids, kind in groups:
            for pid in pids:
                seconds = _cpu_seconds(pid)
                if seconds is not None:
                    cpu[name][pid] = max(seconds, cpu[name].get(pid, 0.0))
                    memory[name] += _memory_kb(pid, kind)
        info: dict[str, Any] = self.redis.info("cpu")
        cpu[REDIS] = {0: float(info["used_cpu_user"]) + float(info["used_cpu_sys"])}
        memory[REDIS] = int(self.redis.info("memory")["used_memory"]) // 1024
        ticks = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        row = self.database.execute(
            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return Usage(
            at=time.monotonic(),
            cpu=cpu,
            memory_kb=memory,
            generator=time.process_time(),
            machine=(sum(ticks[:8]) - ticks[3] - ticks[4]) / CLOCK_TICKS,
            commits=int(row[0]) if row else 0,
            sessions=int(row[1]) if row else 0,
        )

    def prefix_memory(self) -> tuple[int, dict[str, tuple[int, int, int]]]:
        """The bench's own Redis keys: bytes in all, and by the first part of their name:
        (keys, bytes, longest time to live in s; -1: none)."""
        total = 0
        classes: dict[str, tuple[int, int, int]] = {}
        for key in self.redis.scan_iter(match=self.prefix + "*", count=1000):
            name = key.decode(errors="replace")[len(self.prefix) :]
            group = name.split(":", 1)[0]
            used = int(self.redis.memory_usage(key) or 0)
            ttl = int(self.redis.ttl(key))
            keys, size, longest = classes.get(group, (0, 0, -2))
            classes[group] = (keys + 1, size + used, max(longest, ttl))
            total += used
        return total, classes


def spent(before: Usage, after: Usage, group: str) -> float:
    """CPU seconds a group used between two samples: each process's difference; one that
    started in between counts from zero. One that ended in between is missed, but for
    PostgreSQL's backends, polled ten times a second, which count until they were last seen
    (a connection opened and closed between two polls is missed)."""
    return sum(
        seconds - before.cpu[group].get(pid, 0.0) for pid, seconds in after.cpu[group].items()
    )


# --- HAProxy on loopback ------------------------------------------------------------------

HAPROXY_CONFIG = """global
    nbthread 1
    maxconn 4096
    stats socket {socket} mode 600 level admin

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
    http-reuse always

frontend city
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
{servers}
"""


@dataclass(frozen=True)
class Proxy:
    port: int
    pid: int
    socket: Path

    def requests_by_server(self) -> dict[str, int]:
        """HTTP requests each backend server answered (HAProxy's ``show stat``)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(self.socket))
            client.sendall(b"show stat\n")
            data = b""
            while chunk := client.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        counted: dict[str, int] = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "replicas" and row.get("svname") not in ("BACKEND", None):
                counted[row["svname"]] = int(row.get("req_tot") or 0)
        return counted


@contextmanager
def running_haproxy(
    haproxy: str, workdir: Path, name: str, backends: Sequence[Server]
) -> Iterator[Proxy]:
    port = free_port()
    stats = workdir / f"{name}.sock"
    servers = "\n".join(
        f"    server r{n + 1} {urlsplit(s.base_url).netloc} maxconn 64"
        for n, s in enumerate(backends)
    )
    config = workdir / f"{name}.cfg"
    config.write_text(HAPROXY_CONFIG.format(socket=stats, port=port, servers=servers))
    log = workdir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [haproxy, "-db", "-f", str(config)], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"haproxy did not start:\n{log.read_text(errors='replace')}")
            try:
                if http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200 and stats.exists():
                    break
            except OSError:
                pass
            time.sleep(0.05)
        yield Proxy(port, process.pid, stats)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the report ---------------------------------------------------------------------------

RATE_KEY_TTL = 3600  # Redis keys living at most this long grow with the request rate
PROVISION_AT = 0.6  # a component is provisioned so that the peak hour uses 60 % of its cores
REPLICA_CORES = 1.0  # one 'idcode serve' process (one uvicorn worker) uses at most one core


def _ms(values: Sequence[float], share: float) -> str:
    ordered = sorted(values)
    return f"{percentile(ordered, share):.1f}" if ordered else "-"


def print_model(city: City, hour: int, scale: float) -> None:
    hours = city.hourly()
    daily = city.daily()
    print(
        f"city model: {city.residents:,} residents, {city.daily_share:.0%} use the code on a "
        f"given day, {city.scans_per_user:g} scans each, {city.codes_per_scan:g} codes a scan: "
        f"{city.daily_scans:,.0f} scans a day; {city.terminals:,} terminals syncing every "
        f"{city.sync_interval:g} s (bundle check every {city.bundle_interval:g} s)"
    )
    print("requests a day: " + ", ".join(f"{k} {daily[k]:,.0f}" for k in KINDS))
    print()
    print("the whole city, requests per second by hour (local time)")
    print(f"{'hour':<6}" + "".join(f"{k:>10}" for k in KINDS) + f"{'all':>10}")
    for h, row in enumerate(hours):
        mark = "  <- peak" if h == city.peak_hour() else ""
        mark += "  <- run" if h == hour else ""
        print(
            f"{h:02d}-{h + 1:02d} "
            + "".join(f"{row[k] / 3600:>10.2f}" for k in KINDS)
            + f"{sum(row.values()) / 3600:>10.1f}{mark}"
        )
    rates = city.per_second(hour, scale)
    print()
    print(
        f"scale 1:{scale:g}: hour {hour:02d}-{hour + 1:02d} of a city of "
        f"{city.residents / scale:,.0f} residents with {sum(city.scaled_terminals(scale).values()):,} "
        f"terminals: {sum(rates.values()):.1f} requests/s ("
        + ", ".join(f"{k} {rates[k]:.2f}" for k in KINDS)
        + ")"
    )


def print_open_loop(
    outcome: Outcome, rates: dict[str, float], before: Usage, after: Usage, seconds: float
) -> None:
    print()
    print(
        f"scaled hour, open loop for {seconds:g} s against one replica (latency from each "
        "request's due time to its last byte; identify from its send, right after its consent code)"
    )
    print(
        f"{'request':<26}{'planned/s':>10}{'done/s':>9}{'answers':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'target':>9}  holds"
    )
    for kind in KINDS:
        latencies = outcome.latency_ms[kind]
        n = len(latencies)
        p99 = percentile(sorted(latencies), 99) if n else math.nan
        target = P99_TARGET_MS[kind]
        verdict = "-" if not n else ("yes" if p99 <= target else "NO")
        if n and n < 100:
            verdict += f" (only {n} answers)"
        print(
            f"{ROUTES[kind]:<26}{rates[kind]:>10.2f}{outcome.ok(kind) / outcome.seconds:>9.2f}"
            f"{n:>9,}{_ms(latencies, 50):>9}{_ms(latencies, 99):>9}{target:>9.0f}  {verdict}"
        )
    everything = [x for k in KINDS for x in outcome.latency_ms[k]]
    print(
        f"{'all':<26}{sum(rates.values()):>10.2f}{outcome.ok() / outcome.seconds:>9.2f}"
        f"{len(everything):>9,}{_ms(everything, 50):>9}{_ms(everything, 99):>9}"
    )
    failures = outcome.failures()
    print(
        "  failures: "
        + (", ".join(f"{k}: {n:,}" for k, n in sorted(failures.items())) or "none")
        + f"; slots that found every connection busy: {outcome.queued:,}"
    )
    elapsed = after.at - before.at
    print(
        f"  CPU over the run, in cores (of {os.cpu_count()}): service "
        f"{spent(before, after, SERVICE) / elapsed:.2f}, PostgreSQL backends "
        f"{spent(before, after, POSTGRES) / elapsed:.2f}, redis-server "
        f"{spent(before, after, REDIS) / elapsed:.2f}, this generator "
        f"{(after.generator - before.generator) / elapsed:.2f} "
        f"({outcome.generator_cpu / max(1, outcome.requests()) * 1e6:.0f} us a request), the "
        f"whole machine {(after.machine - before.machine) / elapsed:.2f}"
    )
    opened = after.sessions - before.sessions
    print(
        f"  PostgreSQL: {opened:,} connections to the bench's database opened during the run "
        f"(a service's pool opens up to 20 as load needs them and keeps them), "
        f"{len(set(after.cpu[POSTGRES]) - set(before.cpu[POSTGRES])):,} of them seen by the "
        "poller that counts their CPU"
    )


@dataclass(frozen=True)
class Storage:
    """Bytes on disk of a table with its indexes and TOAST (all its partitions), and rows."""

    card_size: int
    cards: int
    event_size: int
    events: int

    def card_bytes(self) -> float:
        return self.card_size / max(1, self.cards)

    def event_bytes(self, earlier: Storage) -> float:
        """Per event stored since ``earlier``: what each new event added (a partitioned
        table's empty partitions take pages of their own from the start)."""
        return (self.event_size - earlier.event_size) / max(1, self.events - earlier.events)


def storage(database_url: str) -> Storage:
    with psycopg.connect(database_url) as connection:
        figures = []
        for table in ("cards", "scan_events"):
            # Over its partitions if it has any (pg_partition_tree has no rows for a table
            # that is neither partitioned nor a partition).
            row = connection.execute(
                "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) "  # noqa: S608
                f"FROM pg_partition_tree('{table}')), pg_total_relation_size('{table}')), "
                f"(SELECT count(*) FROM {table})"
            ).fetchone()
            assert row is not None
            figures.append((int(row[0]), int(row[1])))
    (card_size, cards), (event_size, events) = figures
    return Storage(card_size, cards, event_size, events)


def print_capacity(
    city: City,
    hour: int,
    scale: float,
    outcome: Outcome,
    before: Usage,
    after: Usage,
    redis_bytes: int,
    redis_classes: dict[str, tuple[int, int, int]],
    stored: Storage,
    stored_before: Storage,
) -> dict[str, float]:
    """Prints the capacity table; returns the cores each component needs."""
    answered = outcome.requests()
    real = sum(city.per_second(hour, 1).values())
    print()
    print(
        f"capacity for the whole city's hour {hour:02d}-{hour + 1:02d}: {real:,.0f} requests/s "
        f"of the same mix ({scale:g} x the run's); cores = CPU seconds a request measured in "
        f"the open loop x {real:,.0f}/s"
    )
    print(
        f"{'component':<22}{'CPU ms/request':>15}{'cores needed':>14}"
        f"{f'at {PROVISION_AT:.0%} busy':>13}{'memory now':>12}{'memory for the city':>22}"
    )
    rows = []
    service_cores = spent(before, after, SERVICE) / answered * real
    replicas = max(1, math.ceil(service_cores / PROVISION_AT / REPLICA_CORES))
    rss = after.memory_kb[SERVICE] / 1024
    rows.append(
        (SERVICE, spent(before, after, SERVICE), f"{rss:.0f} MiB", f"{replicas} x {rss:.0f} MiB")
    )
    pss = after.memory_kb[POSTGRES] / 1024
    event_bytes = stored.event_bytes(stored_before)
    cards_city = stored.card_bytes() * city.residents / 2**20
    events_day = event_bytes * city.daily()[UPLOAD] / 2**20
    rows.append(
        (
            POSTGRES,
            spent(before, after, POSTGRES),
            f"{pss:.0f} MiB",
            f"{cards_city:,.0f} MiB cards + {events_day:,.0f} MiB events a day",
        )
    )
    now_mib = redis_bytes / 2**20
    # Keys that expire within the hour are made by the rate of requests (cached cards of the
    # citizens asking now, code ids and request-token ids seen, minute counters): at a steady
    # rate their number is rate x lifetime, so they grow with the scale. The others (daily
    # tallies) do not.
    rate_bytes = sum(b for _, b, ttl in redis_classes.values() if 0 <= ttl <= RATE_KEY_TTL)
    lasting = redis_bytes - rate_bytes
    city_mib = (rate_bytes * scale + lasting) / 2**20
    rows.append((REDIS, spent(before, after, REDIS), f"{now_mib:.1f} MiB", f"{city_mib:,.0f} MiB"))
    needed = {}
    for name, cpu, memory_now, memory_city in rows:
        per_request = cpu / answered
        cores = needed[name] = per_request * real
        print(
            f"{name:<22}{per_request * 1e3:>15.2f}{cores:>14.2f}{cores / PROVISION_AT:>13.2f}"
            f"{memory_now:>12}  {memory_city}"
        )
    print(
        f"  service: one process per core at most (one uvicorn worker), so {replicas} "
        f"replica(s) at {PROVISION_AT:.0%}; memory is the replica's RSS times that."
    )
    print(
        f"  PostgreSQL: CPU of the backends connected to the bench's database (the pools of the "
        f"service), not the WAL writer, checkpointer or autovacuum; memory now: their PSS. "
        f"For the city: the cards table at {stored.card_bytes():,.0f} B a card (indexes "
        f"included, measured on {stored.cards:,}) for {city.residents:,} residents, which "
        f"shared_buffers should hold, and scan_events at {event_bytes:,.0f} B an event "
        f"(what the run's {stored.events - stored_before.events:,} events added) "
        f"for {city.daily()[UPLOAD]:,.0f} uploads a day."
    )
    print(
        "  Redis: CPU from redis-server's own counters, which count everyone on this Redis "
        "(other engineers' tests too): an upper bound. Memory now: the bench's keys only "
        f"(MEMORY USAGE); for the city, keys living <= {RATE_KEY_TTL} s grow with the rate "
        f"(x {scale:g}: rate x lifetime), the others stay: "
        + ", ".join(
            f"{group} {keys:,} keys {size / 1024:.0f} KiB ttl<={ttl}s"
            for group, (keys, size, ttl) in sorted(redis_classes.items())
        )
    )
    return needed


@dataclass
class Arm:
    name: str
    proxy: Proxy
    rates: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    proxy_cpu: float = 0.0
    service_cpu: float = 0.0
    generator_cpu: float = 0.0
    machine_cpu: float = 0.0
    postgres_cpu: float = 0.0
    commits: int = 0
    sessions: int = 0
    seconds: float = 0.0
    requests: int = 0
    failures: int = 0
    ran_out: bool = False


def print_scaling(arms: Sequence[Arm], replicas: int, connections: int, seconds: float) -> None:
    one, many = arms
    print()
    print(
        f"horizontal scaling: HAProxy (nbthread 1) on loopback in front of 1 replica and of "
        f"{replicas}, sharing one database and one Redis prefix; closed loop of the same mix on "
        f"{connections} connections, {seconds:g} s an arm a round, the order alternating"
    )
    print(
        f"{'arm':<14}{'answers/s by round':>22}{'median':>8}{'p99 ms':>8}{'service':>9}"
        f"{'postgres':>9}{'haproxy':>8}{'generator':>10}{'machine':>8}{'commits/s':>10}"
        f"{'opened/s':>9}"
    )
    for arm in arms:
        print(
            f"{arm.name:<14}{' '.join(f'{r:,.0f}' for r in arm.rates):>22}"
            f"{statistics.median(arm.rates):>8,.0f}{statistics.median(arm.p99):>8.0f}"
            f"{arm.service_cpu / arm.seconds:>9.2f}{arm.postgres_cpu / arm.seconds:>9.2f}"
            f"{arm.proxy_cpu / arm.seconds:>8.2f}{arm.generator_cpu / arm.seconds:>10.2f}"
            f"{arm.machine_cpu / arm.seconds:>8.2f}{arm.commits / arm.seconds:>10,.0f}"
            f"{arm.sessions / arm.seconds:>9.1f}"
            + (f"  ({arm.failures:,} failures)" if arm.failures else "")
            + ("  (the plan ran out)" if arm.ran_out else "")
        )
    print(
        "   service ... machine: CPU in cores while the arm ran (service: all replicas; "
        "postgres: the bench database's backends; machine: everything on it, other engineers' "
        "work too); commits/s, opened/s: transactions committed in the bench's database and "
        "connections opened to it (postgres misses the CPU of those closed between two of its "
        "polls); "
        f"haproxy {one.proxy_cpu / max(1, one.requests) * 1e6:.0f} / "
        f"{many.proxy_cpu / max(1, many.requests) * 1e6:.0f} us a request, the generator "
        f"{one.generator_cpu / max(1, one.requests) * 1e6:.0f} / "
        f"{many.generator_cpu / max(1, many.requests) * 1e6:.0f} us"
    )
    ratios = [m / o for o, m in zip(one.rates, many.rates, strict=True)]
    print(
        f"  throughput ratio, {replicas} replicas / 1: median {statistics.median(ratios):.2f}x "
        f"(rounds: {' '.join(f'{r:.2f}' for r in ratios)}) with {os.cpu_count()} cores for the "
        "replicas, PostgreSQL, Redis, HAProxy and this generator together"
    )
    split = many.proxy.requests_by_server()
    print(
        "  requests by replica behind the proxy: "
        + ", ".join(f"{name} {n:,}" for name, n in sorted(split.items()))
    )


def print_header(args: argparse.Namespace, server: Server, versions: str, haproxy: str) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {cpu_model()}, os.cpu_count()={os.cpu_count()}, "
        f"{platform.system()} {platform.machine()}, load average {load} at start "
        "(shared with other engineers: figures are noisy)"
    )
    print(
        f"service: 'idcode serve' (uvicorn {version('uvicorn')}, 1 worker, no access log), "
        f"Python {platform.python_version()}; {versions}; {args.cards:,} cards enrolled, "
        f"rate limit raised; {server.base_url}" + (f"; {haproxy}" if haproxy else "")
    )
    loop = "uvloop" if uvloop is not None else "asyncio's default loop"
    print(
        f"generator: this process, asyncio on {loop}, raw HTTP/1.1 keep-alive; every request "
        "(and each terminal's signed request token) formatted before the timed part"
    )


# --- the run ------------------------------------------------------------------------------

FULL = {"duration": 180.0, "rounds": 3, "round_seconds": 20.0, "type_seconds": 6.0}
QUICK = {"duration": 60.0, "rounds": 2, "round_seconds": 10.0, "type_seconds": 3.0}
TYPE_CONNECTIONS = 8  # the closed loop that costs one request type at a time
# A request token signed before the timed part is taken until MAX_CLOCK_DRIFT past its expiry
# (idcode.service.requesttokens): the open loop ends a minute before.
LONGEST_PLAN = MAX_TOKEN_LIFETIME + MAX_CLOCK_DRIFT - 60


def slots_for(mix: Mix, rates: dict[str, float], count: float, seed: int) -> list[Slot]:
    """About ``count`` slots of the mix, for a closed loop (their due times are not used)."""
    total = sum(r for k, r in rates.items() if k != IDENTIFY)
    return plan(mix, rates, count / total, seed)


@dataclass(frozen=True)
class TypeCost:
    """One request type alone in a closed loop: answers a second and CPU per answer."""

    kind: str
    answers: int  # a consent slot counts once: its code and its identification
    seconds: float
    cpu: dict[str, float]  # SERVICE, POSTGRES, REDIS: CPU seconds in all
    failures: int


def cost_by_type(
    args: argparse.Namespace,
    runner: asyncio.Runner,
    mix: Mix,
    address: tuple[str, int],
    watch: Watch,
) -> list[TypeCost]:
    """Each request type alone against one replica, so that the mix's CPU splits by type
    (the open loop's figures cannot: its types run together)."""
    costs = []
    noop = f"GET /healthz HTTP/1.1\r\nHost: {mix.host}\r\n\r\n".encode()
    for kind in (NOOP, CODE, CONSENT, UPLOAD, DELTA, BUNDLE):
        if kind == NOOP:
            slots = [Slot(0.0, NOOP, noop, "")] * round(5000 * args.type_seconds)
        else:
            slots = plan(mix, {kind: 1.0}, 600 * args.type_seconds, seed=len(kind))
        print(f"  {ROUTES[kind]} alone ...", file=sys.stderr, flush=True)
        before = watch.sample()
        outcome = runner.run(closed_loop(address, slots, mix, TYPE_CONNECTIONS, args.type_seconds))
        after = watch.sample()
        costs.append(
            TypeCost(
                kind,
                outcome.ok(kind),
                outcome.seconds,
                {g: spent(before, after, g) for g in (SERVICE, POSTGRES, REDIS)},
                sum(outcome.failures().values()),
            )
        )
    return costs


def print_costs(
    costs: Sequence[TypeCost], city: City, hour: int, from_mix: dict[str, float], cards: int
) -> None:
    real = city.per_second(hour, 1)
    print()
    print(
        f"each request type alone, closed loop on {TYPE_CONNECTIONS} connections against one "
        f"replica: CPU ms an answer, and the cores the whole city's hour {hour:02d}-{hour + 1:02d} "
        "needs for that type"
    )
    print(
        f"{'request':<30}{'answers/s':>10}{'service':>9}{'x noop':>8}{'postgres':>9}"
        f"{'redis*':>8}{'city/s':>9}{'service cores':>15}{'postgres cores':>16}"
    )
    totals = {SERVICE: 0.0, POSTGRES: 0.0}
    noop = next(c for c in costs if c.kind == NOOP)
    noop_cpu = noop.cpu[SERVICE] / max(1, noop.answers)
    for cost in costs:
        per = {g: c / max(1, cost.answers) for g, c in cost.cpu.items()}
        rate = real.get(cost.kind, 0.0)
        label = ROUTES[cost.kind] + (" + identify" if cost.kind == CONSENT else "")
        for group in totals:
            totals[group] += per[group] * rate
        city_cells = (
            f"{rate:>9.1f}{per[SERVICE] * rate:>15.2f}{per[POSTGRES] * rate:>16.2f}"
            if cost.kind != NOOP
            else ""
        )
        print(
            f"{label:<30}{cost.answers / cost.seconds:>10,.0f}{per[SERVICE] * 1e3:>9.2f}"
            f"{per[SERVICE] / noop_cpu if noop_cpu else math.nan:>8.1f}"
            f"{per[POSTGRES] * 1e3:>9.2f}{per[REDIS] * 1e3:>8.2f}{city_cells}"
            + (f"  ({cost.failures:,} failures)" if cost.failures else "")
        )
    print(
        f"{'sum':<30}{'':>10}{'':>9}{'':>8}{'':>9}{'':>8}{sum(real.values()):>9.1f}"
        f"{totals[SERVICE]:>15.2f}{totals[POSTGRES]:>16.2f}"
    )
    print(
        "  * redis-server's own counters: everyone's commands on this Redis, an upper bound. "
        "A consent row is a visit: its consent code and its identification. x noop: the "
        "service's CPU an answer over the same server's GET /healthz, measured alike: the "
        "figure to compare between machines."
    )
    codes = next(c for c in costs if c.kind == CODE)
    print(
        f"  {ROUTES[CODE]} alone asked for each of the {cards:,} citizens' codes "
        f"{codes.answers / cards:.1f} times on average: from the second time on, the card and "
        "the ID token were cached. In the open loop a citizen comes back about every 5 "
        "minutes, as long as the card cache keeps a card, so most of its codes were first "
        "asks, as a real citizen's two or three a day are."
    )
    print(
        f"  against the open loop's mix: service {from_mix[SERVICE]:.2f} cores there, "
        f"{totals[SERVICE]:.2f} here; PostgreSQL {from_mix[POSTGRES]:.2f} there, "
        f"{totals[POSTGRES]:.2f} here. Here each type is costed with the service kept busy; at "
        "the scaled rate the mix also spreads the service's fixed costs (its event loop, "
        "metrics, background tasks, idle wake-ups) over few requests, which a city-sized load "
        "would not, so the capacity table above likely errs high."
    )


def run_scaling(
    args: argparse.Namespace,
    runner: asyncio.Runner,
    mix: Mix,
    rates: dict[str, float],
    watch: Watch,
    arms: Sequence[Arm],
) -> None:
    connections = args.closed_connections
    estimate = 0.0
    for arm in arms:  # warm-up: pools, caches; and how many slots a round needs
        slots = slots_for(mix, rates, 20_000, seed=len(arm.name))
        address = ("127.0.0.1", arm.proxy.port)
        warm = runner.run(closed_loop(address, slots, mix, connections, args.warm_up))
        estimate = max(estimate, warm.requests() / warm.seconds)
    for index in range(args.rounds):
        order = arms if index % 2 == 0 else list(reversed(arms))
        for arm in order:
            count = estimate * args.round_seconds * 1.5 + 100
            slots = slots_for(mix, rates, count, seed=1000 + index)
            address = ("127.0.0.1", arm.proxy.port)
            print(f"  round {index + 1}: {arm.name} ...", file=sys.stderr, flush=True)
            before = watch.sample()
            outcome = runner.run(closed_loop(address, slots, mix, connections, args.round_seconds))
            after = watch.sample()
            arm.rates.append(outcome.ok() / outcome.seconds)
            everything = sorted(x for k in KINDS for x in outcome.latency_ms[k])
            arm.p99.append(percentile(everything, 99))
            pid = arm.proxy.pid
            arm.proxy_cpu += after.cpu[PROXY].get(pid, 0.0) - before.cpu[PROXY].get(pid, 0.0)
            arm.service_cpu += spent(before, after, SERVICE)
            arm.generator_cpu += outcome.generator_cpu
            arm.machine_cpu += after.machine - before.machine
            arm.postgres_cpu += spent(before, after, POSTGRES)
            arm.commits += after.commits - before.commits
            arm.sessions += after.sessions - before.sessions
            arm.seconds += outcome.seconds
            arm.requests += outcome.requests()
            arm.failures += sum(outcome.failures().values())
            arm.ran_out = arm.ran_out or outcome.ran_out
            estimate = max(estimate, outcome.requests() / outcome.seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="The model's assumptions: the module docstring and bench/README.md.",
    )
    parser.add_argument(
        "--scale", type=float, default=10, help="the city scaled down by this factor (10)"
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of the scaled hour played (180; --quick 60)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a run of a few minutes: 60 s of the hour, 3 s per request type, 2 scaling rounds "
        "of 10 s (each unless given)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="replicas behind HAProxy compared with one (2); 1 leaves the comparison out",
    )
    parser.add_argument(
        "--hour", type=int, help="the hour of the day to play, 0-23 (default: the peak hour)"
    )
    parser.add_argument("--cards", type=int, default=2000, help="cards enrolled (2000)")
    parser.add_argument(
        "--rounds", type=int, help="scaling rounds, each arm once a round (3; --quick 2)"
    )
    parser.add_argument(
        "--round-seconds", type=float, help="seconds an arm runs a round (20; --quick 10)"
    )
    parser.add_argument(
        "--type-seconds",
        type=float,
        help="seconds of the closed loop that costs each request type alone (6; --quick 3)",
    )
    parser.add_argument("--connections", type=int, default=64, help="open-loop connections (64)")
    parser.add_argument(
        "--closed-connections", type=int, default=32, help="scaling closed-loop connections (32)"
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.warm_up = 3.0
    if args.scale < 1 or min(args.duration, args.round_seconds, args.type_seconds) <= 0:
        parser.error("--scale must be at least 1; --duration and the seconds positive")
    if min(args.replicas, args.cards, args.rounds, args.connections, args.closed_connections) < 1:
        parser.error("--replicas, --cards, --rounds and the connections must be at least 1")
    if args.duration > LONGEST_PLAN:
        parser.error(
            f"--duration is at most {LONGEST_PLAN} s: the request tokens are signed before the "
            f"timed part, and the service takes them for {LONGEST_PLAN + 60} s after that"
        )
    if args.hour is not None and not 0 <= args.hour <= 23:
        parser.error("--hour must be 0-23")
    haproxy = ""
    if args.replicas > 1:
        haproxy = shutil.which("haproxy") or ""
        if not haproxy:
            print(
                "bench/city.py: the scaling comparison needs haproxy (Debian/Ubuntu: apt-get "
                "install haproxy), or run with --replicas 1",
                file=sys.stderr,
            )
            return 1

    city = City()
    city.check()
    hour = city.peak_hour() if args.hour is None else args.hour
    rates = city.per_second(hour, args.scale)
    interrupt_on_sigterm()
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    started = time.monotonic()
    print_model(city, hour, args.scale)
    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None)
    try:
        with ExitStack() as cleanup:
            cleanup.callback(runner.close)
            ttl = 3600 + int(args.duration + 2 * args.rounds * args.round_seconds)
            print("  setting up: database, cards, keys ...", file=sys.stderr, flush=True)
            service = prepare_service(cleanup, args.cards, token_ttl=ttl)
            first = cleanup.enter_context(running_server(service.env, service.workdir))
            check_issuance(first.base_url, service.tokens[0])
            party = register_relying_party(first.base_url, service.settings)
            check_consent_issuance(first.base_url, service.tokens[0], party)
            operator = dev_token(
                service.settings, "bench-operator", roles=(service.settings.operator_role,)
            )
            counts = city.scaled_terminals(args.scale)
            print(
                f"  registering {sum(counts.values()):,} terminals ...", file=sys.stderr, flush=True
            )
            terminals = register_terminals(first.base_url, operator, counts)
            mix = Mix(
                urlsplit(first.base_url).netloc,
                service.tokens,
                terminals,
                party,
                status_version(first.base_url, terminals[0]),
                city.offline_scans(hour),
            )
            client = redis.Redis.from_url(REDIS_URL)
            cleanup.callback(client.close)
            watch = Watch(service.database_url, client, service.settings.redis_prefix)
            cleanup.callback(watch.close)
            watch.services = [first.pid]
            versions = server_versions(service.database_url, REDIS_URL)
            haproxy_version = ""
            if haproxy:
                completed = subprocess.run([haproxy, "-v"], capture_output=True, text=True)
                haproxy_version = completed.stdout.splitlines()[0] if completed.stdout else ""
            print_header(args, first, versions, haproxy_version)

            address = ("127.0.0.1", urlsplit(first.base_url).port or 80)
            warm = slots_for(mix, rates, 2000, seed=1)
            runner.run(closed_loop(address, warm, mix, 8, args.warm_up))
            building = time.process_time()
            slots = plan(mix, rates, args.duration, seed=2)
            building = time.process_time() - building
            print(
                f"  open loop: {len(slots):,} requests over {args.duration:g} s "
                f"(formatted in {building:.1f} s of CPU) ...",
                file=sys.stderr,
                flush=True,
            )
            stored_before = storage(service.database_url)
            before = watch.sample()
            outcome = runner.run(open_loop(address, slots, mix, args.connections))
            after = watch.sample()
            redis_bytes, redis_classes = watch.prefix_memory()
            stored = storage(service.database_url)
            print_open_loop(outcome, rates, before, after, args.duration)
            needed = print_capacity(
                city,
                hour,
                args.scale,
                outcome,
                before,
                after,
                redis_bytes,
                redis_classes,
                stored,
                stored_before,
            )
            costs = cost_by_type(args, runner, mix, address, watch)
            print_costs(costs, city, hour, needed, args.cards)

            if args.replicas > 1:
                servers = [first]
                for n in range(2, args.replicas + 1):
                    workdir = service.workdir / f"replica-{n}"
                    workdir.mkdir()
                    servers.append(cleanup.enter_context(running_server(service.env, workdir)))
                watch.services = [s.pid for s in servers]
                one = cleanup.enter_context(
                    running_haproxy(haproxy, service.workdir, "one", [first])
                )
                many = cleanup.enter_context(
                    running_haproxy(haproxy, service.workdir, "many", servers)
                )
                watch.proxies = [one.pid, many.pid]
                arms = [Arm("1 replica", one), Arm(f"{args.replicas} replicas", many)]
                run_scaling(args, runner, mix, rates, watch, arms)
                print_scaling(arms, args.replicas, args.closed_connections, args.round_seconds)
    except BenchError as exc:
        print(f"bench/city.py: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            "bench/city.py: interrupted; servers stopped, database and keys removed",
            file=sys.stderr,
        )
        return 130
    print()
    print(
        f"command: {shlex.join(sys.orig_argv)}  (cwd {os.getcwd()}; "
        f"{time.monotonic() - started:.1f} s in all, setup and clean-up included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
