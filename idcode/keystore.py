"""Key storage: issuer keys with overlapping signing periods and the city root key.

``KeyStore`` is the interface the rest of idcode uses, ``ManagedKeyStore`` adds what the
``idcode keys`` commands need. Two backends implement both: ``FileKeyStore`` keeps PEM files
in a directory (default ``keys/``), created on first use with 0700/0600 permissions, private
keys optionally encrypted with a passphrase; ``idcode.pkcs11store.TokenKeyStore`` keeps them
on a PKCS#11 token (an HSM; SoftHSM2 in the tests), where they are generated and never leave
it, and hands out ``Signer`` objects that sign there. ``configured_key_store`` opens the one
the settings name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode.config import CoreSettings
from idcode.cose import Algorithm
from idcode.errors import KeyMaterialError, KeyStoreError
from idcode.gm import SM2PrivateKey, SM2PublicKey
from idcode.issuer import MAX_TTL
from idcode.jws import RootJWT, root_algorithm_of
from idcode.keyfile import MAX_FILE_BYTES as MAX_KEY_FILE_BYTES
from idcode.keyfile import KeyFileCipher, is_sealed
from idcode.keys import (
    KID_ALPHABET,
    IssuerKey,
    PrivateKey,
    PublicKey,
    Signer,
    VerificationKey,
    check_kid,
    sm2_jwk,
)
from idcode.secretfiles import (
    check_private,
    check_trusted_directory,
    check_trusted_file,
    directory_lock,
    write_secret_file,
)

log = logging.getLogger("idcode.keys")

#: How long a key stays published after its signing period ends: the longest anything it
#: signed can be presented (a visitor pass: issued up to 30 days ahead for a window of up
#: to 7 days; a code lives at most MAX_TTL), plus the largest clock-skew allowance a
#: verifier may use. A leaked retired key is removed at once with remove_issuer_key.
RETAIN_AFTER_SIGNING = max(MAX_TTL, 37 * 86_400) + 300


@dataclass(frozen=True, slots=True)
class RootKey:
    """The city root key, which signs trust bundles (a JWS) for terminals: Ed25519, or SM2
    in a store made under the GM profile (its JWS ``alg`` is then ``SM2``, idcode.jws)."""

    kid: str
    private_key: Ed25519PrivateKey | SM2PrivateKey

    @property
    def alg(self) -> Algorithm:
        return Algorithm.SM2 if isinstance(self.private_key, SM2PrivateKey) else Algorithm.EDDSA

    @property
    def public_jwk(self) -> dict[str, Any]:
        return _root_public_jwk(self.kid, self.private_key)

    def sign_jws(self, claims: dict[str, Any], typ: str) -> str:
        """A compact JWS of ``claims``, typ ``typ``, signed with this key's algorithm."""
        return _ROOT_JWT[self.alg].sign(claims, self.private_key, self.kid, typ)


#: One pyjwt instance per root algorithm; only the SM2 one knows alg ``SM2``.
_ROOT_JWT = {alg: RootJWT(alg) for alg in (Algorithm.EDDSA, Algorithm.SM2)}


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


class ManagedKeyStore(KeyStore, Protocol):
    """A key store the ``idcode keys`` commands can manage: create, list, remove."""

    @property
    def location(self) -> str:
        """Where the keys are, for messages: a directory, or a token and its module."""
        ...

    def locked(self) -> AbstractContextManager[None]:
        """Hold the store's lock while keys are created or the manifest rewritten."""
        ...

    def has_root_key(self) -> bool: ...

    def create_root_key(self, alg: Algorithm = Algorithm.EDDSA) -> RootKey:
        """A new root key of ``alg`` (EdDSA, or SM2 under the GM profile)."""
        ...

    def root_kid(self) -> str | None:
        """The root key's kid, or None when the store has no root key yet."""
        ...

    def root_public_jwk(self) -> dict[str, Any]: ...

    def remove_issuer_key(self, kid: str, at: int) -> None:
        """Emergency removal: unpublished at once, its kid never given again."""
        ...


def _root_public_jwk(kid: str, private_key: Ed25519PrivateKey | SM2PrivateKey) -> dict[str, Any]:
    if isinstance(private_key, SM2PrivateKey):
        public = sm2_jwk(private_key.public_key())
        return {**public, "kid": kid, "alg": Algorithm.SM2.jose_name, "use": "sig"}
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}


