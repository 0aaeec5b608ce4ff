"""The wallet's directory: the device's private key and what the service last said about it.

Owner-only, as the key store (``idcode.secretfiles``): a 0700 directory that nobody else can
write to, files of mode 0600 written whole by rename, checked on every read (owner, mode,
no symbolic link). The citizen's ID token is never stored here: registering, listing and
removing ask for it each time; renewing is signed with the device key itself.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from idcode import b64url
from idcode.cose import Algorithm
from idcode.devicecode import Credential, DeviceKey, split_blob
from idcode.errors import ClaimsError, FormatError, UsageError
from idcode.secretfiles import (
    check_private,
    check_trusted_directory,
    ensure_private_directory,
    write_secret_file,
)

KEY_FILE = "device-key.pem"
STATE_FILE = "wallet.json"
#: Where a wallet lives unless ``--dir`` or this variable says otherwise.
DIRECTORY_VARIABLE = "IDCODE_WALLET_DIR"
DEFAULT_DIRECTORY = "~/.idcode-wallet"
_STATE_VERSION = 1
_MAX_STATE_BYTES = 64 * 1024

DevicePrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


def default_directory() -> Path:
    return Path(os.environ.get(DIRECTORY_VARIABLE) or DEFAULT_DIRECTORY).expanduser()


def new_device_key(alg: Algorithm) -> DevicePrivateKey:
    """A fresh device key: Ed25519 for EdDSA, P-256 for ES256."""
    if alg is Algorithm.EDDSA:
        return Ed25519PrivateKey.generate()
    if alg is Algorithm.ES256:
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"a device key is EdDSA or ES256, not {alg.jose_name}")


@dataclass(frozen=True)
class WalletState:
    """What the wallet knows besides its key: its device at the service and the credential.

    ``clock_offset`` is the service's time minus this machine's, in seconds, measured at
    ``synced_at`` (this machine's time) from the ``server_time`` of the last answer; a code's
    time is this machine's clock plus the offset, so a phone whose clock is wrong still
    makes codes terminals accept."""

    server: str
    device: str  # the device's id at the service (a UUID): its tokens' iss and sub
    device_id: str  # 16 hex characters: the id codes carry and bundles revoke
    alg: str  # EdDSA or ES256
    label: str | None
    credential: str  # base64url of the credential blob
    credential_expires_at: int
    code_prefix: str  # the deployment's device-code prefix, e.g. WH2:
    clock_offset: int
    synced_at: int

    @property
    def blob(self) -> bytes:
        return b64url.decode(self.credential)

    @property
    def parsed(self) -> Credential:
        return Credential.from_bytes(split_blob(self.blob)[0])

    def now(self, local: int) -> int:
        """The service's time when this machine's clock reads ``local``."""
        return local + self.clock_offset

    def to_json(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, document: object) -> WalletState:
        if not isinstance(document, dict) or document.get("version") != _STATE_VERSION:
            raise ValueError(f"not a version {_STATE_VERSION} wallet state")
        fields: dict[str, Any] = {name: document.get(name) for name in cls.__dataclass_fields__}
        for name in ("credential_expires_at", "clock_offset", "synced_at"):
            if type(fields[name]) is not int:
                raise ValueError(f"{name} is not an integer")
        for name in ("server", "device", "device_id", "alg", "credential", "code_prefix"):
            if not isinstance(fields[name], str):
                raise ValueError(f"{name} is not text")
        if fields["label"] is not None and not isinstance(fields["label"], str):
            raise ValueError("label is not text")
        state = cls(**fields)
        try:
            credential = state.parsed
        except (FormatError, ClaimsError) as exc:
            raise ValueError(f"the credential is unusable: {exc}") from None
        if credential.expires_at != state.credential_expires_at:
            raise ValueError("the credential's expiry does not match credential_expires_at")
        return state

    def renewed(self, other: WalletState) -> WalletState:
        """This wallet with the credential and clock of a later answer (same device)."""
        return replace(
            self,
            credential=other.credential,
            credential_expires_at=other.credential_expires_at,
            code_prefix=other.code_prefix,
            clock_offset=other.clock_offset,
            synced_at=other.synced_at,
            label=other.label,
        )


class WalletStore:
    """One wallet directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def key_path(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def state_path(self) -> Path:
        return self.directory / STATE_FILE

    def holds_a_wallet(self) -> bool:
        return any(os.path.lexists(p) for p in (self.key_path, self.state_path))

    def prepare(self) -> None:
        """Create the directory (0700) or check it, before a key is made for it: a wallet
        is never registered into a directory it cannot keep safe, nor over another wallet."""
        ensure_private_directory(self.directory)
        if self.holds_a_wallet():
            raise UsageError(
                f"{self.directory} already holds a wallet; use another --dir, or delete "
                f"{KEY_FILE} and {STATE_FILE} there after removing the device"
            )

    def create(self, key: DevicePrivateKey, state: WalletState) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_secret_file(self.key_path, pem)
        self.save(state)

    def save(self, state: WalletState) -> None:
        write_secret_file(self.state_path, _dumps(state.to_json()), replace=True)

    def load(self) -> tuple[DevicePrivateKey, WalletState]:
        """The key and state; UsageError saying what is missing or damaged, UnsafeFileError
        (a KeyStoreError) for a directory or file someone else could have changed."""
        if not self.directory.exists():
            raise UsageError(
                f"no wallet in {self.directory}: run 'idcode wallet register --server URL' "
                "first (or give --dir)"
            )
        check_trusted_directory(self.directory)
        for path in (self.key_path, self.state_path):
            try:
                check_private(path)
            except FileNotFoundError:
                raise UsageError(
                    f"{path} is missing: {self.directory} is not a registered wallet"
                ) from None
        key = _load_key(self.key_path)
        try:
            raw = self.state_path.read_bytes()
            if len(raw) > _MAX_STATE_BYTES:
                raise ValueError("it is too large")
            state = WalletState.from_json(json.loads(raw.decode("utf-8")))
        except (ValueError, RecursionError) as exc:
            raise UsageError(f"{self.state_path} is damaged: {exc}") from None
        if DeviceKey.from_public_key(key.public_key()) != state.parsed.device:
            raise UsageError(
                f"{self.state_path} holds a credential for another key than {self.key_path}"
            )
        return key, state

    def delete(self) -> None:
        """Forget the device: its key and credential (after the service removed it)."""
        for path in (self.state_path, self.key_path):
            path.unlink(missing_ok=True)


def _dumps(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _load_key(path: Path) -> DevicePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} does not hold an unencrypted device key: {exc}") from None
    if isinstance(key, Ed25519PrivateKey) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    ):
        return key
    raise UsageError(f"{path} holds a {type(key).__name__}; a device key is Ed25519 or P-256")
