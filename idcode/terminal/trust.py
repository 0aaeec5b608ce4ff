"""The terminal's trust on disk: the last bundle the pinned root key signed and the status
deltas applied since, so a restarted terminal decides at once, with no network."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from idcode.bundle import TrustBundle, pinned_profile, verify_bundle, verify_delta
from idcode.errors import BundleError
from idcode.secretfiles import check_trusted_directory, check_trusted_file

log = logging.getLogger("idcode.terminal")

BUNDLE_FILE = "bundle.jwt"
DELTAS_FILE = "deltas.jsonl"
ETAG_FILE = "bundle.etag"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover (or a planted link) is never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
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
        if not self._trusted(path):
            return None
        return path.read_text(encoding="ascii").strip() or None

    def load(self) -> TrustBundle | None:
        """The held trust, or None before the first sync. A file that no longer verifies
        (tampered with, or another root) is an error, not silently ignored; so is one another
        user could have put back (an older bundle signed by the same root would revive a
        removed key or unrevoke a card), see _trusted."""
        path = self.directory / BUNDLE_FILE
        if not self._trusted(path):
            return None
        profile = pinned_profile(self.root_jwk)
        bundle = verify_bundle(path.read_text(encoding="ascii").strip(), self.root_jwk, profile)
        deltas = self.directory / DELTAS_FILE
        if not self._trusted(deltas):
            return bundle
        applied: list[str] = []
        for line in deltas.read_text(encoding="ascii", errors="replace").splitlines():
            try:
                bundle = bundle.apply_delta(*verify_delta(line.strip(), self.root_jwk, profile))
            except BundleError as exc:
                # Only the last line can be torn (each is synced before the next is written):
                # keep what was applied before it; the next sync catches up from there.
                log.warning("dropping a status delta that does not verify: %s", exc)
                _write_atomically(deltas, "".join(token + "\n" for token in applied))
                break
            applied.append(line.strip())
        return bundle

    def _trusted(self, path: Path) -> bool:
        """Whether ``path`` is there; UnsafeFileError when it, or the directory, could have
        been written by another user or is a symbolic link."""
        check_trusted_directory(self.directory)
        try:
            check_trusted_file(path)
        except FileNotFoundError:
            return False
        return True

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
