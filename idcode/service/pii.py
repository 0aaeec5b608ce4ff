"""Personal data at rest: encrypted values and keyed ID-number lookups, by crypto profile.

``standard``: AES-256-GCM and HMAC-SHA256; ``gm``: SM4-GCM and HMAC-SM3 (idcode.gm). Every
ciphertext is bound to its row and field through the associated data, so a value copied into
another card or column does not decrypt, and starts with a byte that names its AEAD (1:
AES-256-GCM, the only format before the GM profile; 2: SM4-GCM); a vault decrypts only its
own profile's and names the other's rather than try it. In development the two 32-byte keys
are generated once into ``keys/pii-keys.json``; production takes them from
IDCODE_PII_ENCRYPTION_KEY and IDCODE_PII_HASH_KEY. SM4's 16-byte key is derived from the
32-byte encryption key (docs/crypto-profiles.md, "Personal data under the GM profile").
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from idcode.errors import InvalidIdNumber, PersonalDataError
from idcode.gm import SM4GCM, hmac_sm3
from idcode.idnumber import normalise_id_number
from idcode.profiles import GM, STANDARD, CryptoProfile, ProfileName
from idcode.scenes import scene_subject_key, terminal_subject_key
from idcode.secretfiles import read_existing_secret, read_or_create_secret
from idcode.service.settings import NOT_THE_SERVICE_KEY_STORE, Settings

KEY_LENGTH = 32
_NONCE_LENGTH = 12
_TAG_LENGTH = 16
#: The first byte of a ciphertext: which AEAD made it. Blobs written before the GM profile
#: start with 1 and are AES-256-GCM; nothing else was ever written.
AES_GCM_VERSION = 1
SM4_GCM_VERSION = 2
_VERSIONS = {AES_GCM_VERSION: STANDARD, SM4_GCM_VERSION: GM}
SM4_KEY_LENGTH = 16
_SM4_KEY_LABEL = b"idcode/pii-sm4-key/v1"
_CITIZEN_KEYS_REMEMBERED = 20_000
DEV_KEYS_FILE = "pii-keys.json"
_RELYING_PARTY_LABEL = b"idcode/relying-party-subject/v1/"


class PersonalDataVault:
    """Encrypts and decrypts personal fields and computes keyed lookup hashes, with the
    algorithms of ``profile`` (AES-256-GCM and HMAC-SHA256, or SM4-GCM and HMAC-SM3)."""

    def __init__(
        self, encryption_key: bytes, hash_key: bytes, profile: CryptoProfile = STANDARD
    ) -> None:
        if len(encryption_key) != KEY_LENGTH or len(hash_key) != KEY_LENGTH:
            raise PersonalDataError(f"personal-data keys must be {KEY_LENGTH} bytes each")
        if hmac.compare_digest(encryption_key, hash_key):
            raise PersonalDataError("the encryption key and the hash key must differ")
        self.profile = profile
        self._aead: AESGCM | SM4GCM
        if profile.name is ProfileName.GM:
            # SM4 takes 16 bytes: derived from the 32-byte key (HMAC-SM3, a label, the first
            # 16 bytes), so the key settings and files are the same under both profiles.
            self._aead = SM4GCM(hmac_sm3(encryption_key, _SM4_KEY_LABEL)[:SM4_KEY_LENGTH])
            self._version = SM4_GCM_VERSION
        else:
            self._aead = AESGCM(encryption_key)
            self._version = AES_GCM_VERSION
        self._hash_key = hash_key
        self._citizen_keys: dict[str, bytes] = {}

    def lookup_hash(self, id_number: str) -> bytes:
        """The profile's keyed hash (HMAC-SHA256 or HMAC-SM3) of a normalised ID number:
        finds a card without storing the number."""
        return self.profile.mac(self._hash_key, id_number.encode("ascii"))

    def scene_subject_key(self, scene: str) -> bytes:
        """The subject key of ``scene``'s terminals (idcode.scenes), derived from the hash
        key: the city's key that joins the logs of different scenes never leaves here."""
        return scene_subject_key(self._city_key(), scene, mac=self.profile.mac)

    def terminal_subject_key(self, scene: str, site: str) -> bytes:
        """The subject key of the terminals of ``scene`` at ``site`` that belong to no relying
        party: the scene's, or the site's own where the scene is site-scoped (a shop, a bus
        operator: idcode.scenes.terminal_subject_key)."""
        return terminal_subject_key(self._city_key(), scene, site, mac=self.profile.mac)

    def relying_party_subject_key(self, relying_party_id: str) -> bytes:
        """The key of one relying party's pairwise subjects (docs/identity.md): the subject
        ``/v1/identify`` returns to it, and the subject key of its own terminals. Another
        label than the scenes', so no party's key is a scene's key."""
        label = _RELYING_PARTY_LABEL + relying_party_id.encode("ascii")
        return self.profile.mac(self._city_key(), label)

    def _city_key(self) -> bytes:
        return self.profile.mac(self._hash_key, b"idcode/city-subject-key/v1")

    def citizen_key(self, claimed_id_number: str) -> bytes | None:
        """The lookup hash for an ID number as an ID token states it, or None when it is not
        a valid number (no card can have it).

        Remembered for the next request of the same citizen, in this process's memory only,
        like the ID token itself (see idcode.service.auth.TokenVerifier); this path runs on every
        request for a code.
        """
        key = self._citizen_keys.get(claimed_id_number)
        if key is None:
            try:
                key = self.lookup_hash(normalise_id_number(claimed_id_number))
            except InvalidIdNumber:
                return None
            if len(self._citizen_keys) >= _CITIZEN_KEYS_REMEMBERED:
                self._citizen_keys.clear()
            self._citizen_keys[claimed_id_number] = key
        return key

    def encrypt(self, value: str, *, card_id: str, field: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LENGTH)
        sealed = self._aead.encrypt(nonce, value.encode("utf-8"), _context(card_id, field))
        return bytes([self._version]) + nonce + sealed

    def decrypt(self, blob: bytes, *, card_id: str, field: str) -> str:
        made_under = _VERSIONS.get(blob[0]) if blob else None
        if made_under is None:
            raise PersonalDataError(f"unknown ciphertext version for {field}")
        if made_under.name is not self.profile.name:
            # Never opened here, though the 32-byte key is the same: a deployment reads its own
            # profile's algorithm only (the one it is assessed for), and says what it found.
            raise PersonalDataError(
                f"{field} of card {card_id} is {made_under.aead}, written under the "
                f"{made_under.name} crypto profile; this deployment runs {self.profile.name} "
                f"and reads {self.profile.aead} only (docs/crypto-profiles.md)"
            )
        nonce, sealed = blob[1 : 1 + _NONCE_LENGTH], blob[1 + _NONCE_LENGTH :]
        if len(nonce) != _NONCE_LENGTH or len(sealed) < _TAG_LENGTH:
            raise PersonalDataError(f"{field} of card {card_id} is truncated")
        try:
            return self._aead.decrypt(nonce, sealed, _context(card_id, field)).decode("utf-8")
        except InvalidTag:
            raise PersonalDataError(f"{field} of card {card_id} does not decrypt") from None


