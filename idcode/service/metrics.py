"""The service's Prometheus metrics: what it counts, and the fleet as terminals report it.

Every series is listed, with its labels, in docs/operations.md. No label ever holds personal
data, a card pseudonym, a pairwise subject or a request path: reasons come from closed sets
(anything else is counted as ``other``), routes are the templates (``/v1/links/{subject}``),
and the only open-ended label, a terminal's id, is a service-made UUID whose count is bounded
by ``IDCODE_METRICS_TERMINAL_SERIES``.

Several worker processes (``idcode serve --workers N``) share their counters through
prometheus-client's multiprocess mode: ``idcode serve`` points ``PROMETHEUS_MULTIPROC_DIR``
at a fresh directory before the workers start, and a scrape, whichever worker answers it,
reads every worker's files. The fleet series are read from the database at each scrape, so
any worker (or replica) gives the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from idcode.reasons import Reason
from idcode.service import identification
from idcode.service.models import TerminalRecord
from idcode.service.revocation import status_version

# No *_created series beside every counter and histogram: they double the series a scrape
# carries, and Prometheus's text format 0.0.4 has no use for them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

#: Prometheus's text format (version 0.0.4), what ``generate_latest`` writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: A value outside a label's closed set: counted, never written as sent.
OTHER = "other"

CODE_KINDS = ("code", "code_with_consent", "visitor_pass", "device_credential")
VERIFY_REASONS = frozenset(reason.value for reason in Reason)
#: Why an identification was answered as it was: the verifier's reasons, the consent's
#: refusals (identification.py) and the route's own.
IDENTIFY_REASONS = VERIFY_REASONS | {
    identification.NO_CONSENT,
    identification.OTHER_PARTY,
    identification.PURPOSE_MISMATCH,
    identification.CODE_USED,
    identification.REVOKED,
    identification.EXPIRED,
    identification.DEACTIVATED,
    "unknown_purpose",
    "database_unavailable",
}
DATABASE_ERRORS = ("unreachable", "pool_exhausted", "other")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Issuance takes about a millisecond: finer buckets at the low end than the library's.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

CODES_ISSUED = Counter(
    "idcode_codes_issued",
    "Codes and credentials issued, by kind and deployment prefix.",
    ["kind", "prefix"],
)
VERIFICATIONS = Counter(
    "idcode_verifications",
    "Online verifications (POST /v1/verify), by the verdict's reason.",
    ["reason"],
)
IDENTIFICATIONS = Counter(
    "idcode_identifications",
    "Identifications (POST /v1/identify), by reason: ok, or why it was refused.",
    ["reason"],
)
HTTP_LATENCY = Histogram(
    "idcode_http_request_duration_seconds",
    "Time to answer a request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMITED = Counter(
    "idcode_rate_limited_requests",
    "Requests refused with 429 (a citizen over the rate limit), by route template.",
    ["route"],
)
STATE_DEGRADED = Gauge(
    "idcode_state_degraded",
    "1 while this process cannot reach Redis and runs on per-process state.",
    multiprocess_mode="max",
)
STATE_DEGRADATIONS = Counter(
    "idcode_state_degradations",
    "Times a process lost Redis and went over to per-process state.",
)
DATABASE_ERRORS_TOTAL = Counter(
    "idcode_database_errors",
    "Database errors answered 503 (unreachable, pool exhausted) or 500 (other).",
    ["kind"],
)


def initialise(prefix: str) -> None:
    """Create every series of the closed label sets at zero, so that a dashboard shows 0
    rather than nothing, and a rate over the first event is right."""
    for kind in CODE_KINDS:
        CODES_ISSUED.labels(kind, prefix)
    for reason in VERIFY_REASONS:
        VERIFICATIONS.labels(reason)
    for reason in IDENTIFY_REASONS:
        IDENTIFICATIONS.labels(reason)
    for kind in DATABASE_ERRORS:
        DATABASE_ERRORS_TOTAL.labels(kind)


def closed(value: str, allowed: Iterable[str]) -> str:
    """``value`` when it is one of ``allowed``, else ``other``: a label never takes a value
    from outside its set, whatever reaches it."""
    return value if value in allowed else OTHER


#: The codes-issued children by (kind, prefix): labels() takes a lock and checks its values on
#: every call, the hottest route's counter looks its child up here once.
_issued: dict[tuple[str, str], Any] = {}


def count_code(kind: str, prefix: str) -> None:
    child = _issued.get((kind, prefix))
    if child is None:
        child = _issued[(kind, prefix)] = CODES_ISSUED.labels(closed(kind, CODE_KINDS), prefix)
    child.inc()


def count_verification(reason: str) -> None:
    VERIFICATIONS.labels(closed(reason, VERIFY_REASONS)).inc()


def count_identification(reason: str) -> None:
    IDENTIFICATIONS.labels(closed(reason, IDENTIFY_REASONS)).inc()


def count_database_error(kind: str) -> None:
    DATABASE_ERRORS_TOTAL.labels(closed(kind, DATABASE_ERRORS)).inc()


def state_degraded(degraded: bool) -> None:
    """Note that this process lost (or found again) Redis."""
    if degraded:
        STATE_DEGRADATIONS.inc()
    STATE_DEGRADED.set(1 if degraded else 0)


class RequestMetrics:
    """Each answer's latency by method, route template and status, and the 429s, told by the
    outermost middleware (``requestlog.RequestLog(observe=RequestMetrics())``: one layer
    times a request for its access line and for these, not two). The route is the one the
    router matched (``scope["route"]``), never the path, so ids in paths (a subject, a
    terminal, an event) never become labels; no match: ``unmatched``."""

    def __init__(self) -> None:
        # labels() looks the child up under a lock: cached here, a request costs one dict get.
        self._children: dict[tuple[str, str, int], Any] = {}

    def __call__(self, scope: Any, status: int, seconds: float) -> None:
        template = getattr(scope.get("route"), "path", None)
        method = scope.get("method", "")
        key = (
            method if method in METHODS else OTHER,
            template if isinstance(template, str) else "unmatched",
            status,
        )
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HTTP_LATENCY.labels(key[0], key[1], str(status))
        child.observe(seconds)
        if status == 429:
            RATE_LIMITED.labels(key[1]).inc()


class FleetCollector(Collector):
    """The terminal fleet as the terminals last reported it, read from the database at each
    scrape: per scene (always) and per terminal (while the active fleet is at most
    ``per_terminal_limit``: one series per terminal and measure, so a large fleet does not
    flood the metrics store). Terminal ids are the service's UUIDs, not personal data."""

    def __init__(self, sessions: sessionmaker[Session], per_terminal_limit: int) -> None:
        self.sessions = sessions
        self.per_terminal_limit = per_terminal_limit

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            version = status_version(session)
            terminals = session.execute(
                select(
                    TerminalRecord.id,
                    TerminalRecord.scene,
                    TerminalRecord.site,
                    TerminalRecord.last_seen_at,
                    TerminalRecord.clock_drift,
                    TerminalRecord.trust_version,
                    TerminalRecord.journal_backlog,
                ).where(TerminalRecord.active.is_(True))
            ).all()
        yield from self._per_scene(terminals, version)
        if len(terminals) <= self.per_terminal_limit:
            yield from self._per_terminal(terminals, version)

    @staticmethod
    def _per_scene(terminals: Sequence[Any], version: int) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            "idcode_fleet_terminals", "Active terminals, by scene.", labels=["scene"]
        )
        backlog = GaugeMetricFamily(
            "idcode_fleet_journal_backlog_events",
            "Events the scene's terminals had not uploaded at their last requests (sum).",
            labels=["scene"],
        )
        drift = GaugeMetricFamily(
            "idcode_fleet_max_clock_drift_seconds",
            "The largest clock drift (absolute) among the scene's terminals.",
            labels=["scene"],
        )
        lag = GaugeMetricFamily(
            "idcode_fleet_max_trust_version_lag",
            "The most status-list versions any of the scene's terminals is behind.",
            labels=["scene"],
        )
        oldest = GaugeMetricFamily(
            "idcode_fleet_oldest_last_seen_timestamp_seconds",
            "When the scene's least recently seen terminal was last seen (Unix time; "
            "a terminal never seen counts as 0).",
            labels=["scene"],
        )
        scenes: dict[str, list[Any]] = {}
        for terminal in terminals:
            scenes.setdefault(terminal.scene, []).append(terminal)
        for scene, members in sorted(scenes.items()):
            count.add_metric([scene], len(members))
            backlog.add_metric([scene], sum(t.journal_backlog or 0 for t in members))
            drift.add_metric([scene], max(abs(t.clock_drift or 0) for t in members))
            lag.add_metric([scene], max(_lag(t, version) for t in members))
            oldest.add_metric([scene], min(_seen(t) for t in members))
        yield from (count, backlog, drift, lag, oldest)

    @staticmethod
    def _per_terminal(terminals: Sequence[Any], version: int) -> Iterator[Metric]:
        labels = ["terminal", "scene", "site"]
        seen = GaugeMetricFamily(
            "idcode_terminal_last_seen_timestamp_seconds",
            "When the terminal's last accepted request came (Unix time).",
            labels=labels,
        )
        drift = GaugeMetricFamily(
            "idcode_terminal_clock_drift_seconds",
            "The terminal's clock minus the service's, from its last request.",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "idcode_terminal_trust_version_lag",
            "Status-list versions the terminal is behind the service's.",
            labels=labels,
        )
        backlog = GaugeMetricFamily(
            "idcode_terminal_journal_backlog_events",
            "Events the terminal had not uploaded at its last request (as it reported).",
            labels=labels,
        )
        for terminal in terminals:
            names = [terminal.id, terminal.scene, terminal.site]
            # A terminal that never came (or never said) has no sample: absent, not zero.
            if terminal.last_seen_at is not None:
                seen.add_metric(names, _seen(terminal))
            if terminal.clock_drift is not None:
                drift.add_metric(names, terminal.clock_drift)
            if terminal.trust_version is not None:
                lag.add_metric(names, _lag(terminal, version))
            if terminal.journal_backlog is not None:
                backlog.add_metric(names, terminal.journal_backlog)
        yield from (seen, drift, lag, backlog)


def _seen(terminal: Any) -> float:
    return terminal.last_seen_at.timestamp() if terminal.last_seen_at is not None else 0.0


def _lag(terminal: Any, version: int) -> int:
    """Versions behind; a terminal that never synced is as far behind as can be."""
    held = terminal.trust_version
    return version if held is None else max(0, version - held)


def exposition(fleet: FleetCollector) -> bytes:
    """The text a scrape gets: this process's series (every worker's, in multiprocess mode),
    then the fleet's."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped upstream
        counted = generate_latest(registry)
    else:
        counted = generate_latest(REGISTRY)
    fleet_registry = CollectorRegistry(auto_describe=False)
    fleet_registry.register(fleet)
    return counted + generate_latest(fleet_registry)
