"""The terminal's own metrics file (``idcode terminal run --metrics-textfile``): decisions by
reason, journal backlog, trust version and age, in Prometheus's text format, written whole."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from idcode.bundle import sign_bundle
from idcode.claims import Card
from idcode.cli import main
from idcode.scenes import Decision, History, Scan, SceneAdapter, encode_scene_key
from idcode.statuslist import StatusList
from idcode.terminal import identity as identities
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.metrics import reason_label
from idcode.terminal.runtime import TerminalRuntime
from idcode.terminal.trust import TrustStore
from idcode.testing import TestIssuer

SCENE = "community"
SITE = "test-site"
UNREACHABLE = "http://127.0.0.1:9"  # nothing answers on the discard port
BUNDLE_VERSION = 7
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class AdmitEveryCode(SceneAdapter):
    scene: ClassVar[str] = SCENE

    def decide_valid(self, scan: Scan, card: Card, subject: str, history: History) -> Decision:
        return Decision.admit("entry")


def provisioned(directory: Path, issuer: TestIssuer) -> TerminalIdentity:
    """A terminal directory holding a bundle ``issuer`` signed, as after its first sync."""
    token = sign_bundle(
        issuer.root,
        version=BUNDLE_VERSION,
        issued_at=issuer.now,
        max_age=48 * 3600,
        keys=[issuer.key.public],
        status=StatusList(1024),
        scene={
            "scene": SCENE,
            "site": SITE,
            "version": 1,
            "data": {},
            "subject_key": encode_scene_key(issuer.subject_key(SCENE)),
        },
    )
    identity = TerminalIdentity(
        str(uuid.uuid4()),
        SCENE,
        SITE,
        UNREACHABLE,
        identities.new_terminal_key(),
        issuer.root.public_jwk,
    )
    identities.save(directory, identity)
    TrustStore(directory, issuer.root.public_jwk).save_bundle(token, None)
    return identity


@pytest.fixture
def runtime(tmp_path: Path, issuer: TestIssuer) -> Iterator[TerminalRuntime]:
    directory = tmp_path / "gate"
    identity = provisioned(directory, issuer)
    runtime = TerminalRuntime(
        directory,
        identity,
        clock=lambda: float(issuer.now + 90),
        online=False,
        adapter=AdmitEveryCode,
        metrics_textfile=tmp_path / "idcode.prom",
    )
    try:
        yield runtime
    finally:
        runtime.stop()


def read(path: Path) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def test_the_metrics_file_counts_decisions_by_reason_and_the_backlog(
    runtime: TerminalRuntime, issuer: TestIssuer, tmp_path: Path
) -> None:
    code = issuer.mint(ttl=600)
    runtime.scan(code)
    runtime.scan(code)
    runtime.scan("WH1:not-a-code")
    runtime.write_metrics()

    samples = read(tmp_path / "idcode.prom")

    def decisions(admitted: str, reason: str) -> float:
        labels = frozenset({("admitted", admitted), ("reason", reason)})
        return samples[("idcode_runtime_decisions_total", labels)]

    assert decisions("true", "ok") == 1
    assert decisions("false", "replayed") == 1
    assert decisions("false", "malformed") == 1
    assert samples[("idcode_runtime_journal_backlog_events", frozenset())] == 3
    assert samples[("idcode_runtime_trust_version", frozenset())] == BUNDLE_VERSION
    assert samples[("idcode_runtime_trust_age_seconds", frozenset())] == 90
    assert samples[("idcode_runtime_online", frozenset())] == 0
    identity = runtime.identity
    who = frozenset({("terminal", identity.id), ("scene", SCENE), ("site", SITE)})
    assert samples[("idcode_runtime_info", who)] == 1
    # Never synced here: no sample rather than a made-up zero.
    assert not any(name == "idcode_runtime_last_sync_timestamp_seconds" for name, _ in samples)
    # The code itself is nowhere in the file.
    assert code not in (tmp_path / "idcode.prom").read_text()


def test_the_running_terminal_writes_the_file_and_rewrites_it_when_it_stops(
    runtime: TerminalRuntime, issuer: TestIssuer, tmp_path: Path
) -> None:
    runtime.start()
    runtime.scan(issuer.mint(ttl=600))
    runtime.stop()  # the last write: whatever the loop last wrote, the final counts
    samples = read(tmp_path / "idcode.prom")
    labels = frozenset({("admitted", "true"), ("reason", "ok")})
    assert samples[("idcode_runtime_decisions_total", labels)] == 1
    assert not list(tmp_path.glob(".idcode-*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("reason", ["ok", "not_resident", "stale_trust"])
def test_reasons_are_labels_as_they_are(reason: str) -> None:
    assert reason_label(reason) == reason


@pytest.mark.parametrize("reason", ["", "Bad Reason", "x" * 49, 'quote"', "110101199003074578"])
def test_anything_not_shaped_like_a_reason_is_other(reason: str) -> None:
    assert reason_label(reason) == "other"


@pytest.mark.parametrize(
    ("path", "message"),
    [("metrics.txt", "only *.prom files"), ("no-such-dir/idcode.prom", "no directory")],
)
def test_a_metrics_file_node_exporter_would_not_read_stops_the_terminal(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    issuer: TestIssuer,
    path: str,
    message: str,
) -> None:
    directory = tmp_path / "gate"
    provisioned(directory, issuer)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    status = main(
        [
            "terminal",
            "run",
            "--dir",
            str(directory),
            "--offline",
            "--metrics-textfile",
            str(tmp_path / path),
        ]
    )
    assert status == 2
    assert message in capsys.readouterr().err
