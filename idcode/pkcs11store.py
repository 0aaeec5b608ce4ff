"""Issuer and root keys on a PKCS#11 token (an HSM; SoftHSM2 in the tests), through
python-pkcs11: ``TokenKeyStore`` implements the key store with key pairs generated on the
token, sensitive and never extractable, and hands out signers that sign there.

What lives on the token (docs/keys.md, "PKCS#11"): the root key pair, labelled
``idcode-root``; each issuer key pair, labelled ``idcode-issuer-<kid>``; and the key manifest,
a private data object labelled ``idcode-manifest`` that holds the same JWS as the file store's
``manifest.jwt`` (the issuer keys with their signing periods and the removed kids, signed by
the root key). So the token alone carries everything a restart, a replica or a restore needs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pkcs11.util.ec import encode_named_curve_parameters

from idcode import b64url
from idcode.config import ENV_PREFIX, TokenSettings
from idcode.cose import Algorithm
from idcode.errors import ConfigurationError, KeyMaterialError, KeyStoreError
from idcode.keys import KID_ALPHABET, PublicKey, VerificationKey, check_kid
from idcode.keystore import (
    KeyManifest,
    RootKey,
    _published_at,
    _root_public_jwk,
    _thumbprint,
    decode_manifest,
    encode_manifest,
)

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Library

log = logging.getLogger("idcode.keys")

ROOT_LABEL = "idcode-root"
MANIFEST_LABEL = "idcode-manifest"
APPLICATION = "idcode"
_ISSUER_LABEL = re.compile(r"idcode-issuer-([A-Za-z0-9])")
_REMOVED_LABEL = re.compile(r"idcode-removed-(\d+)-issuer-([A-Za-z0-9])")

_ED25519_OID = "1.3.101.112"
_P256_OID = "1.2.840.10045.3.1.7"


@dataclass(frozen=True)
class _Profile:
    """How one algorithm's keys are made and used on a token."""

    key_type: KeyType
    generate: Mechanism
    sign: Mechanism
    curve: str  # the OID in CKA_EC_PARAMS

    def public_key(self, ec_point: bytes) -> VerificationKey:
        """The public key a CKA_EC_POINT holds: DER OCTET STRING as PKCS#11 says, or the raw
        point as some tokens give it."""
        size = 32 if self.key_type == KeyType.EC_EDWARDS else 65
        point = ec_point
        if len(point) == size + 2 and point[0] == 0x04 and point[1] == size:
            point = point[2:]
        if len(point) != size:
            raise KeyMaterialError(f"CKA_EC_POINT of {len(ec_point)} bytes is not on the curve")
        if self.key_type == KeyType.EC_EDWARDS:
            return Ed25519PublicKey.from_public_bytes(point)
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)


_PROFILES = {
    Algorithm.EDDSA: _Profile(
        KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA, _ED25519_OID
    ),
    Algorithm.ES256: _Profile(KeyType.EC, Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA, _P256_OID),
}

#: Errors after which the session is gone (the token was removed or restarted, the module
#: reset): the connection opens a new one and tries once more.
_SESSION_LOST = (
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.UserNotLoggedIn,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
)

T = TypeVar("T")


def _mechanism_names(mechanisms: set[Mechanism]) -> str:
    return ", ".join(sorted(f"CKM_{m.name}" for m in mechanisms)) or "none"


def profile_for(alg: Algorithm) -> _Profile:
    """The PKCS#11 mechanisms of ``alg``; KeyStoreError for an algorithm a token cannot hold.

    SM2 is not among them: PKCS#11 (up to 3.1) defines no SM2 mechanism, tokens that sign
    SM2 number theirs as vendor-defined mechanisms, and SoftHSM2 (2.6) offers none."""
    profile = _PROFILES.get(alg)
    if profile is None:
        raise KeyStoreError(
            f"{alg.name} keys cannot live on a PKCS#11 token with idcode: PKCS#11 defines no "
            "mechanism for it (SM2 tokens use vendor-defined ones, which idcode does not "
            "speak); keep these keys in a key directory (unset IDCODE_PKCS11_MODULE)"
        )
    return profile