_ISSUER_FILE = re.compile(r"issuer-([0-9a-f]{2})\.(?:json|pem)")
_REMOVED_FILE = re.compile(r"removed-(\d+)-issuer-([0-9a-f]{2})\.(?:json|pem)")


def _kid_of_hex(text: str) -> str | None:
    kid = chr(int(text, 16))
    return kid if kid in KID_ALPHABET else None


def _issuer_file_kid(name: str) -> str | None:
    """The kid an ``issuer-<hex>.json``/``.pem`` file name stands for, else None."""
    match = _ISSUER_FILE.fullmatch(name)
    return _kid_of_hex(match[1]) if match else None


def _removed_file(name: str) -> tuple[str, int] | None:
    """(kid, when) of a ``removed-<time>-issuer-<hex>`` file name, else None."""
    match = _REMOVED_FILE.fullmatch(name)
    if not match:
        return None
    kid = _kid_of_hex(match[2])
    return None if kid is None else (kid, int(match[1]))


def _same_public_key(private_key: PrivateKey, public_key: VerificationKey) -> bool:
    def spki(key: VerificationKey) -> bytes:
        if isinstance(key, SM2PublicKey):
            return key.to_pem()
        return key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    return spki(private_key.public_key()) == spki(public_key)


def _thumbprint(private_key: Ed25519PrivateKey | SM2PrivateKey) -> str:
    """RFC 7638 JWK thumbprint of the public key, base64url (an SM2 key's with y, as EC)."""
    jwk = _root_public_jwk("", private_key)
    members = ("crv", "kty", "x", "y") if "y" in jwk else ("crv", "kty", "x")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _key_file_label(path: Path) -> str:
    """The key an encrypted key file is bound to: ``root``, ``issuer:<kid>``, else its name."""
    if path.name == ROOT_PEM_FILE:
        return "root"
    kid = _issuer_file_kid(path.name)
    return f"issuer:{kid}" if kid is not None else path.name


def _is_pbkdf2_key_file(path: Path) -> bool:
    """Whether ``path`` is an encrypted PKCS#8 PEM file of an earlier release (PBES2)."""
    try:
        with path.open("rb") as handle:
            start = handle.read(64).lstrip()
    except OSError:
        return False
    return start.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


MANIFEST_FILE = "manifest.jwt"
MANIFEST_TYPE = "idcode-key-manifest+jwt"
ROOT_META_FILE = "root.json"
ROOT_PEM_FILE = "root.pem"


@dataclass
class KeyManifest:
    """What the store itself wrote, signed by the root key: the issuer keys (public JWKs with
    their signing periods) and the kids removed for good. Loading publishes exactly these
    keys, so a file dropped into the directory by anyone else is never trusted."""

    seq: int = 0
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)  # kid -> when it was removed

    def end_period(self, kid: str, at: int, where: str) -> dict[str, Any] | None:
        """End ``kid``'s signing period at ``at`` (never before it starts): its JWK, changed,
        or None when the period already ends by then. KeyStoreError for a kid not listed."""
        jwk = self.keys.get(kid)
        if jwk is None:
            raise KeyStoreError(f"no issuer key {kid!r} {where}")
        if "exp" in jwk and jwk["exp"] <= at:
            return None
        jwk["exp"] = max(at, jwk.get("nbf", at))
        return jwk

    def remove(self, kid: str, at: int, where: str) -> None:
        """Unlist ``kid`` and record it as removed at ``at``, never to be given again."""
        if kid not in self.keys:
            raise KeyStoreError(f"no issuer key {kid!r} {where}")
        del self.keys[kid]
        self.removed[kid] = at

    def claims(self, root_kid: str, at: int) -> dict[str, Any]:
        return {
            "iss": "idcode",
            "iat": at,
            "root": root_kid,
            "seq": self.seq,
            "keys": [self.keys[kid] for kid in sorted(self.keys)],
            "removed": [{"kid": kid, "at": self.removed[kid]} for kid in sorted(self.removed)],
        }


def encode_manifest(manifest: KeyManifest, root: RootKey, at: int) -> str:
    """The manifest as a JWS signed by the root key (``typ: idcode-key-manifest+jwt``)."""
    return root.sign_jws(manifest.claims(root.kid, at), MANIFEST_TYPE)


