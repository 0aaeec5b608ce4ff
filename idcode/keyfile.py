"""Passphrase-encrypted private key files: PKCS#8 DER under AES-256-GCM with an Argon2id key.

The format (docs/keys.md, "Encrypted key files") is a PEM-armoured JSON envelope::

    -----BEGIN IDCODE ENCRYPTED PRIVATE KEY-----
    base64 of {"v":1,"key":"issuer:A",
               "kdf":{"alg":"argon2id","v":19,"salt":…,"m":65536,"t":3,"p":4},
               "aead":{"alg":"A256GCM","nonce":…},"ct":…}
    -----END IDCODE ENCRYPTED PRIVATE KEY-----

The associated data of the AEAD is the canonical JSON of everything but ``ct``, with the key
label the reader expects (not the one the file names): a file moved to another key's name,
or with its parameters lowered, does not decrypt. Reading refuses parameters outside
``FLOOR``..``CEILING`` before deriving anything, so a crafted file can neither be weak nor
make the derivation exhaust memory or time.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from idcode import b64url
from idcode.errors import Base64UrlError, KeyStoreError

PEM_LABEL = "IDCODE ENCRYPTED PRIVATE KEY"
_BEGIN = f"-----BEGIN {PEM_LABEL}-----"
_END = f"-----END {PEM_LABEL}-----"
FORMAT_VERSION = 1
ARGON2_VERSION = 0x13  # RFC 9106 defines only version 1.3 (19), the one cryptography computes

#: Bigger than any key file idcode writes (an encrypted P-256 key is under 1 KB): a larger
#: file is refused before it is parsed.
MAX_FILE_BYTES = 16 * 1024
_MAX_CIPHERTEXT_BYTES = 4096
_SALT_BYTES = 16
_NONCE_BYTES = 12
_TAG_BYTES = 16


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    memory_cost: int  # KiB
    iterations: int
    lanes: int


#: What idcode writes: RFC 9106 section 4's second recommended option (64 MiB, 3 passes,
#: 4 lanes), for machines that cannot spend the first option's 2 GiB on every start of a
#: replica. It took 0.12 s per file on the development machine (docs/keys.md).
WRITE_PARAMETERS = Argon2Parameters(memory_cost=65_536, iterations=3, lanes=4)
#: Reading refuses less memory or fewer passes than idcode ever wrote (a file below that
#: was not written by idcode, or was weakened). Lanes do not change an attacker's work.
FLOOR = Argon2Parameters(memory_cost=65_536, iterations=3, lanes=1)
#: ... and more than this, so that a crafted file cannot exhaust memory (256 MiB) or hold a
#: start up for long (about 2 s at the ceiling here).
CEILING = Argon2Parameters(memory_cost=262_144, iterations=10, lanes=16)

_KDF_FIELDS = {"alg", "v", "salt", "m", "t", "p"}
_AEAD_FIELDS = {"alg", "nonce"}
_FIELDS = {"v", "key", "kdf", "aead", "ct"}


def is_sealed(content: bytes) -> bool:
    """Whether ``content`` is (the start of) a file in this format, as opposed to PKCS#8 PEM."""
    return content.lstrip().startswith(_BEGIN.encode("ascii"))


