"""The terminal's own metrics, in Prometheus's text format, for node_exporter's textfile
collector (``idcode terminal run --metrics-textfile DIR/idcode.prom``).

A file rather than a port: a gate opens no listening socket for monitoring, and the city's
node_exporter (already on its hosts) publishes the file with the host's own metrics. Written
by hand, a few lines: the terminal extra stays free of prometheus-client. No label holds a
code, a subject or personal data: decision reasons are the journal's machine-readable
reasons (anything else is counted as ``other``), and the terminal's id, scene and site are
what the service's fleet metrics name it by (docs/operations.md).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: A reason as adapters write them (``ok``, ``expired``, ``not_resident``...).
_REASON = re.compile(r"[a-z][a-z0-9_]{0,47}")
OTHER = "other"


def reason_label(reason: str) -> str:
    """The reason as a label value, or ``other`` for anything not shaped like a reason."""
    return reason if _REASON.fullmatch(reason) else OTHER


@dataclass(frozen=True, slots=True)
class RuntimeSnapshot:
    """What the metrics file says, read from the runtime at one moment."""

    terminal: str
    scene: str
    site: str
    now: float
    online: bool
    decisions: Mapping[tuple[bool, str], int]
    journal_backlog: int
    last_sync: float | None
    trust_version: int | None
    trust_signed_at: int | None
    trust_fresh_until: int | None
    clock_drift: int | None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(snapshot: RuntimeSnapshot) -> str:
    """The snapshot in Prometheus's text format (version 0.0.4). A measure the terminal does
    not have yet (no sync, no trust) has no sample: absent, not zero."""
    lines: list[str] = []

    def family(name: str, kind: str, text: str, samples: list[tuple[str, int | float]]) -> None:
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            number = str(value) if isinstance(value, int) else f"{value:.3f}"
            lines.append(f"{name}{labels} {number}")

    who = (
        f'{{terminal="{_escape(snapshot.terminal)}",scene="{_escape(snapshot.scene)}",'
        f'site="{_escape(snapshot.site)}"}}'
    )
    family("idcode_runtime_info", "gauge", "The terminal this file describes.", [(who, 1)])
    family(
        "idcode_runtime_decisions_total",
        "counter",
        "Decisions since the terminal started, by admission and reason.",
        [
            (f'{{admitted="{str(admitted).lower()}",reason="{reason}"}}', count)
            for (admitted, reason), count in sorted(snapshot.decisions.items())
        ],
    )
    family(
        "idcode_runtime_journal_backlog_events",
        "gauge",
        "Journaled events not yet uploaded.",
        [("", snapshot.journal_backlog)],
    )
    family(
        "idcode_runtime_online",
        "gauge",
        "1 unless the terminal runs --offline.",
        [("", 1 if snapshot.online else 0)],
    )
    if snapshot.last_sync is not None:
        family(
            "idcode_runtime_last_sync_timestamp_seconds",
            "gauge",
            "When the last successful trust sync ended (Unix time).",
            [("", snapshot.last_sync)],
        )
    if snapshot.trust_signed_at is not None:
        family(
            "idcode_runtime_trust_age_seconds",
            "gauge",
            "Seconds since the held trust was signed (by this terminal's clock).",
            [("", max(0, int(snapshot.now) - snapshot.trust_signed_at))],
        )
    if snapshot.trust_fresh_until is not None:
        family(
            "idcode_runtime_trust_fresh_until_timestamp_seconds",
            "gauge",
            "When the held trust goes stale and every scan is denied stale_trust (Unix time).",
            [("", snapshot.trust_fresh_until)],
        )
    if snapshot.trust_version is not None:
        family(
            "idcode_runtime_trust_version",
            "gauge",
            "The status-list version of the held trust.",
            [("", snapshot.trust_version)],
        )
    if snapshot.clock_drift is not None:
        family(
            "idcode_runtime_clock_drift_seconds",
            "gauge",
            "This terminal's clock minus the service's, at the last bundle fetch.",
            [("", snapshot.clock_drift)],
        )
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (a temporary file, then a rename), so that
    node_exporter never reads half a file."""
    handle, temporary = tempfile.mkstemp(prefix=".idcode-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # node_exporter often runs as another user
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