def decode_manifest(token: str, root_jwk: dict[str, Any], where: str) -> KeyManifest:
    """The manifest ``token`` holds, verified with the root public key; ``where`` names it
    in the KeyStoreError that says what is wrong."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != MANIFEST_TYPE or header.get("kid") != root_jwk.get("kid"):
            raise ValueError("not a key manifest signed by this store's root key")
        claims = _ROOT_JWT[root_algorithm_of(root_jwk)].verify(token, root_jwk)
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise KeyStoreError(
            f"{where} does not verify with the root key {root_jwk.get('kid')}: {exc}; "
            "it was changed by something other than idcode: restore it from the backup"
        ) from None
    try:
        seq, keys, removed = claims["seq"], claims["keys"], claims["removed"]
        if type(seq) is not int or not isinstance(keys, list) or not isinstance(removed, list):
            raise ValueError("seq, keys or removed has the wrong type")
        manifest = KeyManifest(seq=seq)
        for jwk in keys:
            public = PublicKey.from_jwk(jwk)
            if public.kid in manifest.keys:
                raise ValueError(f"it lists kid {public.kid!r} twice")
            manifest.keys[public.kid] = dict(jwk)
        for entry in removed:
            manifest.removed[check_kid(entry["kid"])] = int(entry["at"])
        if set(manifest.keys) & set(manifest.removed):
            raise ValueError("it lists a removed kid as a key")
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyStoreError(f"{where} is not a valid key manifest: {exc}") from None
    return manifest


class FileKeyStore:
    """Keys as files: ``root.pem``/``root.json``, ``issuer-<hex kid>.pem``/``.json`` and
    ``manifest.jwt``, the list of issuer keys the store wrote, signed by the root key.

    The kid is hex-encoded in file names because case-insensitive file systems would
    otherwise confuse kid ``a`` with kid ``A``. Every read checks the directory and the files
    it uses (owner, mode, no symbolic link; see secretfiles), and publishes only the keys the
    manifest lists; ``issuer-*.json`` files are a readable copy, never trusted on their own.
    """

    def __init__(self, directory: Path, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase
        self._key_files = KeyFileCipher(passphrase) if passphrase else None
        # The root public key, read once per store object and then held: a root.json swapped
        # while the service runs cannot vouch for a manifest signed by another key.
        self._root_jwk: dict[str, Any] | None = None
        # The highest manifest sequence number seen: an older (replayed) manifest, which might
        # list a key removed since, is refused.
        self._manifest_seq = -1
        self._lock_held = threading.local()  # re-entrant per thread, see locked()
        self._reported: set[Path] = set()

    # -- reading -----------------------------------------------------------------------

    def issuer_keys(self) -> list[PublicKey]:
        manifest = self.manifest()
        try:
            keys = [PublicKey.from_jwk(jwk) for jwk in manifest.keys.values()]
        except KeyMaterialError as exc:
            path = self.directory / MANIFEST_FILE
            raise KeyStoreError(f"{path} lists an unusable key: {exc}") from None
        return sorted(keys, key=lambda k: k.not_before or 0, reverse=True)

    def published_keys(self, now: int) -> list[PublicKey]:
        return [key for key in self.issuer_keys() if _published_at(key, now)]

    def revision(self) -> object:
        """Changes whenever a file is added, replaced or removed (the directory's mtime), the
        manifest is rewritten, or the directory's owner or mode changes."""
        try:
            directory = self.directory.stat()
        except OSError:
            return None
        try:
            manifest = (self.directory / MANIFEST_FILE).lstat()
            written: tuple[int, ...] | None = (
                manifest.st_ino,
                manifest.st_mtime_ns,
                manifest.st_size,
                manifest.st_mode,
                manifest.st_uid,
            )
        except OSError:
            written = None
        return (directory.st_mtime_ns, directory.st_mode, directory.st_uid, written)

    def signing_key(self, now: int) -> IssuerKey:
        missing = []
        for key in self.issuer_keys():  # newest first
            if not key.signs_at(now):
                continue
            path = self._issuer_path(key.kid, ".pem")
            if not os.path.lexists(path):
                # A public key without its private half never signs: it may be a planted or
                # half-written key, and signing would fail anyway.
                missing.append(path)
                continue
            private_key = self._read_private_key(path)
            if not _same_public_key(private_key, key.key):
                raise KeyStoreError(
                    f"{path} does not hold the private half of issuer key {key.kid!r} that "
                    f"{self.directory / MANIFEST_FILE} lists; it was replaced: restore it"
                )
            return IssuerKey(key.kid, key.alg, private_key, key.not_before, key.not_after)
        because = (
            f" ({', '.join(map(str, missing))} missing: a key whose private half is missing "
            "never signs)"
            if missing
            else ""
        )
        raise KeyStoreError(
            f"no issuer key in {self.directory} may sign now{because}; run 'idcode keys init' "
            "or 'idcode keys rotate --starts-in 0'"
        )

    def root_key(self) -> RootKey:
        meta = self._root_meta()
        if meta is None:
            raise KeyStoreError(f"no root key in {self.directory}; run 'idcode keys init'")
        private_key = self._read_private_key(self.directory / ROOT_PEM_FILE)
        if not isinstance(private_key, Ed25519PrivateKey | SM2PrivateKey):
            raise KeyStoreError("the root key must be an Ed25519 or SM2 key")
        root = RootKey(str(meta["kid"]), private_key)
        pinned = self._pinned_root_jwk(meta, private_key)
        if root.public_jwk != pinned:
            raise KeyStoreError(
                f"{self.directory / ROOT_PEM_FILE} does not match the root public key in "
                f"{self.directory / ROOT_META_FILE} (kid {pinned.get('kid')!r}); one of them "
                "was replaced: restore both from the backup"
            )
        return root

    def has_root_key(self) -> bool:
        return os.path.lexists(self.directory / ROOT_META_FILE)

    @property
    def location(self) -> str:
        return str(self.directory.absolute())

    def root_public_jwk(self) -> dict[str, Any]:
        """The root public key as a JWK, read without the passphrase."""
        meta = self._root_meta()
        if meta is None:
            raise KeyStoreError(f"no root key in {self.directory}; run 'idcode keys init'")
        return dict(self._pinned_root_jwk(meta))

    def root_kid(self) -> str | None:
        """The root key's kid, read without touching (or decrypting) the private key."""
        meta = self._root_meta()
        return None if meta is None else str(meta["kid"])

    def manifest(self) -> KeyManifest:
        """The issuer keys this store wrote, checked against the root key.

        A store made before manifests existed gets one on its first load (``_adopt``)."""
        if not self.directory.exists():
            return KeyManifest()
        check_trusted_directory(self.directory)
        path = self.directory / MANIFEST_FILE
        try:
            check_trusted_file(path)
        except FileNotFoundError:
            return self._adopt()
        try:
            token = path.read_text(encoding="ascii").strip()
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"cannot read {path}: {exc}") from None
        manifest = self._verify_manifest(path, token)
        self._report_strays(manifest)
        return manifest

    # -- writing -----------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory lock (re-entrant within a thread), so that processes creating
        keys or rewriting the manifest at once do not lose each other's change."""
        if getattr(self._lock_held, "depth", 0):
            self._lock_held.depth += 1
            try:
                yield
            finally:
                self._lock_held.depth -= 1
            return
        with directory_lock(self.directory):
            self._lock_held.depth = 1
            try:
                yield
            finally:
                self._lock_held.depth = 0

    def create_root_key(self, alg: Algorithm = Algorithm.EDDSA) -> RootKey:
        if alg not in (Algorithm.EDDSA, Algorithm.SM2):
            raise KeyStoreError(f"a root key is EdDSA or SM2, not {alg.jose_name}")
        with self.locked():
            if self.has_root_key():
                raise KeyStoreError(f"{self.directory} already holds a root key")
            private_key: Ed25519PrivateKey | SM2PrivateKey = (
                SM2PrivateKey.generate() if alg is Algorithm.SM2 else Ed25519PrivateKey.generate()
            )
            kid = "root-" + _thumbprint(private_key)[:12]
            self._write_private_key(self.directory / ROOT_PEM_FILE, private_key)
            public_jwk = _root_public_jwk(kid, private_key)
            self._write_json(
                self.directory / ROOT_META_FILE,
                {"kid": kid, "alg": alg.jose_name, "public_jwk": public_jwk},
            )
            self._root_jwk = public_jwk
            return RootKey(kid, private_key)

    def create_issuer_key(self, alg: Algorithm, not_before: int, not_after: int) -> PublicKey:
        if not_after <= not_before:
            raise KeyStoreError("a key's signing period must end after it starts")
        with self.locked():
            root = self.root_key()  # the manifest needs it: check before writing anything
            # A rotation also moves the store's older key files to Argon2id (docs/keys.md);
            # before the new key is made, so that a file it cannot read stops the rotation first.
            self.upgrade_key_files()
            manifest = self.manifest()
            kid = self._free_kid(manifest)
            issuer_key = IssuerKey.generate(kid, alg, not_before, not_after)
            jwk = issuer_key.public.to_jwk()
            self._write_private_key(self._issuer_path(kid, ".pem"), issuer_key.private_key)
            self._write_json(self._issuer_path(kid, ".json"), {"public_jwk": jwk})
            manifest.keys[kid] = jwk  # published from here on
            self._write_manifest(manifest, root)
            return issuer_key.public

    def remove_issuer_key(self, kid: str, at: int) -> None:
        """Emergency removal: the key leaves the manifest, hence the published set and the
        next trust bundle, at once; its kid is recorded there as never to be given again.
        Its files are kept, renamed ``removed-…``, for the record."""
        check_kid(kid)
        with self.locked():
            root = self.root_key()
            manifest = self.manifest()
            manifest.remove(kid, at, f"in {self.directory}")
            self._write_manifest(manifest, root)
            for suffix in (".json", ".pem"):
                path = self._issuer_path(kid, suffix)
                if os.path.lexists(path):
                    path.rename(path.with_name(f"removed-{at}-{path.name}"))

    def end_signing_period(self, kid: str, at: int) -> None:
        check_kid(kid)
        with self.locked():
            root = self.root_key()
            manifest = self.manifest()
            jwk = manifest.end_period(kid, at, f"in {self.directory}")
            if jwk is None:
                return
            self._write_manifest(manifest, root)
            self._write_json(self._issuer_path(kid, ".json"), {"public_jwk": jwk}, replace=True)

    # -- the manifest --------------------------------------------------------------------

    def _verify_manifest(self, path: Path, token: str) -> KeyManifest:
        meta = self._root_meta()
        if meta is None:
            raise KeyStoreError(f"{path} is there but the root key that signs it is not")
        manifest = decode_manifest(token, self._pinned_root_jwk(meta), str(path))
        seq = manifest.seq
        if seq < self._manifest_seq:
            raise KeyStoreError(
                f"{path} is older (sequence {seq}) than the one read before "
                f"({self._manifest_seq}): an earlier manifest was put back; restore the newest"
            )
        self._manifest_seq = seq
        return manifest

    def _write_manifest(self, manifest: KeyManifest, root: RootKey) -> None:
        manifest.seq = max(manifest.seq, self._manifest_seq) + 1
        token = encode_manifest(manifest, root, int(time.time()))
        self._write_file(self.directory / MANIFEST_FILE, (token + "\n").encode("ascii"), True)
        self._manifest_seq = manifest.seq

    def _adopt(self) -> KeyManifest:
        """Write the manifest of a store made before manifests existed (idcode keys init
        before this release): its issuer keys that have their private half, under the lock,
        signed with the root key. Keys without a matching private key are left out."""
        if not any(self.directory.glob("issuer-*.json")):
            return KeyManifest()  # nothing to list yet; the first new key writes it
        with self.locked():
            if os.path.lexists(self.directory / MANIFEST_FILE):
                return self.manifest()  # another process adopted the keys meanwhile
            try:
                root = self.root_key()
            except KeyStoreError as exc:
                raise KeyStoreError(
                    f"{self.directory} has no key manifest yet (it was made by an earlier "
                    "idcode) and writing one needs the root key: run 'idcode keys list' as the "
                    f"store's owner with IDCODE_KEY_PASSPHRASE if the keys are encrypted ({exc})"
                ) from None
            manifest = KeyManifest()
            for meta_path in sorted(self.directory.glob("issuer-*.json")):
                public = self._adoptable(meta_path)
                if public is not None:
                    manifest.keys[public.kid] = public.to_jwk()
            for removed_path in self.directory.glob("removed-*-issuer-*.json"):
                removed = _removed_file(removed_path.name)
                if removed is not None and removed[0] not in manifest.keys:
                    manifest.removed[removed[0]] = removed[1]
            self._write_manifest(manifest, root)
            log.warning(
                "wrote %s for a key store made before key manifests: issuer keys %s",
                self.directory / MANIFEST_FILE,
                ", ".join(sorted(manifest.keys)) or "(none)",
            )
            return manifest

    def _adoptable(self, meta_path: Path) -> PublicKey | None:
        """The key ``meta_path`` describes, if its private half is there and matches."""
        kid = _issuer_file_kid(meta_path.name)
        pem_path = meta_path.with_suffix(".pem")
        if kid is None:
            log.warning("not adopting %s: not an issuer key file name", meta_path)
            return None
        check_trusted_file(meta_path)
        jwk = self._read_json(meta_path).get("public_jwk")
        try:
            public = PublicKey.from_jwk(jwk)  # type: ignore[arg-type]
        except KeyMaterialError as exc:
            log.warning("not adopting %s: %s", meta_path, exc)
            return None
        if public.kid != kid:
            log.warning("not adopting %s: it names kid %r", meta_path, public.kid)
            return None
        if not os.path.lexists(pem_path):
            log.warning("not adopting %s: no private key %s", meta_path, pem_path)
            return None
        if not _same_public_key(self._read_private_key(pem_path), public.key):
            log.warning("not adopting %s: %s holds another key", meta_path, pem_path)
            return None
        return public

    def _report_strays(self, manifest: KeyManifest) -> None:
        for meta_path in sorted(self.directory.glob("issuer-*.json")):
            if _issuer_file_kid(meta_path.name) in manifest.keys:
                continue
            if meta_path not in self._reported:  # once per file and store object, not per read
                self._reported.add(meta_path)
                log.warning(
                    "ignoring %s: the key manifest does not list it (idcode did not write it, "
                    "or its creation was cut short); it is not published",
                    meta_path,
                )

    # -- files -------------------------------------------------------------------------

    def _root_meta(self) -> dict[str, Any] | None:
        """root.json, checked (owner, mode, no link), or None when the store has no root."""
        path = self.directory / ROOT_META_FILE
        if not self.directory.exists():
            return None
        check_trusted_directory(self.directory)
        try:
            check_trusted_file(path)
        except FileNotFoundError:
            return None
        meta = self._read_json(path)
        if not isinstance(meta.get("kid"), str):
            raise KeyStoreError(f"{path} has no kid")
        return meta

    def _pinned_root_jwk(
        self, meta: dict[str, Any], private_key: Ed25519PrivateKey | SM2PrivateKey | None = None
    ) -> dict[str, Any]:
        """The root public JWK, read once per store object and held from then on."""
        if self._root_jwk is None:
            jwk = meta.get("public_jwk")
            if not isinstance(jwk, dict):
                # root.json of the earliest stores holds only the kid: derive the public key.
                if private_key is None:
                    private_key = self.root_key().private_key
                jwk = _root_public_jwk(str(meta["kid"]), private_key)
            try:
                root_algorithm_of(jwk)
            except KeyMaterialError:
                usable = False
            else:
                usable = jwk.get("kid") == meta["kid"] and "d" not in jwk
            if not usable:
                raise KeyStoreError(
                    f"{self.directory / ROOT_META_FILE} does not hold a public Ed25519 or SM2 "
                    "key with its kid"
                )
            self._root_jwk = jwk
        return self._root_jwk

    def _free_kid(self, manifest: KeyManifest) -> str:
        # A listed key whose files the operator deleted (docs/keys.md: when all kids are used,
        # delete the files of retired keys) gives its kid back; the manifest is rewritten next.
        for kid in list(manifest.keys):
            if not any(os.path.lexists(self._issuer_path(kid, s)) for s in (".json", ".pem")):
                del manifest.keys[kid]
        used = set(manifest.keys) | set(manifest.removed)
        # Never hand a removed (perhaps compromised) key's kid to a new key: terminals that
        # have not synced yet would check the new key's codes against the old key. Nor the kid
        # of a file the manifest does not list: its file name is taken.
        for path in self.directory.glob("*issuer-*"):
            removed = _removed_file(path.name)
            taken = removed[0] if removed is not None else _issuer_file_kid(path.name)
            if taken is not None:
                used.add(taken)
        free = [kid for kid in KID_ALPHABET if kid not in used]
        if not free:
            raise KeyStoreError(
                f"all {len(KID_ALPHABET)} key ids are in use; delete retired issuer keys first"
            )
        return secrets.choice(free)

    def _issuer_path(self, kid: str, suffix: str) -> Path:
        return self.directory / f"issuer-{ord(kid):02x}{suffix}"

    def _write_private_key(
        self, path: Path, private_key: PrivateKey, replace: bool = False
    ) -> None:
        """PKCS#8 PEM without a passphrase; with one, an Argon2id key file (idcode.keyfile).
        SM2 keys (GM profile) are written by libcrypto, in the same two forms."""
        if self._key_files is None:
            content = _pkcs8_pem(private_key)
        else:
            content = self._key_files.seal(_pkcs8_der(private_key), _key_file_label(path))
        self._write_file(path, content, replace)

    def _read_private_key(self, path: Path) -> PrivateKey:
        try:
            check_private(path)
            with path.open("rb") as handle:
                content = handle.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from None
        if len(content) > MAX_KEY_FILE_BYTES:
            raise KeyStoreError(f"{path} is larger than any key file idcode writes")
        private_key: object
        if is_sealed(content):
            if self._key_files is None:
                raise KeyStoreError(f"{path} is encrypted; set IDCODE_KEY_PASSPHRASE")
            der = self._key_files.unseal(content, _key_file_label(path), path)
            try:
                private_key = serialization.load_der_private_key(der, None)
            except UnsupportedAlgorithm:
                # cryptography has no SM2 curve: an SM2 issuer key (GM profile), by libcrypto.
                private_key = _read_sm2_private_key(path, _der_to_pem(der), None)
            except (ValueError, TypeError):
                raise KeyStoreError(f"{path} decrypts but holds no usable private key") from None
        else:
            # PKCS#8 PEM as earlier releases wrote it: in the clear, or encrypted with PBES2
            # (PBKDF2, 2,048 iterations). Read as before; rewritten as Argon2id key files when
            # the store creates a key or by 'idcode keys init' (upgrade_key_files).
            try:
                private_key = serialization.load_pem_private_key(content, self._passphrase)
            except UnsupportedAlgorithm:
                # cryptography has no SM2 curve: an SM2 issuer key (GM profile), by libcrypto.
                private_key = _read_sm2_private_key(path, content, self._passphrase)
            except TypeError:
                raise KeyStoreError(
                    f"{path} is encrypted; set IDCODE_KEY_PASSPHRASE"
                    if b"ENCRYPTED" in content
                    else f"{path} is not encrypted but a passphrase was given"
                ) from None
            except ValueError:
                raise KeyStoreError(f"cannot load {path}: wrong passphrase or not a key") from None
        if not isinstance(
            private_key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey | SM2PrivateKey
        ):
            raise KeyStoreError(f"{path} holds a {type(private_key).__name__}, not an idcode key")
        return private_key

    def upgrade_key_files(self) -> list[Path]:
        """Rewrite the private keys still in the PBKDF2 PKCS#8 format of earlier releases as
        Argon2id key files; the paths rewritten (none without a passphrase).

        Each file is replaced atomically with the same key, under the directory lock. Only
        the root key and the issuer keys the manifest lists are rewritten, and only when the
        file holds the key the store publishes; others are left alone, with a warning.
        """
        if self._key_files is None or not self.directory.exists():
            return []
        rewritten = []
        with self.locked():
            if not self.has_root_key():
                return []
            root = self.root_key()
            candidates: list[tuple[Path, VerificationKey]] = [
                (self.directory / ROOT_PEM_FILE, root.private_key.public_key())
            ]
            for public in self.issuer_keys():
                candidates.append((self._issuer_path(public.kid, ".pem"), public.key))
            for path, public_key in candidates:
                if not _is_pbkdf2_key_file(path):
                    continue
                private_key = self._read_private_key(path)
                if not _same_public_key(private_key, public_key):
                    log.warning("not re-encrypting %s: it holds another key than listed", path)
                    continue
                self._write_private_key(path, private_key, replace=True)
                rewritten.append(path)
        if rewritten:
            log.info(
                "re-encrypted %s with Argon2id (they were PBKDF2 PKCS#8)",
                ", ".join(str(path) for path in rewritten),
            )
        return rewritten

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