# -- the connection ------------------------------------------------------------------------

_libraries: dict[str, Library] = {}
_connections: dict[tuple[str, str], _Connection] = {}
_registry_lock = threading.Lock()


def _library(module: Path) -> Library:
    """The module, loaded (and C_Initialize'd) once per process."""
    name = str(module)
    library = _libraries.get(name)
    if library is None:
        if not module.is_file():
            raise ConfigurationError(
                f"{ENV_PREFIX}PKCS11_MODULE: {module} does not exist or is not a file "
                "(SoftHSM2 on Debian: /usr/lib/softhsm/libsofthsm2.so)"
            )
        try:
            library = pkcs11.lib(name)
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"{ENV_PREFIX}PKCS11_MODULE: cannot load {module} as a PKCS#11 module: "
                f"{exc or type(exc).__name__}"
            ) from None
        _libraries[name] = library
    return library


class _Connection:
    """One logged-in read/write session on a token, shared by every store object of this
    process that names the same module and token (a token has one login state per process,
    so a second login would fail). Calls on it are serialised; a session lost to a token
    restart is opened again, once per call."""

    def __init__(self, settings: TokenSettings, pin: str) -> None:
        self.module = settings.module
        self.label = settings.label
        self._pin = pin
        self._pin_variable = f"{ENV_PREFIX}PKCS11_PIN" + ("" if settings.pin else "_FILE")
        self.pin_digest = hashlib.sha256(pin.encode("utf-8")).digest()
        self.lock = threading.RLock()
        self._session: pkcs11.Session | None = None
        self._mechanisms: set[Mechanism] | None = None
        #: Grows with each new session: object handles of an earlier one are stale.
        self.generation = 0

    @property
    def where(self) -> str:
        return f"PKCS#11 token {self.label!r} ({self.module})"

    def session(self) -> pkcs11.Session:
        with self.lock:
            if self._session is None:
                self._session = self._open()
                self.generation += 1
            return self._session

    def _open(self) -> pkcs11.Session:
        library = _library(self.module)
        try:
            token = library.get_token(token_label=self.label)
        except p11.NoSuchToken:
            present = sorted(t.label for t in library.get_tokens() if t.label)
            raise ConfigurationError(
                f"{ENV_PREFIX}PKCS11_TOKEN: no token labelled {self.label!r} in {self.module} "
                f"(tokens there: {', '.join(map(repr, present)) or 'none'}); "
                "initialise one (softhsm2-util --init-token) or fix the label"
            ) from None
        except p11.MultipleTokensReturned:
            raise ConfigurationError(
                f"{ENV_PREFIX}PKCS11_TOKEN: more than one token in {self.module} is labelled "
                f"{self.label!r}; give each token its own label"
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyStoreError(f"cannot reach {self.where}: {_describe(exc)}") from None
        pin_from = self._pin_variable
        try:
            session: pkcs11.Session = token.open(rw=True, user_pin=self._pin)
            return session
        except p11.PinIncorrect:
            raise KeyStoreError(
                f"the user PIN ({pin_from}) is wrong for {self.where}; the token locks the PIN "
                "after a few wrong tries"
            ) from None
        except p11.PinLocked:
            raise KeyStoreError(
                f"the user PIN of {self.where} is locked after wrong tries: its security "
                "officer must unlock or reset it"
            ) from None
        except (p11.PinLenRange, p11.PinInvalid):
            raise KeyStoreError(
                f"the user PIN ({pin_from}) has a length or characters {self.where} refuses"
            ) from None
        except p11.UserPinNotInitialized:
            raise KeyStoreError(
                f"{self.where} has no user PIN yet: initialise it (softhsm2-util --init-token "
                "sets one)"
            ) from None
        except p11.PKCS11Error as exc:
            raise KeyStoreError(
                f"cannot open a session on {self.where}: {_describe(exc)}"
            ) from None

    def call(self, what: str, operation: Callable[[pkcs11.Session], T]) -> T:
        """``operation`` on the session; a lost session is reopened and tried again once.
        Every PKCS#11 error becomes a KeyStoreError that says what was being done."""
        with self.lock:
            for attempt in (1, 2):
                session = self.session()
                try:
                    return operation(session)
                except _SESSION_LOST as exc:
                    self._drop()
                    if attempt == 2:
                        raise KeyStoreError(f"{what} on {self.where}: {_describe(exc)}") from None
                    log.warning("%s lost its session (%s); opening a new one", self.where, exc)
                except p11.PKCS11Error as exc:
                    raise KeyStoreError(f"{what} on {self.where}: {_describe(exc)}") from None
            raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with suppress(p11.PKCS11Error):  # it is gone already
                session.close()

    def mechanisms(self) -> set[Mechanism]:
        if self._mechanisms is None:
            self._mechanisms = self.call(
                "reading the mechanism list", lambda s: set(s.token.slot.get_mechanisms())
            )
        return self._mechanisms


def _describe(exc: p11.PKCS11Error) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _connect(settings: TokenSettings) -> _Connection:
    pin = settings.read_pin()
    key = (str(settings.module), settings.label)
    with _registry_lock:
        connection = _connections.get(key)
        digest = hashlib.sha256(pin.encode("utf-8")).digest()
        if connection is not None and not hmac.compare_digest(connection.pin_digest, digest):
            raise KeyStoreError(
                f"{connection.where} is already open in this process with another user PIN"
            )
        if connection is None:
            connection = _Connection(settings, pin)
            _connections[key] = connection
    connection.session()  # log in now: a wrong PIN or a missing token is said at once
    return connection


def open_token_key_store(settings: TokenSettings) -> TokenKeyStore:
    """The key store on the token ``settings`` names, logged in; ConfigurationError or
    KeyStoreError says precisely what is missing or wrong (module, token, PIN)."""
    return TokenKeyStore(_connect(settings))


# -- keys on the token ---------------------------------------------------------------------


class TokenEd25519Key(Ed25519PrivateKey):
    """The root key as the Ed25519 private key pyjwt signs trust bundles with: ``sign`` runs
    CKM_EDDSA on the token; the private bytes cannot be had."""

    def __init__(self, public: Ed25519PublicKey, sign: Callable[[bytes], bytes]) -> None:
        self._public = public
        self._sign = sign

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._sign(bytes(data))

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise KeyStoreError("the root key lives on the PKCS#11 token and never leaves it")

    def private_bytes_raw(self) -> bytes:
        raise KeyStoreError("the root key lives on the PKCS#11 token and never leaves it")

    def __copy__(self) -> TokenEd25519Key:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TokenEd25519Key:
        return self


@dataclass
class TokenSigner:
    """An issuer key on the token: ``sign`` runs there. Ed25519 signs with CKM_EDDSA over the
    message; P-256 with CKM_ECDSA over its SHA-256 digest, computed here (not every token
    offers CKM_ECDSA_SHA256), whose result is already r || s, the form COSE wants."""

    public: PublicKey
    _store: TokenKeyStore
    _generation: int = -1
    _private: pkcs11.SignMixin | None = field(default=None, repr=False)

    @property
    def kid(self) -> str:
        return self.public.kid

    @property
    def alg(self) -> Algorithm:
        return self.public.alg

    def sign(self, message: bytes) -> bytes:
        profile = profile_for(self.alg)
        data = message if self.alg is Algorithm.EDDSA else hashlib.sha256(message).digest()

        def sign(session: pkcs11.Session) -> bytes:
            connection = self._store._token
            if self._private is None or self._generation != connection.generation:
                # The first signature, or a new session after the token restarted.
                self._private = self._store._private_key(session, _issuer_label(self.kid))
                self._generation = connection.generation
            return self._private.sign(data, mechanism=profile.sign)

        signature = self._store._token.call(f"signing with issuer key {self.kid!r}", sign)
        if len(signature) != 64:
            raise KeyStoreError(
                f"{self._store.location} gave a {len(signature)}-byte signature for "
                f"{self.alg.jose_name}; 64 expected"
            )
        return signature


def _issuer_label(kid: str) -> str:
    return f"idcode-issuer-{check_kid(kid)}"


def _label_kid(label: str) -> str | None:
    """The kid an issuer key's label (live or removed) holds, else None."""
    match = _ISSUER_LABEL.fullmatch(label) or _REMOVED_LABEL.fullmatch(label)
    return match[match.lastindex or 0] if match else None


class TokenKeyStore:
    """The key store on a PKCS#11 token (see the module's docstring for its objects).

    As the file store, it publishes only the issuer keys its manifest lists, checks the
    manifest against the root public key read once per store object, refuses a manifest
    older than one it read before, and signs only with a key whose private half proves, by a
    signature checked here, to be the one the manifest lists. It also refuses a private key
    the token says was ever extractable or not sensitive: an imported key is not one the
    token generated.

    Writes are serialised within the process (``locked``); run key commands against one token
    one at a time across processes, as the token offers no lock of its own.
    """

    def __init__(self, connection: _Connection) -> None:
        self._token = connection
        self._root_jwk: dict[str, Any] | None = None
        self._manifest_seq = -1
        self._reported: set[str] = set()

    @property
    def location(self) -> str:
        return self._token.where

    # -- reading -----------------------------------------------------------------------

    def issuer_keys(self) -> list[PublicKey]:
        manifest = self.manifest()
        try:
            keys = [PublicKey.from_jwk(jwk) for jwk in manifest.keys.values()]
        except KeyMaterialError as exc:
            raise KeyStoreError(
                f"the manifest on {self.location} lists an unusable key: {exc}"
            ) from None
        return sorted(keys, key=lambda k: k.not_before or 0, reverse=True)

    def published_keys(self, now: int) -> list[PublicKey]:
        return [key for key in self.issuer_keys() if _published_at(key, now)]

    def revision(self) -> object:
        """The manifest objects' contents: they change with every key created, cut short or
        removed. None when the token cannot be read (the next read says why)."""
        try:
            values = self._token.call(
                "reading the key manifest",
                lambda s: sorted(bytes(o[Attribute.VALUE]) for o in _objects(s, MANIFEST_LABEL)),
            )
        except KeyStoreError:
            return None
        return hashlib.sha256(b"\0".join(values)).hexdigest()

    def manifest(self) -> KeyManifest:
        """The issuer keys this store wrote, checked against the root key."""
        tokens = self._token.call(
            "reading the key manifest",
            lambda s: [
                bytes(o[Attribute.VALUE]).decode("ascii", "replace")
                for o in _objects(s, MANIFEST_LABEL, ObjectClass.DATA)
            ],
        )
        if not tokens:
            self._report_strays(KeyManifest())
            return KeyManifest()
        root_jwk = self._pinned_root_jwk()
        if root_jwk is None:
            raise KeyStoreError(
                f"{self.location} holds a key manifest but no root key ({ROOT_LABEL}) to "
                "check it with: restore the token from its backup"
            )
        where = f"the key manifest on {self.location}"
        # Two manifests are there only if a rewrite was cut short: the newer one holds.
        manifest = max(
            (decode_manifest(token, root_jwk, where) for token in tokens), key=lambda m: m.seq
        )
        if manifest.seq < self._manifest_seq:
            raise KeyStoreError(
                f"{where} is older (sequence {manifest.seq}) than the one read before "
                f"({self._manifest_seq}): an earlier manifest was put back; restore the newest"
            )
        self._manifest_seq = manifest.seq
        self._report_strays(manifest)
        return manifest

    def signing_key(self, now: int) -> TokenSigner:
        missing = []
        for key in self.issuer_keys():  # newest first
            if not key.signs_at(now):
                continue
            label = _issuer_label(key.kid)
            signer = TokenSigner(key, self)
            if not self._has_objects(label, _PRIVATE):
                missing.append(label)  # never signs: planted, or its creation was cut short
                continue
            self._prove(signer.sign, key, label)
            return signer
        because = (
            f" ({', '.join(missing)} missing: a key whose private half is missing never signs)"
            if missing
            else ""
        )
        raise KeyStoreError(
            f"no issuer key on {self.location} may sign now{because}; run 'idcode keys init' "
            "or 'idcode keys rotate --starts-in 0'"
        )

    def root_key(self) -> RootKey:
        jwk = self._pinned_root_jwk()
        if jwk is None:
            raise KeyStoreError(f"no root key on {self.location}; run 'idcode keys init'")
        kid = str(jwk["kid"])
        public = Ed25519PublicKey.from_public_bytes(b64url.decode(str(jwk["x"])))
        generation = -1
        private: pkcs11.SignMixin | None = None

        def sign(message: bytes) -> bytes:
            def on_token(session: pkcs11.Session) -> bytes:
                nonlocal generation, private
                if private is None or generation != self._token.generation:
                    private = self._private_key(session, ROOT_LABEL)
                    generation = self._token.generation
                return private.sign(message, mechanism=Mechanism.EDDSA)

            return self._token.call("signing with the root key", on_token)

        root = RootKey(kid, TokenEd25519Key(public, sign))
        self._prove(sign, PublicKey("R", Algorithm.EDDSA, public), ROOT_LABEL)
        return root

    def has_root_key(self) -> bool:
        return bool(
            self._token.call("looking for the root key", lambda s: _objects(s, ROOT_LABEL, _PUBLIC))
        )

    def root_public_jwk(self) -> dict[str, Any]:
        jwk = self._pinned_root_jwk()
        if jwk is None:
            raise KeyStoreError(f"no root key on {self.location}; run 'idcode keys init'")
        return dict(jwk)

    def root_kid(self) -> str | None:
        jwk = self._pinned_root_jwk()
        return None if jwk is None else str(jwk["kid"])

    # -- writing -----------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._token.lock:
            yield

    def create_root_key(self, alg: Algorithm = Algorithm.EDDSA) -> RootKey:
        if alg is not Algorithm.EDDSA:
            # The GM profile's root key is SM2, which a token cannot hold (profile_for).
            raise KeyStoreError(
                f"a {alg.name} root key cannot live on a PKCS#11 token with idcode: PKCS#11 "
                "defines no mechanism for it (SM2 tokens use vendor-defined ones, which idcode "
                "does not speak); keep the keys of the GM crypto profile in a key directory "
                "(unset IDCODE_PKCS11_MODULE)"
            )
        with self.locked():
            if self.has_root_key():
                raise KeyStoreError(f"{self.location} already holds a root key")
            self._generate(Algorithm.EDDSA, ROOT_LABEL)
            self._root_jwk = None
            return self.root_key()

    def create_issuer_key(self, alg: Algorithm, not_before: int, not_after: int) -> PublicKey:
        if not_after <= not_before:
            raise KeyStoreError("a key's signing period must end after it starts")
        profile_for(alg)  # an algorithm the token cannot hold is refused before anything else
        with self.locked():
            root = self.root_key()  # the manifest needs it: check before writing anything
            manifest = self.manifest()
            kid = self._free_kid(manifest)
            key = self._generate(alg, _issuer_label(kid))
            public = PublicKey(kid, alg, key, not_before, not_after)
            manifest.keys[kid] = public.to_jwk()  # published from here on
            self._write_manifest(manifest, root)
            return public

    def end_signing_period(self, kid: str, at: int) -> None:
        check_kid(kid)
        with self.locked():
            root = self.root_key()
            manifest = self.manifest()
            if manifest.end_period(kid, at, f"on {self.location}") is not None:
                self._write_manifest(manifest, root)

    def remove_issuer_key(self, kid: str, at: int) -> None:
        """Emergency removal: the key leaves the manifest at once and its kid is recorded
        there as never to be given again. Its private half is destroyed (a compromised key
        serves no record); its public half stays, labelled ``idcode-removed-<at>-issuer-<kid>``.
        """
        check_kid(kid)
        with self.locked():
            root = self.root_key()
            manifest = self.manifest()
            manifest.remove(kid, at, f"on {self.location}")
            self._write_manifest(manifest, root)
            label = _issuer_label(kid)
            removed = f"idcode-removed-{at}-issuer-{kid}"

            def retire(session: pkcs11.Session) -> None:
                for obj in _objects(session, label, _PRIVATE):
                    obj.destroy()
                for obj in _objects(session, label):
                    try:
                        obj[Attribute.LABEL] = removed
                        obj[Attribute.ID] = removed.encode("ascii")
                    except p11.AttributeReadOnly:
                        obj.destroy()

            self._token.call(f"retiring {label}", retire)

    # -- helpers -------------------------------------------------------------------------

    def _has_objects(self, label: str, object_class: ObjectClass) -> bool:
        def look(session: pkcs11.Session) -> bool:
            return bool(_objects(session, label, object_class))

        return self._token.call(f"looking for {label}", look)

    def _generate(self, alg: Algorithm, label: str) -> VerificationKey:
        """A key pair generated on the token: the private half sensitive, never extractable,
        for signing only; returns the public half."""
        profile = profile_for(alg)
        offered = self._token.mechanisms()
        lacking = {profile.generate, profile.sign} - offered
        if lacking:
            raise KeyStoreError(
                f"{self.location} does not offer {_mechanism_names(lacking)}, which "
                f"{alg.jose_name} keys need (it offers {_mechanism_names(offered)})"
            )
        ident = label.encode("ascii")

        def generate(session: pkcs11.Session) -> bytes:
            public, _ = session.generate_keypair(
                profile.key_type,
                mechanism=profile.generate,
                store=True,
                label=label,
                id=ident,
                capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                public_template={
                    Attribute.EC_PARAMS: encode_named_curve_parameters(profile.curve),
                    Attribute.VERIFY: True,
                    Attribute.PRIVATE: False,
                },
                private_template={
                    Attribute.SIGN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.DERIVE: False,
                },
            )
            return bytes(public[Attribute.EC_POINT])

        point = self._token.call(f"generating {label}", generate)
        return profile.public_key(point)

    def _private_key(self, session: pkcs11.Session, label: str) -> pkcs11.SignMixin:
        """The private key labelled ``label``, if the token generated it and keeps it in."""
        found = _objects(session, label, _PRIVATE)
        if len(found) != 1:
            raise KeyStoreError(
                f"{self.location} holds {len(found)} private keys labelled {label!r}, not one"
            )
        key = found[0]
        if not isinstance(key, pkcs11.SignMixin):
            raise KeyStoreError(f"the private key {label!r} on {self.location} cannot sign")
        flags = key.get_attributes(
            [
                Attribute.SENSITIVE,
                Attribute.EXTRACTABLE,
                Attribute.ALWAYS_SENSITIVE,
                Attribute.NEVER_EXTRACTABLE,
            ]
        )
        if not (
            flags[Attribute.SENSITIVE]
            and flags[Attribute.ALWAYS_SENSITIVE]
            and flags[Attribute.NEVER_EXTRACTABLE]
            and not flags[Attribute.EXTRACTABLE]
        ):
            raise KeyStoreError(
                f"the private key {label!r} on {self.location} is, or once was, extractable or "
                "not sensitive (it was imported, not generated there, or its flags were "
                "changed); idcode signs only with keys that never left the token"
            )
        return key

    def _prove(self, sign: Callable[[bytes], bytes], public: PublicKey, label: str) -> None:
        """Sign a fresh challenge and check it with the public key the store trusts: a
        private key swapped on the token under the same label is refused before it signs."""
        challenge = b"idcode key check " + secrets.token_bytes(16)
        if not public.verify(sign(challenge), challenge):
            raise KeyStoreError(
                f"the private key {label!r} on {self.location} is not the private half of the "
                "public key the store lists for it; it was replaced: restore the token"
            )

    def _pinned_root_jwk(self) -> dict[str, Any] | None:
        """The root public JWK, read off the token once per store object and held from then
        on: a root key swapped while the service runs cannot vouch for a manifest."""
        if self._root_jwk is None:

            def read(session: pkcs11.Session) -> list[bytes]:
                return [
                    bytes(o[Attribute.EC_POINT]) for o in _objects(session, ROOT_LABEL, _PUBLIC)
                ]

            points = self._token.call("reading the root public key", read)
            if not points:
                return None
            if len(points) > 1:
                raise KeyStoreError(
                    f"{self.location} holds {len(points)} root public keys ({ROOT_LABEL}); "
                    "keep the one terminals pinned and destroy the others"
                )
            try:
                public = _PROFILES[Algorithm.EDDSA].public_key(points[0])
            except KeyMaterialError as exc:
                raise KeyStoreError(f"the root key on {self.location}: {exc}") from None
            assert isinstance(public, Ed25519PublicKey)
            placeholder = TokenEd25519Key(public, _cannot_sign)
            kid = "root-" + _thumbprint(placeholder)[:12]
            self._root_jwk = _root_public_jwk(kid, placeholder)
        return self._root_jwk

    def _write_manifest(self, manifest: KeyManifest, root: RootKey) -> None:
        """Create the new manifest object, then destroy the older ones: cut short between
        the two, both are there and the newer (higher sequence) holds."""
        manifest.seq = max(manifest.seq, self._manifest_seq) + 1
        token = encode_manifest(manifest, root, int(time.time())).encode("ascii")

        def write(session: pkcs11.Session) -> None:
            older = _objects(session, MANIFEST_LABEL, ObjectClass.DATA)
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.LABEL: MANIFEST_LABEL,
                    Attribute.APPLICATION: APPLICATION,
                    Attribute.VALUE: token,
                }
            )
            for obj in older:
                obj.destroy()

        self._token.call("writing the key manifest", write)
        self._manifest_seq = manifest.seq

    def _issuer_labels(self) -> list[str]:
        def read(session: pkcs11.Session) -> list[str]:
            return [
                str(o[Attribute.LABEL])
                for o in session.get_objects()
                if o.object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY)
            ]

        return self._token.call("listing the keys", read)

    def _free_kid(self, manifest: KeyManifest) -> str:
        labels = self._issuer_labels()
        # A listed key whose objects the operator destroyed gives its kid back, as a key
        # whose files were deleted does in a key directory.
        for kid in list(manifest.keys):
            if _issuer_label(kid) not in labels:
                del manifest.keys[kid]
        # Never a removed key's kid, nor the kid of any key object on the token.
        used = set(manifest.keys) | set(manifest.removed)
        used |= {kid for kid in map(_label_kid, labels) if kid is not None}
        free = [kid for kid in KID_ALPHABET if kid not in used]
        if not free:
            raise KeyStoreError(
                f"all {len(KID_ALPHABET)} key ids are in use on {self.location}; destroy "
                "retired issuer keys first"
            )
        return secrets.choice(free)

    def _report_strays(self, manifest: KeyManifest) -> None:
        for label in self._issuer_labels():
            match = _ISSUER_LABEL.fullmatch(label)
            if match and match[1] not in manifest.keys and label not in self._reported:
                self._reported.add(label)
                log.warning(
                    "ignoring %s on %s: the key manifest does not list it (idcode did not "
                    "make it, or its creation was cut short); it is not published",
                    label,
                    self.location,
                )


_PUBLIC = ObjectClass.PUBLIC_KEY
_PRIVATE = ObjectClass.PRIVATE_KEY


def _objects(
    session: pkcs11.Session, label: str, object_class: ObjectClass | None = None
) -> list[pkcs11.Object]:
    attributes: dict[Attribute, Any] = {Attribute.LABEL: label}
    if object_class is not None:
        attributes[Attribute.CLASS] = object_class
    return list(session.get_objects(attributes))


def _cannot_sign(message: bytes) -> bytes:
    raise KeyStoreError("this copy of the root public key does not sign")
