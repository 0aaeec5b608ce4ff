"""The terminal runtime: scans in, decisions out, journal first; trust sync and uploads beside.

A scan is verified offline and decided by the scene adapter, written to the journal (and
synced to disk), and only then acted on. Two background threads talk to the service when
the network is there: the syncer keeps the trust bundle current (status deltas every
``sync_interval``, a conditional fetch of the whole bundle every ``bundle_interval``), and the
uploader sends journaled events in batches. Both back off exponentially, with jitter, while
the service cannot be reached or answers with something unusable; the terminal meanwhile goes
on deciding for as long as its trust is fresh (docs/terminal.md). No answer and no error ends
either loop: each failure is logged, by type, and the loop tries again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from idcode.bundle import TrustBundle, pinned_profile, verify_bundle, verify_delta
from idcode.codetext import DEFAULT_DEPLOYMENT, prefix_for
from idcode.cose import Algorithm
from idcode.decider import Decider
from idcode.errors import (
    BadResponse,
    BundleError,
    IdcodeError,
    SceneError,
    ServiceError,
    ServiceUnreachable,
)
from idcode.protocol import MAX_CLOCK_DRIFT, MAX_EVENTS_PER_BATCH
from idcode.reasons import Reason
from idcode.scenes import Decision, Scan, SceneAdapter, load_adapter
from idcode.terminal.client import TerminalClient
from idcode.terminal.identity import TerminalIdentity
from idcode.terminal.journal import Journal, JournalEntry, JournalReplay
from idcode.terminal.metrics import RuntimeSnapshot, reason_label, render, write_textfile
from idcode.terminal.trust import TrustStore, describe
from idcode.verifier import DEFAULT_CLOCK_SKEW, Verdict

log = logging.getLogger("idcode.terminal")

JOURNAL_FILE = "journal.sqlite3"
MAX_BACKOFF = 300.0  # seconds between attempts while the service stays unreachable
DRIFT_WARNING = DEFAULT_CLOCK_SKEW
RETENTION_DAYS = 35  # uploaded events kept for adapters' history and local inspection
#: Trust signed further than this in the terminal's future is refused: adopting it would
#: freeze the terminal's trust (every later, correctly dated bundle or delta would look older)
#: until its clock caught up. A terminal whose clock is that far behind keeps its old trust,
#: which goes stale (fail closed) and shows in the service's view of its clock drift.
MAX_FUTURE_TRUST = MAX_CLOCK_DRIFT


def backoff(failures: int, base: float = 1.0, cap: float = MAX_BACKOFF) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so that terminals
    that lost the network together do not come back together."""
    delay: float = min(cap, base * 2 ** min(failures, 30))
    return delay / 2 + random.uniform(0, delay / 2)