_PKCS8_PEM_LABEL = "PRIVATE KEY"


def _pkcs8_pem(private_key: PrivateKey) -> bytes:
    if isinstance(private_key, SM2PrivateKey):
        return private_key.to_pem()
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pkcs8_der(private_key: PrivateKey) -> bytes:
    if isinstance(private_key, SM2PrivateKey):  # libcrypto writes PEM: its body is the DER
        body = b"".join(
            line for line in private_key.to_pem().splitlines() if not line.startswith(b"-----")
        )
        return base64.b64decode(body, validate=True)
    return private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _der_to_pem(der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"").decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join(
        [f"-----BEGIN {_PKCS8_PEM_LABEL}-----", *lines, f"-----END {_PKCS8_PEM_LABEL}-----", ""]
    ).encode("ascii")


def _read_sm2_private_key(path: Path, pem: bytes, passphrase: bytes | None) -> SM2PrivateKey:
    try:
        return SM2PrivateKey.from_pem(pem, passphrase)
    except TypeError:
        raise KeyStoreError(
            f"{path} is encrypted; set IDCODE_KEY_PASSPHRASE"
            if b"ENCRYPTED" in pem
            else f"{path} is not encrypted but a passphrase was given"
        ) from None
    except (KeyMaterialError, UnsupportedAlgorithm) as exc:
        raise KeyStoreError(f"cannot load {path}: {exc}") from None


