"""Key storage: issuer keys with overlapping signing periods and the city root key.

``KeyStore`` is the interface the rest of idcode uses; ``FileKeyStore`` keeps PEM files in a
directory (default ``keys/``), created on first use with 0700/0600 permissions, private keys
optionally encrypted with a passphrase. An HSM backend (PKCS#11) implements the same
interface and hands out ``Signer`` objects whose private keys never leave the device.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.cose import Algorithm
from idcode.errors import KeyStoreError
from idcode.issuer import MAX_TTL
from idcode.keys import KID_ALPHABET, IssuerKey, PrivateKey, PublicKey, Signer, check_kid
from idcode.secretfiles import check_private, directory_lock, write_secret_file

#: How long a key stays published after its signing period ends: the longest anything it
#: signed can be presented (a visitor pass: issued up to 30 days ahead for a window of up
#: to 7 days; a code lives at most MAX_TTL), plus the largest clock-skew allowance a
#: verifier may use. A leaked retired key is removed at once with remove_issuer_key.
RETAIN_AFTER_SIGNING = max(MAX_TTL, 37 * 86_400) + 300


@dataclass(frozen=True, slots=True)
class RootKey:
    """The city root key, which signs trust bundles (a JWS) for terminals."""

    kid: str
    private_key: Ed25519PrivateKey

    @property
    def public_jwk(self) -> dict[str, Any]:
        return _root_public_jwk(self.kid, self.private_key)


class KeyStore(Protocol):
    def issuer_keys(self) -> list[PublicKey]:
        """Every issuer key held, newest signing period first (public halves only)."""
        ...

    def published_keys(self, now: int) -> list[PublicKey]:
        """Issuer keys verifiers must trust at ``now``: not yet past their retention."""
        ...

    def signing_key(self, now: int) -> Signer:
        """The key that signs codes at ``now``: the newest whose signing period holds ``now``."""
        ...

    def revision(self) -> object:
        """A value that changes whenever the set of keys or their periods change."""
        ...

    def create_issuer_key(self, alg: Algorithm, not_before: int, not_after: int) -> PublicKey: ...

    def end_signing_period(self, kid: str, at: int) -> None:
        """Stop ``kid`` signing from ``at`` on (it stays published for its codes' lifetime)."""
        ...

    def root_key(self) -> RootKey: ...


def _root_public_jwk(kid: str, private_key: Ed25519PrivateKey) -> dict[str, Any]:
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


def _thumbprint(private_key: Ed25519PrivateKey) -> str:
    """RFC 7638 JWK thumbprint of the public key, base64url."""
    jwk = _root_public_jwk("", private_key)
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":")
    )
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class FileKeyStore:
    """Keys as files: ``root.pem``/``root.json`` and ``issuer-<hex kid>.pem``/``.json``.

    The kid is hex-encoded in file names because case-insensitive file systems would
    otherwise confuse kid ``a`` with kid ``A``.
    """

    def __init__(self, directory: Path, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase

    # -- reading -----------------------------------------------------------------------

    def issuer_keys(self) -> list[PublicKey]:
        keys = []
        if self.directory.is_dir():
            for meta_path in sorted(self.directory.glob("issuer-*.json")):
                jwk = self._read_json(meta_path).get("public_jwk")
                if not isinstance(jwk, dict):
                    raise KeyStoreError(f"{meta_path} has no public_jwk object")
                keys.append(PublicKey.from_jwk(jwk))
        return sorted(keys, key=lambda k: k.not_before or 0, reverse=True)

    def published_keys(self, now: int) -> list[PublicKey]:
        return [key for key in self.issuer_keys() if _published_at(key, now)]

    def revision(self) -> object:
        """Changes whenever a key file is added, replaced or removed (the directory's mtime)."""
        try:
            return self.directory.stat().st_mtime_ns
        except OSError:
            return None

    def signing_key(self, now: int) -> IssuerKey:
        for key in self.issuer_keys():  # newest first
            if key.signs_at(now):
                private_key = self._read_private_key(self._issuer_path(key.kid, ".pem"))
                return IssuerKey(key.kid, key.alg, private_key, key.not_before, key.not_after)
        raise KeyStoreError(
            f"no issuer key in {self.directory} may sign now; run 'idcode keys init' or "
            "'idcode keys rotate --starts-in 0'"
        )

    def root_key(self) -> RootKey:
        meta_path = self.directory / "root.json"
        if not meta_path.exists():
            raise KeyStoreError(f"no root key in {self.directory}; run 'idcode keys init'")
        private_key = self._read_private_key(self.directory / "root.pem")
        if not isinstance(private_key, Ed25519PrivateKey):
            raise KeyStoreError("the root key must be an Ed25519 key")
        return RootKey(self._read_json(meta_path)["kid"], private_key)

    def has_root_key(self) -> bool:
        return (self.directory / "root.json").exists()

    def root_public_jwk(self) -> dict[str, Any]:
        """The root public key as a JWK, read without the passphrase."""
        if not self.has_root_key():
            raise KeyStoreError(f"no root key in {self.directory}; run 'idcode keys init'")
        jwk = self._read_json(self.directory / "root.json").get("public_jwk")
        return jwk if isinstance(jwk, dict) else self.root_key().public_jwk

    def root_kid(self) -> str | None:
        """The root key's kid, read without touching (or decrypting) the private key."""
        if not self.has_root_key():
            return None
        return str(self._read_json(self.directory / "root.json")["kid"])

    # -- writing -----------------------------------------------------------------------

    def create_root_key(self) -> RootKey:
        if self.has_root_key():
            raise KeyStoreError(f"{self.directory} already holds a root key")
        private_key = Ed25519PrivateKey.generate()
        kid = "root-" + _thumbprint(private_key)[:12]
        self._write_private_key(self.directory / "root.pem", private_key)
        self._write_json(
            self.directory / "root.json",
            {"kid": kid, "alg": "EdDSA", "public_jwk": _root_public_jwk(kid, private_key)},
        )
        return RootKey(kid, private_key)

    def create_issuer_key(self, alg: Algorithm, not_before: int, not_after: int) -> PublicKey:
        if not_after <= not_before:
            raise KeyStoreError("a key's signing period must end after it starts")
        kid = self._free_kid()
        issuer_key = IssuerKey.generate(kid, alg, not_before, not_after)
        self._write_private_key(self._issuer_path(kid, ".pem"), issuer_key.private_key)
        self._write_json(
            self._issuer_path(kid, ".json"), {"public_jwk": issuer_key.public.to_jwk()}
        )
        return issuer_key.public

    def remove_issuer_key(self, kid: str, at: int) -> None:
        """Emergency removal: the key leaves the published set (and the next trust bundle)
        at once. Its files are kept, renamed ``removed-…``, for the record."""
        paths = [self._issuer_path(check_kid(kid), suffix) for suffix in (".json", ".pem")]
        if not all(path.exists() for path in paths):
            raise KeyStoreError(f"no issuer key {kid!r} in {self.directory}")
        for path in paths:
            path.rename(path.with_name(f"removed-{at}-{path.name}"))

    def end_signing_period(self, kid: str, at: int) -> None:
        meta_path = self._issuer_path(check_kid(kid), ".json")
        if not meta_path.exists():
            raise KeyStoreError(f"no issuer key {kid!r} in {self.directory}")
        meta = self._read_json(meta_path)
        jwk = meta["public_jwk"]
        if "exp" not in jwk or jwk["exp"] > at:
            jwk["exp"] = max(at, jwk.get("nbf", at))
            self._write_json(meta_path, meta, replace=True)

    # -- files -------------------------------------------------------------------------

    def _free_kid(self) -> str:
        used = {key.kid for key in self.issuer_keys()}
        # Never hand a removed (perhaps compromised) key's kid to a new key: terminals that
        # have not synced yet would check the new key's codes against the old key.
        for removed in self.directory.glob("removed-*-issuer-*.json"):
            used.add(chr(int(removed.stem.rsplit("-", 1)[-1], 16)))
        free = [kid for kid in KID_ALPHABET if kid not in used]
        if not free:
            raise KeyStoreError(
                f"all {len(KID_ALPHABET)} key ids are in use; delete retired issuer keys first"
            )
        return secrets.choice(free)

    def _issuer_path(self, kid: str, suffix: str) -> Path:
        return self.directory / f"issuer-{ord(kid):02x}{suffix}"

    def _write_private_key(self, path: Path, private_key: PrivateKey) -> None:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(self._passphrase)
            if self._passphrase
            else serialization.NoEncryption()
        )
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )
        self._write_file(path, pem)

    def _read_private_key(self, path: Path) -> PrivateKey:
        try:
            check_private(path)
            pem = path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from None
        try:
            private_key = serialization.load_pem_private_key(pem, self._passphrase)
        except TypeError:
            raise KeyStoreError(
                f"{path} is encrypted; set IDCODE_KEY_PASSPHRASE"
                if b"ENCRYPTED" in pem
                else f"{path} is not encrypted but a passphrase was given"
            ) from None
        except ValueError:
            raise KeyStoreError(f"cannot load {path}: wrong passphrase or not a key") from None
        return private_key  # type: ignore[return-value]

    def _write_json(self, path: Path, document: dict[str, Any], replace: bool = False) -> None:
        self._write_file(path, (json.dumps(document, indent=2) + "\n").encode(), replace)

    @staticmethod
    def _read_json(path: Path) -> dict[str, Any]:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"cannot read {path}: {exc}") from None
        if not isinstance(document, dict):
            raise KeyStoreError(f"{path} is not a JSON object")
        return document

    @staticmethod
    def _write_file(path: Path, content: bytes, replace: bool = False) -> None:
        write_secret_file(path, content, replace=replace)