def _context(card_id: str, field: str) -> bytes:
    return f"idcode/v1/{field}/{card_id}".encode()


def _decode_key(name: str, text: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise PersonalDataError(f"{name} is not base64") from None
    if len(key) != KEY_LENGTH:
        raise PersonalDataError(f"{name} must decode to {KEY_LENGTH} bytes")
    return key


def vault_from_keys(
    encryption_key_b64: str, hash_key_b64: str, profile: CryptoProfile = STANDARD
) -> PersonalDataVault:
    return PersonalDataVault(
        _decode_key("IDCODE_PII_ENCRYPTION_KEY", encryption_key_b64),
        _decode_key("IDCODE_PII_HASH_KEY", hash_key_b64),
        profile,
    )


def vault_for(settings: Settings, *, create: bool = True) -> PersonalDataVault:
    """The vault the settings name: keys from the environment, or development keys, which
    only the service creates (``create``); a command beside it must find the service's.
    The settings' crypto profile chooses the algorithms."""
    if settings.pii_encryption_key and settings.pii_hash_key:
        return vault_from_keys(
            settings.pii_encryption_key.get_secret_value(),
            settings.pii_hash_key.get_secret_value(),
            settings.profile,
        )
    if not settings.development:
        raise PersonalDataError("set IDCODE_PII_ENCRYPTION_KEY and IDCODE_PII_HASH_KEY")
    return development_vault(settings.keys_dir, create=create, profile=settings.profile)


def development_vault(
    keys_dir: Path, *, create: bool = True, profile: CryptoProfile = STANDARD
) -> PersonalDataVault:
    """The development keys from ``keys_dir``, generated (mode 0600) on first use when
    ``create``; otherwise they must exist (see NOT_THE_SERVICE_KEY_STORE)."""
    path = keys_dir / DEV_KEYS_FILE

    def new_keys() -> bytes:
        document = {
            "encryption_key": base64.b64encode(secrets.token_bytes(KEY_LENGTH)).decode(),
            "hash_key": base64.b64encode(secrets.token_bytes(KEY_LENGTH)).decode(),
        }
        return json.dumps(document).encode()

    try:
        secret = (
            read_or_create_secret(path, new_keys)
            if create
            else read_existing_secret(path, NOT_THE_SERVICE_KEY_STORE)
        )
        document = json.loads(secret)
        return vault_from_keys(document["encryption_key"], document["hash_key"], profile)
    except (OSError, ValueError, KeyError) as exc:
        raise PersonalDataError(f"cannot read {path}: {exc}") from None
