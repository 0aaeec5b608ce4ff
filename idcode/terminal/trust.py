"""The terminal's trust on disk: the last bundle the pinned root key signed and the status
deltas applied since, so a restarted terminal decides at once, with no network."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from idcode.bundle import BundleError, TrustBundle, verify_bundle, verify_delta

log = logging.getLogger("idcode.terminal")

BUNDLE_FILE = "bundle.jwt"
DELTAS_FILE = "deltas.jsonl"
ETAG_FILE = "bundle.etag"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class TrustStore:
    """Bundle and deltas in the terminal's directory, re-verified whenever they are read."""

    def __init__(self, directory: Path, root_jwk: dict[str, Any]) -> None:
        self.directory = directory
        self.root_jwk = root_jwk

    @property
    def etag(self) -> str | None:
        path = self.directory / ETAG_FILE
        return path.read_text(encoding="ascii").strip() or None if path.exists() else None

    def load(self) -> TrustBundle | None:
        """The held trust, or None before the first sync. A file that no longer verifies
        (tampered with, or another root) is an error, not silently ignored."""
        path = self.directory / BUNDLE_FILE
        if not path.exists():
            return None
        bundle = verify_bundle(path.read_text(encoding="ascii").strip(), self.root_jwk)
        deltas = self.directory / DELTAS_FILE
        if not deltas.exists():
            return bundle
        applied: list[str] = []
        for line in deltas.read_text(encoding="ascii", errors="replace").splitlines():
            try:
                bundle = bundle.apply_delta(*verify_delta(line.strip(), self.root_jwk))
            except BundleError as exc:
                # Only the last line can be torn (each is synced before the next is written):
                # keep what was applied before it; the next sync catches up from there.
                log.warning("dropping a status delta that does not verify: %s", exc)
                _write_atomically(deltas, "".join(token + "\n" for token in applied))
                break
            applied.append(line.strip())
        return bundle

    def save_bundle(self, token: str, etag: str | None) -> None:
        _write_atomically(self.directory / BUNDLE_FILE, token)
        (self.directory / DELTAS_FILE).unlink(missing_ok=True)
        _write_atomically(self.directory / ETAG_FILE, etag or "")

    def save_delta(self, token: str) -> None:
        """Append a delta already applied in memory."""
        with open(self.directory / DELTAS_FILE, "a", encoding="ascii") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def describe(bundle: TrustBundle) -> dict[str, Any]:
    return {
        "version": bundle.version,
        "signed_at": bundle.issued_at,
        "fresh_until": bundle.fresh_until,
        "keys": [key.kid for key in bundle.keys],
        "scene_version": bundle.scene.get("version"),
    }