def open_key_store(directory: Path, passphrase: str | None = None) -> FileKeyStore:
    if passphrase == "":
        # An empty IDCODE_KEY_PASSPHRASE would silently write keys in the clear.
        raise KeyStoreError("IDCODE_KEY_PASSPHRASE is set but empty")
    return FileKeyStore(directory, passphrase.encode("utf-8") if passphrase is not None else None)


def initialise(
    store: FileKeyStore, now: int, days: int, alg: Algorithm = Algorithm.EDDSA
) -> list[str]:
    """Create the root key and a first issuer key where missing; say what was created.

    Under a lock on the key directory, so that replicas starting together create one set."""
    created = []
    with directory_lock(store.directory):
        if not store.has_root_key():
            created.append(f"root key {store.create_root_key().kid}")
        if not any(key.signs_at(now) for key in store.issuer_keys()):
            key = store.create_issuer_key(alg, now, now + days * 86_400)
            created.append(f"issuer key {key.kid} ({alg.jose_name})")
    return created


def rotate(
    store: KeyStore, now: int, days: int, alg: Algorithm = Algorithm.EDDSA, starts_in: int = 0
) -> PublicKey:
    """Add the next issuer key, signing from ``now + starts_in``; older keys stop signing then.

    The older keys stay published until every code they signed has expired
    (``RETAIN_AFTER_SIGNING``), so codes minted before the switch keep verifying.
    """
    if starts_in < 0:
        raise KeyStoreError("a new key cannot start signing in the past")
    starts = now + starts_in
    new_key = store.create_issuer_key(alg, starts, starts + days * 86_400)
    for key in store.issuer_keys():
        if key.kid != new_key.kid and (key.not_after is None or key.not_after > starts):
            store.end_signing_period(key.kid, starts)
    return new_key