class KeyFileCipher:
    """Seals and opens key files with one passphrase.

    A derived key is remembered per (salt, parameters) for the life of the object (one key
    store object), so a command that reads the root key several times derives it once;
    every file has its own salt, so each file costs one derivation.
    """

    _MAX_REMEMBERED = 128

    def __init__(self, passphrase: bytes) -> None:
        self._passphrase = passphrase
        self._derived: dict[tuple[bytes, Argon2Parameters], bytes] = {}

    def seal(self, pkcs8_der: bytes, label: str) -> bytes:
        """The key file for ``pkcs8_der``, bound to ``label`` (the key's role and kid)."""
        salt = os.urandom(_SALT_BYTES)
        nonce = os.urandom(_NONCE_BYTES)
        header = _header(label, salt, WRITE_PARAMETERS, nonce)
        kek = self._derive(salt, WRITE_PARAMETERS, None)
        ciphertext = AESGCM(kek).encrypt(nonce, pkcs8_der, _associated_data(header))
        document = {**header, "ct": b64url.encode(ciphertext)}
        body = base64.b64encode(json.dumps(document, separators=(",", ":")).encode("ascii"))
        lines = [body[i : i + 64].decode("ascii") for i in range(0, len(body), 64)]
        return ("\n".join([_BEGIN, *lines, _END]) + "\n").encode("ascii")

    def unseal(self, content: bytes, label: str, path: Path) -> bytes:
        """The PKCS#8 DER sealed in ``content``; KeyStoreError naming ``path`` and the problem."""
        document = _parse(content, path)
        version = document.get("v")
        if version != FORMAT_VERSION:
            raise KeyStoreError(
                f"{path} is an idcode key file of format version {version!r}; this idcode "
                f"reads version {FORMAT_VERSION} (a newer idcode wrote it?)"
            )
        if set(document) != _FIELDS:
            raise KeyStoreError(
                f"{path} is not a valid idcode key file: it has the fields "
                f"{sorted(document)}, not {sorted(_FIELDS)}"
            )
        if document["key"] != label:
            raise KeyStoreError(
                f"{path} holds the private key of {document['key']!r}, not of {label!r}: key "
                "files were renamed or swapped; restore them from the backup"
            )
        salt, params = _kdf(document["kdf"], path)
        nonce = _aead(document["aead"], path)
        ciphertext = _bytes_field(document, "ct", path)
        if not _TAG_BYTES < len(ciphertext) <= _MAX_CIPHERTEXT_BYTES:
            raise KeyStoreError(
                f"{path} is not a valid idcode key file: its ciphertext has {len(ciphertext)} "
                f"bytes (a private key's is {_TAG_BYTES + 1} to {_MAX_CIPHERTEXT_BYTES})"
            )
        kek = self._derive(salt, params, path)
        try:
            return AESGCM(kek).decrypt(
                nonce, ciphertext, _associated_data(_header(label, salt, params, nonce))
            )
        except InvalidTag:
            raise KeyStoreError(
                f"cannot decrypt {path}: wrong passphrase, or the file was altered"
            ) from None

    def _derive(self, salt: bytes, params: Argon2Parameters, path: Path | None) -> bytes:
        remembered = self._derived.get((salt, params))
        if remembered is not None:
            return remembered
        try:
            kdf = Argon2id(
                salt=salt,
                length=32,
                iterations=params.iterations,
                lanes=params.lanes,
                memory_cost=params.memory_cost,
            )
            kek = kdf.derive(self._passphrase)
        except UnsupportedAlgorithm:
            raise KeyStoreError(
                "this installation's cryptography cannot compute Argon2id (it needs cryptography "
                "44 or later built with OpenSSL 3.2 or later, as its wheels are)"
                + (f"; cannot open {path}" if path else "")
            ) from None
        except MemoryError:
            raise KeyStoreError(
                f"not enough memory for Argon2id with {params.memory_cost} KiB"
                + (f" to open {path}" if path else "")
            ) from None
        if len(self._derived) >= self._MAX_REMEMBERED:
            self._derived.clear()
        self._derived[(salt, params)] = kek
        return kek


def _header(label: str, salt: bytes, params: Argon2Parameters, nonce: bytes) -> dict[str, Any]:
    return {
        "v": FORMAT_VERSION,
        "key": label,
        "kdf": {
            "alg": "argon2id",
            "v": ARGON2_VERSION,
            "salt": b64url.encode(salt),
            "m": params.memory_cost,
            "t": params.iterations,
            "p": params.lanes,
        },
        "aead": {"alg": "A256GCM", "nonce": b64url.encode(nonce)},
    }


def _associated_data(header: dict[str, Any]) -> bytes:
    """Everything but the ciphertext, canonically: version, key label, KDF parameters, salt
    and nonce. Changing any of them in the file makes decryption fail."""
    canonical = json.dumps(header, sort_keys=True, separators=(",", ":"))
    return b"idcode-key-file\n" + canonical.encode("ascii")