def open_key_store(directory: Path, passphrase: str | None = None) -> FileKeyStore:
    if passphrase == "":
        # An empty IDCODE_KEY_PASSPHRASE would silently write keys in the clear.
        raise KeyStoreError("IDCODE_KEY_PASSPHRASE is set but empty")
    return FileKeyStore(directory, passphrase.encode("utf-8") if passphrase is not None else None)


def configured_key_store(settings: CoreSettings, keys_dir: Path | None = None) -> ManagedKeyStore:
    """The key store the settings name: on the PKCS#11 token when ``IDCODE_PKCS11_MODULE`` is
    set, else the files in ``keys_dir`` (the CLI's ``--keys-dir``) or ``IDCODE_KEYS_DIR``."""
    token = settings.token
    if token is None:
        return open_key_store(keys_dir or settings.keys_dir, settings.passphrase)
    if keys_dir is not None:
        raise KeyStoreError(
            "--keys-dir names a key directory, but IDCODE_PKCS11_MODULE puts the keys on the "
            f"token {token.label!r}: drop one of them"
        )
    from idcode.pkcs11store import open_token_key_store  # python-pkcs11: the [pkcs11] extra

    return open_token_key_store(token)


def initialise(
    store: ManagedKeyStore,
    now: int,
    days: int,
    alg: Algorithm = Algorithm.EDDSA,
    root_alg: Algorithm = Algorithm.EDDSA,
) -> list[str]:
    """Create the root key (of ``root_alg``) and a first issuer key (of ``alg``) where
    missing; say what was created.

    Under a lock on the key directory, so that replicas starting together create one set."""
    created = []
    with store.locked():
        if not store.has_root_key():
            created.append(f"root key {store.create_root_key(root_alg).kid}")
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

    ``load`` reads the store at start-up and raises on a store it cannot trust. A re-read that
    fails later (a directory others can now write to, a manifest that no longer verifies) is
    logged once per change and the last good keys stay published: a file planted while the
    service runs never is. A signing key already loaded goes on signing; none is loaded from
    the untrusted store, so issuance fails closed (503) if it needs a new one.
    """

    def __init__(self, store: KeyStore, recheck_seconds: float = 1.0) -> None:
        self._store = store
        self._recheck_seconds = recheck_seconds
        self._checked_at: float | None = None
        self._revision: object = None
        self._failed_revision: object = None
        self._loaded = False
        self._keys: list[PublicKey] = []
        self._signers: dict[str, Signer] = {}
        self._root: RootKey | None = None

    def load(self, now: float) -> None:
        """Read the keys now; KeyStoreError when the store cannot be trusted."""
        self._checked_at = now
        revision = self._store.revision()
        self._keys = self._store.issuer_keys()
        self._signers.clear()
        self._revision = revision
        self._loaded = True

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
        if not self._loaded:
            self.load(now)
        elif self._checked_at is None or abs(now - self._checked_at) >= self._recheck_seconds:
            self._checked_at = now
            revision = self._store.revision()
            if revision != self._revision:
                try:
                    keys = self._store.issuer_keys()
                except KeyStoreError as exc:
                    if revision != self._failed_revision:
                        self._failed_revision = revision
                        log.error("keeping the issuer keys read before: %s", exc)
                    return self._keys
                self._keys = keys
                # A signer stays loaded while the store lists its key unchanged; one whose
                # period changed, or that left the store, is dropped.
                self._signers = {
                    kid: signer for kid, signer in self._signers.items() if signer.public in keys
                }
                self._revision = revision
        return self._keys


def _published_at(key: PublicKey, now: int) -> bool:
    return key.not_after is None or now < key.not_after + RETAIN_AFTER_SIGNING