class Reachability:
    """Whether the service answered the terminal's last request, logged once per change.

    A terminal that lost the network tries again and again (with backoff): one line when the
    service becomes unreachable and one when it answers again, with the number of failed
    attempts between, rather than a line per attempt. Thread-safe: the syncer, the uploader
    and the final drain share one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failed_attempts = 0  # since the service last answered

    def failed(self, what: str, exc: ServiceUnreachable) -> None:
        with self._lock:
            self.failed_attempts += 1
            first = self.failed_attempts == 1
        if first:
            log.warning("%s: the service is unreachable (%s); retrying with backoff", what, exc)
        else:
            log.debug("%s: the service is still unreachable (%s)", what, exc)

    def answered(self) -> None:
        with self._lock:
            failed, self.failed_attempts = self.failed_attempts, 0
        if failed:
            log.info("the service answers again, after %d failed attempts", failed)


def _log_failure(what: str, exc: Exception, reachability: Reachability) -> None:
    """Log why a sync or upload step failed, by the error's type: no answer (once per change,
    ``Reachability``), an answer the terminal refused, or an error it did not expect (a bug:
    at error level, with where it happened). Messages are the terminal's own; none repeats a
    code or personal data."""
    if isinstance(exc, ServiceUnreachable):
        reachability.failed(what, exc)
        return
    if isinstance(exc, ServiceError) and not isinstance(exc, BadResponse):
        reachability.answered()  # an answer, if not the one asked for
    if isinstance(exc, IdcodeError):
        log.warning("%s failed (%s): %s; retrying later", what, type(exc).__name__, exc)
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        # The type and the place, not the message: an unexpected error's text is not vetted.
        log.error("%s failed: unexpected %s at %s; retrying later", what, type(exc).__name__, where)


def _worth_retrying(exc: Exception) -> bool:
    """Whether a failed upload may succeed if tried again within seconds: not when the service
    cannot be reached at all, nor when it refused the terminal (401, 403: decommissioned),
    only after an answer it could not use or a passing refusal (408, 429, 5xx)."""
    if isinstance(exc, ServiceUnreachable):
        return False
    if isinstance(exc, ServiceError) and not isinstance(exc, BadResponse):
        return exc.status in (408, 429) or exc.status >= 500
    return True


class TerminalRuntime:
    """One terminal: its identity, journal, trust and adapter, and the loops around them."""

    def __init__(
        self,
        directory: Path,
        identity: TerminalIdentity,
        *,
        journal_path: Path | None = None,
        options: Mapping[str, str] | None = None,
        deployment: str = DEFAULT_DEPLOYMENT,
        algorithms: Iterable[Algorithm] = (Algorithm.EDDSA,),
        clock: Callable[[], float] = time.time,
        sync_interval: float = 60.0,
        bundle_interval: float = 900.0,
        upload_interval: float = 5.0,
        batch_size: int = 500,
        max_backoff: float = MAX_BACKOFF,
        online: bool = True,
        client: TerminalClient | None = None,
        adapter: type[SceneAdapter] | None = None,
        metrics_textfile: Path | None = None,
        metrics_interval: float = 15.0,
    ) -> None:
        self.identity = identity
        self.options = dict(options or {})
        self.prefix = prefix_for(deployment)
        self.algorithms = tuple(algorithms)
        self.clock = clock
        self.sync_interval = sync_interval
        self.bundle_interval = bundle_interval
        self.upload_interval = upload_interval
        if not 1 <= batch_size <= MAX_EVENTS_PER_BATCH:  # what the service takes at once
            raise IdcodeError(f"the upload batch size must be 1-{MAX_EVENTS_PER_BATCH}")
        self.batch_size = batch_size
        self.max_backoff = max_backoff  # the longest pause between failed attempts
        self.client = client or TerminalClient(
            identity, backlog=lambda: self.journal.pending_count(self.identity.id)
        )
        self.adapter = adapter or load_adapter(identity.scene)
        self.trust_store = TrustStore(directory, identity.root_jwk)
        held = self.trust_store.load()  # before the journal opens: a bad bundle stops here
        self.journal = Journal(journal_path or directory / JOURNAL_FILE)
        self.replay = JournalReplay(self.journal)
        #: Cleared while the terminal is offline: the loops then leave the service alone.
        self.network = threading.Event()
        if online:
            self.network.set()
        self.clock_drift: int | None = None
        self.last_sync: float | None = None
        #: Decisions since start, by (admitted, reason): the metrics file's counter.
        self.decisions: Counter[tuple[bool, str]] = Counter()
        self.metrics_textfile = metrics_textfile
        self.metrics_interval = metrics_interval
        self._decide_lock = threading.Lock()
        self.reachability = Reachability()
        self._stop = threading.Event()
        self._upload_wanted = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_bundle_check = 0.0
        self.bundle: TrustBundle | None = None
        self.decider: Decider | None = None
        if held is not None:
            try:
                self._adopt(held)
            except BaseException:
                self.journal.close()
                raise

    # -- deciding -----------------------------------------------------------------------------

    @property
    def relying_party(self) -> str | None:
        """The relying party this terminal belongs to (a hospital's kiosk), as its held trust
        bundle names it; None for a scene's terminal, or before its first bundle."""
        bundle = self.bundle
        return bundle.relying_party if bundle is not None else None

    @property
    def subject_in_lines(self) -> bool:
        """Whether this terminal's decision lines carry the scan's subject: a relying party's
        terminal (its pairwise subject), or one whose adapter gives its site's software the
        site's own subject (``SceneAdapter.subject_in_decision_line``)."""
        return self.relying_party is not None or self.adapter.subject_in_decision_line

    def scan(self, text: str) -> JournalEntry:
        """Decide on one scanned text and journal the decision; act on what this returns."""
        with self._decide_lock:
            now = int(self.clock())
            decider = self.decider
            if decider is None:
                scan = Scan(text, Verdict(Reason.STALE_TRUST, detail="no trust bundle yet"), now)
                decision = Decision.deny(Reason.STALE_TRUST.value)
            else:
                scan, decision = decider.decide(text, now, self.journal)
            entry = self.journal.record(self.identity.id, scan, decision)
            self.decisions[(entry.admitted, reason_label(entry.reason))] += 1
        self._upload_wanted.set()
        return entry

    def _adopt(self, bundle: TrustBundle, keep: Callable[[], None] | None = None) -> None:
        """Decide with ``bundle`` from now on. ``keep`` writes it to disk: after the adapter
        accepted its scene data, before the first decision with it, so a restart never goes
        back to an older trust nor comes up with one it cannot use."""
        site = bundle.scene.get("site")
        if site != self.identity.site:
            raise SceneError(
                f"the trust bundle is for site {str(site)[:64]!r}, this terminal is at "
                f"{self.identity.site!r}"
            )
        decider = Decider(
            bundle,
            self.adapter,
            prefix=self.prefix,
            replay=self.replay,
            algorithms=self.algorithms,
            options=self.options,
        )
        if keep is not None:
            keep()
        with self._decide_lock:
            self.bundle, self.decider = bundle, decider

    # -- trust sync ---------------------------------------------------------------------------

    def sync_once(self) -> str:
        """One sync step: ``bundle`` (a new bundle), ``delta`` (a status delta applied) or
        ``unchanged``. Raises ServiceUnreachable, ServiceError or BundleError."""
        now = self.clock()
        held = self.bundle
        if held is None or now >= self._next_bundle_check:
            outcome = self._fetch_bundle(held)
            self._next_bundle_check = now + self.bundle_interval
        else:
            outcome = self._fetch_delta(held)
        self.last_sync = now
        return outcome

    def _fetch_bundle(self, held: TrustBundle | None, *, version_reset: bool = False) -> str:
        """Fetch the whole bundle. ``version_reset``: the service said it does not know the
        held version (restored from a backup, say), so a lower version is accepted, but
        still never a bundle signed before the held one: that would be a replay, which
        could bring back a revoked card or a removed key."""
        etag = self.trust_store.etag if held is not None and not version_reset else None
        token, etag = self.client.trust_bundle(etag)
        if token is None:
            return "unchanged"
        root_jwk = self.identity.root_jwk
        bundle = verify_bundle(token, root_jwk, pinned_profile(root_jwk))
        self._note_drift(bundle)
        self._not_from_the_future(bundle.issued_at)
        if held is not None and (
            # Signed after the held trust, to the second: one from the same second as the held
            # one may be the recorded predecessor of a delta (the next sync retries).
            bundle.issued_at <= held.issued_at if version_reset else not held.superseded_by(bundle)
        ):
            raise BundleError(
                "the service sent a bundle older than the one held; kept the held one"
            )
        # A SceneError (scene data this adapter refuses) leaves the held trust in place.
        self._adopt(bundle, keep=lambda: self.trust_store.save_bundle(token, etag))
        return "bundle"

    def _fetch_delta(self, held: TrustBundle) -> str:
        try:
            token = self.client.status_delta(held.version)
        except ServiceError as exc:
            # The service does not know our version: start afresh. Only on its own problem
            # answer; a garbled 409 is retried like any unusable answer.
            if exc.status == 409 and not isinstance(exc, BadResponse):
                return self._fetch_bundle(held, version_reset=True)
            raise
        root_jwk = self.identity.root_jwk
        delta, signed_at = verify_delta(token, root_jwk, pinned_profile(root_jwk))
        self._not_from_the_future(signed_at)
        self._adopt(
            held.apply_delta(delta, signed_at), keep=lambda: self.trust_store.save_delta(token)
        )
        changed = delta.invalidated or delta.validated or delta.revoked_devices
        return "delta" if changed else "unchanged"

    def _not_from_the_future(self, signed_at: int) -> None:
        ahead = signed_at - int(self.clock())
        if ahead > MAX_FUTURE_TRUST:
            raise BundleError(
                f"the trust was signed {ahead} s in this terminal's future: kept the held trust;"
                " set this terminal's clock (or the service's) right"
            )

    def _note_drift(self, bundle: TrustBundle) -> None:
        drift = int(self.clock() - bundle.issued_at)
        self.clock_drift = drift
        if abs(drift) > DRIFT_WARNING:
            log.warning(
                "this terminal's clock is %+d s off the service's; codes are judged by it", drift
            )

    # -- uploads ------------------------------------------------------------------------------

    def upload_once(self) -> int:
        """Send one batch of pending events; returns how many left the pending state."""
        batch = self.journal.pending(self.identity.id, self.batch_size)
        if batch:
            self._upload(batch)
        return len(batch)

    def _upload(self, batch: list[JournalEntry]) -> None:
        try:
            self.client.upload([entry.to_upload() for entry in batch])
        except ServiceError as exc:
            # Only the service's own refusal marks events refused: a garbled 413 or 422 (a proxy,
            # a portal) must not cost the journal its events.
            if exc.status not in (413, 422) or isinstance(exc, BadResponse):
                raise
            if len(batch) == 1:
                # The service will never take this event: keep it, marked, and go on.
                log.error("the service refused event %s: %s", batch[0].event_id, exc)
                self.journal.mark_refused(batch)
                return
            # Find the refused event(s) by halves; the others go through.
            half = len(batch) // 2
            self._upload(batch[:half])
            self._upload(batch[half:])
            return
        self.journal.mark_uploaded(batch)

    # -- loops ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sync and upload threads (after one sync if no trust is held yet)."""
        if self.decider is None and self.network.is_set():
            self._attempt("sync", self.sync_once)
        loops = [("sync", self._sync_loop), ("upload", self._upload_loop)]
        if self.metrics_textfile is not None:
            loops.append(("metrics", self._metrics_loop))
        for name, loop in loops:
            thread = threading.Thread(target=loop, name=f"idcode-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.interrupt()
        for thread in self._threads:
            thread.join(timeout=15)
        if self.metrics_textfile is not None:
            self._attempt("metrics", self.write_metrics)  # the last word: the final backlog
        self.journal.close()

    def drain(self, timeout: float) -> bool:
        """Upload until nothing is pending or ``timeout`` seconds passed; True when done.

        It gives up at once when the service cannot be reached or refuses the terminal: the
        events stay journaled for the next run, and an offline terminal stops promptly. After
        a passing failure it waits with backoff, which ``interrupt`` ends."""
        deadline = time.monotonic() + timeout
        failures = 0
        while self.journal.pending_count(self.identity.id):
            if time.monotonic() >= deadline or not self.network.is_set() or self._stop.is_set():
                return False
            try:
                self.upload_once()
                self.reachability.answered()
                failures = 0
            except Exception as exc:  # the drain's boundary, as in _attempt
                _log_failure("upload", exc, self.reachability)
                if not _worth_retrying(exc):
                    return False
                failures += 1
                pause = backoff(failures, cap=self.max_backoff)
                self._stop.wait(min(pause, max(0.0, deadline - time.monotonic())))
        return True

    def interrupt(self) -> None:
        """End the loops' and the drain's waits now (``stop`` then closes the journal)."""
        self._stop.set()
        self._upload_wanted.set()

    def _attempt(self, what: str, step: Callable[[], Any]) -> bool:
        """Run ``step``; False when it failed, whatever the failure: a loop must outlive any
        answer and any error, so that the next honest answer still reaches the terminal."""
        try:
            step()
        except Exception as exc:  # the loop's boundary: logged below, then retried
            _log_failure(what, exc, self.reachability)
            return False
        self.reachability.answered()
        return True

    def _sync_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self.network.is_set():
                self._stop.wait(1.0)
                continue
            if self._attempt("sync", self.sync_once):
                failures = 0
                delay = self.sync_interval
            else:
                failures += 1
                delay = min(self.sync_interval, backoff(failures, cap=self.max_backoff))
            self._stop.wait(delay)

    def _upload_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._upload_wanted.clear()
            try:
                more = self._upload_round()
            except Exception as exc:  # the loop's boundary, as in _attempt
                _log_failure("upload", exc, self.reachability)
                failures += 1
                self._stop.wait(backoff(failures, cap=self.max_backoff))
                continue
            failures = 0
            if not more:  # else more to send: no pause between batches
                self._upload_wanted.wait(self.upload_interval)

    def _upload_round(self) -> bool:
        """Send one batch if the network is there; True when more events wait to be sent."""
        if not self.network.is_set() or not self.journal.pending_count(self.identity.id):
            return False
        self.upload_once()
        self.reachability.answered()
        if self.journal.pending_count(self.identity.id):
            return True
        self._prune()
        return False

    def _prune(self) -> None:
        self.journal.prune(int(self.clock()) - RETENTION_DAYS * 86_400)

    # -- metrics ------------------------------------------------------------------------------

    def metrics(self) -> RuntimeSnapshot:
        """What the metrics file says now (idcode.terminal.metrics)."""
        with self._decide_lock:
            decisions = dict(self.decisions)
            bundle = self.bundle
        return RuntimeSnapshot(
            terminal=self.identity.id,
            scene=self.identity.scene,
            site=self.identity.site,
            now=self.clock(),
            online=self.network.is_set(),
            decisions=decisions,
            journal_backlog=self.journal.pending_count(self.identity.id),
            last_sync=self.last_sync,
            trust_version=bundle.version if bundle else None,
            trust_signed_at=bundle.issued_at if bundle else None,
            trust_fresh_until=bundle.fresh_until if bundle else None,
            clock_drift=self.clock_drift,
        )

    def write_metrics(self) -> None:
        """Write the metrics file (``metrics_textfile``) afresh."""
        if self.metrics_textfile is not None:
            write_textfile(self.metrics_textfile, render(self.metrics()))

    def _metrics_loop(self) -> None:
        while not self._stop.is_set():
            self._attempt("metrics", self.write_metrics)
            self._stop.wait(self.metrics_interval)

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        bundle = self.bundle
        now = int(self.clock())
        return {
            "terminal": self.identity.id,
            "scene": self.identity.scene,
            "site": self.identity.site,
            "online": self.network.is_set(),
            "trust": describe(bundle) if bundle else None,
            "trust_fresh": bool(bundle and now < bundle.fresh_until),
            "clock_drift": self.clock_drift,
            "pending_uploads": self.journal.pending_count(self.identity.id),
        }