def _parse(content: bytes, path: Path) -> dict[str, Any]:
    if len(content) > MAX_FILE_BYTES:
        raise KeyStoreError(f"{path} is larger than any key file idcode writes")
    try:
        lines = content.decode("ascii").strip().splitlines()
    except UnicodeDecodeError:
        raise KeyStoreError(f"{path} is not a valid idcode key file: not ASCII text") from None
    if not lines or lines[0] != _BEGIN:
        raise KeyStoreError(f"{path} is not an idcode key file (no '{_BEGIN}' line)")
    if lines[-1] != _END:
        raise KeyStoreError(f"{path} is truncated: it has no '{_END}' line")
    try:
        body = base64.b64decode("".join(lines[1:-1]), validate=True)
        document = json.loads(body)
    except (binascii.Error, ValueError):
        raise KeyStoreError(
            f"{path} is damaged or truncated: its body is not base64 of a JSON document"
        ) from None
    if not isinstance(document, dict):
        raise KeyStoreError(f"{path} is not a valid idcode key file: not a JSON object")
    return document


def _kdf(kdf: object, path: Path) -> tuple[bytes, Argon2Parameters]:
    if not isinstance(kdf, dict) or set(kdf) != _KDF_FIELDS:
        raise KeyStoreError(
            f"{path} is not a valid idcode key file: 'kdf' must have the fields "
            f"{sorted(_KDF_FIELDS)}"
        )
    if kdf["alg"] != "argon2id" or kdf["v"] != ARGON2_VERSION:
        raise KeyStoreError(
            f"{path} uses the key derivation {kdf['alg']!r} version {kdf['v']!r}; idcode reads "
            f"argon2id version {ARGON2_VERSION}"
        )
    values = {}
    for name, field, unit in (
        ("memory_cost", "m", " KiB"),
        ("iterations", "t", ""),
        ("lanes", "p", ""),
    ):
        value = kdf[field]
        if type(value) is not int:
            raise KeyStoreError(f"{path}: Argon2id parameter {field} is not an integer")
        low, high = getattr(FLOOR, name), getattr(CEILING, name)
        if value < low:
            raise KeyStoreError(
                f"{path}: Argon2id {name.replace('_', ' ')} {field}={value}{unit} is below the "
                f"floor of {low}{unit} idcode accepts; idcode never writes such a file, so it "
                "was crafted or weakened: restore it from the backup"
            )
        if value > high:
            raise KeyStoreError(
                f"{path}: Argon2id {name.replace('_', ' ')} {field}={value}{unit} is above the "
                f"{high}{unit} idcode accepts (refused rather than risk exhausting memory or "
                "time); restore the file from the backup"
            )
        values[name] = value
    salt = _bytes_field(kdf, "salt", path)
    if not 16 <= len(salt) <= 64:
        raise KeyStoreError(f"{path}: the Argon2id salt has {len(salt)} bytes, not 16 to 64")
    return salt, Argon2Parameters(**values)


def _aead(aead: object, path: Path) -> bytes:
    if not isinstance(aead, dict) or set(aead) != _AEAD_FIELDS:
        raise KeyStoreError(
            f"{path} is not a valid idcode key file: 'aead' must have the fields "
            f"{sorted(_AEAD_FIELDS)}"
        )
    if aead["alg"] != "A256GCM":
        raise KeyStoreError(f"{path} uses the cipher {aead['alg']!r}; idcode reads A256GCM")
    nonce = _bytes_field(aead, "nonce", path)
    if len(nonce) != _NONCE_BYTES:
        raise KeyStoreError(f"{path}: the AES-GCM nonce has {len(nonce)} bytes, not 12")
    return nonce


def _bytes_field(document: dict[str, Any], name: str, path: Path) -> bytes:
    try:
        return b64url.decode(document[name])
    except Base64UrlError as exc:
        raise KeyStoreError(f"{path}: field {name!r} is not base64url ({exc})") from None