class SigningKeyCache:
    """The service's view of a key store: the signing key and the published keys.

    It asks the store for its revision at most once a second and re-reads the keys only when
    that changed, so a rotation done with ``idcode keys rotate`` takes effect within a second
    on every replica, and requests do not read key files. A private key is loaded once, when
    it first signs.
    """

    def __init__(self, store: KeyStore, recheck_seconds: float = 1.0) -> None:
        self._store = store
        self._recheck_seconds = recheck_seconds
        self._checked_at: float | None = None
        self._revision: object = None
        self._keys: list[PublicKey] = []
        self._signers: dict[str, Signer] = {}
        self._root: RootKey | None = None

    def signer(self, now: int) -> Signer:
        for public in self._view(now):  # newest first
            if public.signs_at(now):
                signer = self._signers.get(public.kid)
                if signer is None:
                    signer = self._store.signing_key(now)
                    self._signers[signer.kid] = signer
                return signer
        raise KeyStoreError("no issuer key may sign now; run 'idcode keys rotate --starts-in 0'")

    def published(self, now: int) -> list[PublicKey]:
        return [key for key in self._view(now) if _published_at(key, now)]

    def root(self) -> RootKey:
        """The city root key, loaded once (it signs trust bundles)."""
        if self._root is None:
            self._root = self._store.root_key()
        return self._root

    def _view(self, now: float) -> list[PublicKey]:
        if self._checked_at is None or abs(now - self._checked_at) >= self._recheck_seconds:
            self._checked_at = now
            revision = self._store.revision()
            if revision != self._revision:
                self._keys = self._store.issuer_keys()
                self._signers.clear()
                self._revision = revision
        return self._keys


def _published_at(key: PublicKey, now: int) -> bool:
    return key.not_after is None or now < key.not_after + RETAIN_AFTER_SIGNING
