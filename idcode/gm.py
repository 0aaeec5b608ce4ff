"""The Chinese national ("GM") primitives of the GM crypto profile: SM2 signatures over SM3
with the GM/T 0009 default user id, SM3, HMAC-SM3 and SM4-GCM.

SM3 and SM4 come from ``cryptography``. SM2 comes from the system's OpenSSL 3 ``libcrypto``
through a small ctypes binding: ``cryptography`` has no SM2, and of the candidates measured
(``bench/sm2.py``, docs/crypto-profiles.md "SM2 implementation") OpenSSL's SM2 verifies
fastest, signs with a constant-time ladder and is kept by the distribution. The library is
loaded on first use of an SM2 key, so importing this module never fails; where it cannot be
loaded or has no SM2, that use raises ``cryptography.exceptions.UnsupportedAlgorithm``
(``sm2_backend()`` checks it up front).

Every libcrypto object the binding makes is freed: the per-call contexts in ``finally``
blocks, the keys when their Python objects go. Its error queue, which Python's own ``ssl``
and ``hashlib`` share, is emptied after every failed call.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import os
import secrets
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final, Self

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from idcode.errors import KeyMaterialError

__all__ = [
    "SM2_DEFAULT_ID",
    "SM4GCM",
    "SM2PrivateKey",
    "SM2PublicKey",
    "hmac_sm3",
    "sm2_backend",
    "sm3",
]

SM2_DEFAULT_ID: Final = b"1234567812345678"
"""The default user id of GM/T 0009-2012 (section 10), hashed into Z_A before the message."""

# The recommended curve of GM/T 0003.5 (GB/T 32918.5), "sm2p256v1".
P: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B: Final = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N: Final = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123

SIGNATURE_LENGTH: Final = 64
PUBLIC_KEY_LENGTH: Final = 65

# The DER forms OpenSSL 3 writes for SM2 keys: algorithm id-ecPublicKey (1.2.840.10045.2.1)
# with the named curve SM2 (1.2.156.10197.1.301).
_ALGORITHM: Final = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")
_SPKI_PREFIX: Final = bytes.fromhex("3059") + _ALGORITHM + bytes.fromhex("034200")


# -- SM3, HMAC-SM3, SM4-GCM (cryptography) -------------------------------------------------------


def sm3(data: bytes) -> bytes:
    """The SM3 digest of ``data`` (GB/T 32905), 32 bytes."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) with SM3 of ``data`` under ``key``, 32 bytes."""
    mac = hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


class SM4GCM:
    """SM4 (GB/T 32907) in GCM mode, with the interface of ``cryptography``'s ``AESGCM``:
    a 16-byte key, a 12-byte nonce, the 16-byte tag appended to the ciphertext, and
    ``InvalidTag`` for a ciphertext, tag, nonce or associated data that does not match.
    ``cryptography`` has no AEAD class for SM4, so this one is built on its ``Cipher``."""

    KEY_LENGTH: Final = 16
    NONCE_LENGTH: Final = 12
    TAG_LENGTH: Final = 16

    def __init__(self, key: bytes) -> None:
        if len(key) != self.KEY_LENGTH:
            raise ValueError(f"an SM4 key is {self.KEY_LENGTH} bytes, not {len(key)}")
        self._key = bytes(key)

    @classmethod
    def generate_key(cls) -> bytes:
        return os.urandom(cls.KEY_LENGTH)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        encryptor = Cipher(algorithms.SM4(self._key), modes.GCM(self._nonce(nonce))).encryptor()
        if associated_data:
            encryptor.authenticate_additional_data(associated_data)
        ciphertext = encryptor.update(data) + encryptor.finalize()
        return ciphertext + encryptor.tag

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        nonce = self._nonce(nonce)
        if len(data) < self.TAG_LENGTH:
            raise InvalidTag
        ciphertext, tag = data[: -self.TAG_LENGTH], data[-self.TAG_LENGTH :]
        decryptor = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, tag)).decryptor()
        if associated_data:
            decryptor.authenticate_additional_data(associated_data)
        # The plaintext leaves only once finalize() has checked the tag.
        plaintext = decryptor.update(ciphertext)
        return plaintext + decryptor.finalize()

    def _nonce(self, nonce: bytes) -> bytes:
        if len(nonce) != self.NONCE_LENGTH:
            raise ValueError(f"an SM4-GCM nonce is {self.NONCE_LENGTH} bytes, not {len(nonce)}")
        return nonce


# -- the libcrypto binding ---------------------------------------------------------------------

_void_p = ctypes.c_void_p
_PasswordCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_char), ctypes.c_int, ctypes.c_int, _void_p
)
_BIO_CTRL_INFO: Final = 3  # BIO_get_mem_data(b, pp) is BIO_ctrl(b, BIO_CTRL_INFO, 0, pp)
# (name, result type, argument types) of every libcrypto function the binding calls.
_SIGNATURES: Final[list[tuple[str, Any, list[Any]]]] = [
    ("OpenSSL_version_num", ctypes.c_ulong, []),
    ("OpenSSL_version", ctypes.c_char_p, [ctypes.c_int]),
    ("ERR_clear_error", None, []),
    ("EVP_MD_fetch", _void_p, [_void_p, ctypes.c_char_p, ctypes.c_char_p]),
    ("EVP_MD_free", None, [_void_p]),
    ("EVP_aes_256_cbc", _void_p, []),
    ("EVP_MD_CTX_new", _void_p, []),
    ("EVP_MD_CTX_free", None, [_void_p]),
    ("EVP_MD_CTX_set_pkey_ctx", None, [_void_p, _void_p]),
    ("EVP_PKEY_CTX_new_from_pkey", _void_p, [_void_p, _void_p, ctypes.c_char_p]),
    ("EVP_PKEY_CTX_free", None, [_void_p]),
    ("EVP_PKEY_CTX_set1_id", ctypes.c_int, [_void_p, ctypes.c_char_p, ctypes.c_int]),
    ("EVP_PKEY_free", None, [_void_p]),
    ("EVP_PKEY_is_a", ctypes.c_int, [_void_p, ctypes.c_char_p]),
    (
        "EVP_PKEY_get_octet_string_param",
        ctypes.c_int,
        [
            _void_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
        ],
    ),
    ("EVP_DigestSignInit", ctypes.c_int, [_void_p, _void_p, _void_p, _void_p, _void_p]),
    ("EVP_DigestVerifyInit", ctypes.c_int, [_void_p, _void_p, _void_p, _void_p, _void_p]),
    (
        "EVP_DigestSign",
        ctypes.c_int,
        [
            _void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.c_char_p,
            ctypes.c_size_t,
        ],
    ),
    (
        "EVP_DigestVerify",
        ctypes.c_int,
        [_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t],
    ),
    ("d2i_AutoPrivateKey", _void_p, [_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
    ("d2i_PUBKEY", _void_p, [_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
    ("BIO_new_mem_buf", _void_p, [ctypes.c_char_p, ctypes.c_int]),
    ("BIO_s_mem", _void_p, []),
    ("BIO_new", _void_p, [_void_p]),
    (
        "BIO_ctrl",
        ctypes.c_long,
        [_void_p, ctypes.c_int, ctypes.c_long, ctypes.POINTER(ctypes.c_char_p)],
    ),
    ("BIO_free", ctypes.c_int, [_void_p]),
    ("PEM_read_bio_PrivateKey", _void_p, [_void_p, _void_p, _PasswordCallback, _void_p]),
    (
        "PEM_write_bio_PKCS8PrivateKey",
        ctypes.c_int,
        [_void_p, _void_p, _void_p, ctypes.c_char_p, ctypes.c_int, _void_p, _void_p],
    ),
]


class _LibCrypto:
    """The loaded library, its functions and the SM3 digest fetched once."""

    def __init__(self, library: ctypes.CDLL, path: str) -> None:
        for name, restype, argtypes in _SIGNATURES:
            function = getattr(library, name)  # AttributeError: not OpenSSL 3
            function.restype = restype
            function.argtypes = argtypes
            setattr(self, name, function)
        self.path = path
        self.version = self.OpenSSL_version(0).decode("ascii", "replace")
        self.sm3 = self.EVP_MD_fetch(None, b"SM3", None)  # kept for the process's life
        self.aes_256_cbc = self.EVP_aes_256_cbc()

    def __getattr__(self, name: str) -> Callable[..., Any]:  # typed access to the functions
        raise AttributeError(name)


_LIBRARY_NAMES: Final = ("libcrypto.so.3", "libcrypto.3.dylib", "libcrypto-3-x64.dll")
_lock = threading.Lock()
_loaded: _LibCrypto | None = None


def _load() -> _LibCrypto:
    names = [*_LIBRARY_NAMES, ctypes.util.find_library("crypto")]
    for name in names:
        if name is None:
            continue
        try:
            library = ctypes.CDLL(name)
            candidate = _LibCrypto(library, name)
        except (OSError, AttributeError):
            continue
        if candidate.OpenSSL_version_num() < 0x30000000:
            continue
        if not candidate.sm3:
            raise UnsupportedAlgorithm(f"{candidate.version} ({name}) has no SM3")
        if not _has_sm2(candidate):
            raise UnsupportedAlgorithm(f"{candidate.version} ({name}) has no SM2")
        return candidate
    raise UnsupportedAlgorithm(
        "SM2 needs the system's OpenSSL 3 libcrypto (libcrypto.so.3, Debian's libssl3), "
        "which was not found"
    )


def _has_sm2(library: _LibCrypto) -> bool:
    # The published example key (GB/T 32918.5 Annex A) must load as an SM2 key.
    der = _pkcs8(0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8)
    pkey = _d2i(library, library.d2i_AutoPrivateKey, der)
    if not pkey:
        library.ERR_clear_error()
        return False
    try:
        return bool(library.EVP_PKEY_is_a(pkey, b"SM2") == 1)
    finally:
        library.EVP_PKEY_free(pkey)


def _lib() -> _LibCrypto:
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


def sm2_backend() -> str:
    """Which library does SM2 here, e.g. ``"OpenSSL 3.0.19 27 Jan 2026 (libcrypto.so.3)"``;
    raises ``UnsupportedAlgorithm`` where there is none, so a GM deployment can refuse to
    start instead of failing on its first code."""
    library = _lib()
    return f"{library.version} ({library.path})"


def _d2i(library: _LibCrypto, function: Callable[..., Any], der: bytes) -> int | None:
    cursor = ctypes.c_char_p(der)  # d2i moves the pointer; der stays alive meanwhile
    pkey: int | None = function(None, ctypes.byref(cursor), len(der))
    return pkey


def _der_length(length: int) -> bytes:
    return bytes([length]) if length < 0x80 else bytes([0x81, length])


def _pkcs8(value: int, point: bytes | None = None) -> bytes:
    """A PKCS#8 PrivateKeyInfo holding an ECPrivateKey (RFC 5915) with the scalar and, if
    given, the public point (without it, OpenSSL computes the point when it loads the key,
    but leaves it out when it writes the key again)."""
    ec_private_key = bytes.fromhex("020101") + b"\x04\x20" + value.to_bytes(32, "big")
    if point is not None:
        ec_private_key += b"\xa1\x44\x03\x42\x00" + point
    ec_private_key = b"\x30" + _der_length(len(ec_private_key)) + ec_private_key
    body = bytes.fromhex("020100") + _ALGORITHM + b"\x04" + _der_length(len(ec_private_key))
    body += ec_private_key
    return b"\x30" + _der_length(len(body)) + body


def _free_on_collect(owner: object, pkey: int) -> None:
    finalizer = weakref.finalize(owner, _lib().EVP_PKEY_free, pkey)
    # At interpreter exit the process ends anyway; no call into a library being torn down.
    finalizer.atexit = False


def _pem_private_key(data: bytes, password: bytes | None) -> int:
    library = _lib()
    encrypted = b"ENCRYPTED" in data.split(b"-----END", 1)[0]
    if encrypted and password is None:
        raise TypeError("the private key is encrypted, and no password was given")
    if not encrypted and password is not None:
        raise TypeError("a password was given, but the private key is not encrypted")

    def give_password(buffer: Any, size: int, rwflag: int, userdata: Any) -> int:
        # Called by OpenSSL only for an encrypted key; never prompts on a terminal.
        if password is None or len(password) > size:
            return -1
        ctypes.memmove(buffer, password, len(password))
        return len(password)

    bio = library.BIO_new_mem_buf(data, len(data))
    if not bio:
        raise MemoryError("libcrypto: BIO_new_mem_buf")
    try:
        callback = _PasswordCallback(give_password)  # alive until the call returns
        pkey: int | None = library.PEM_read_bio_PrivateKey(bio, None, callback, None)
    finally:
        library.BIO_free(bio)
    if not pkey:
        library.ERR_clear_error()
        raise KeyMaterialError(
            "cannot load the private key: wrong password or not an SM2 private key in PEM"
            if encrypted
            else "not an SM2 private key in PEM (PKCS#8)"
        )
    if library.EVP_PKEY_is_a(pkey, b"SM2") != 1:
        library.EVP_PKEY_free(pkey)
        raise KeyMaterialError("the PEM holds a private key, but not on the SM2 curve")
    return pkey


# -- SM2 keys --------------------------------------------------------------------------------


class SM2PublicKey:
    """An SM2 public key on the recommended curve; verifies SM2-with-SM3 signatures made
    with the default user id (``SM2_DEFAULT_ID``)."""

    __slots__ = ("__weakref__", "_pkey", "_x", "_y")

    def __init__(self, x: int, y: int, pkey: int) -> None:
        """Use ``from_bytes`` or ``from_pem``."""
        self._x = x
        self._y = y
        self._pkey = pkey
        _free_on_collect(self, pkey)

    # Read-only: the libcrypto key that verifies is made from them once.
    @property
    def x(self) -> int:
        return self._x

    @property
    def y(self) -> int:
        return self._y

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """The key from its uncompressed point ``0x04 || x || y`` (65 bytes). Raises
        ``KeyMaterialError`` (a ``ValueError``) saying whether the length, the form, the
        range or the curve is wrong, or that it is the point at infinity."""
        data = bytes(data)
        if data == b"\x00":
            raise KeyMaterialError("the point at infinity is not an SM2 public key")
        if len(data) != PUBLIC_KEY_LENGTH:
            raise KeyMaterialError(
                f"an SM2 public key is {PUBLIC_KEY_LENGTH} bytes (0x04 || x || y), not {len(data)}"
            )
        if data[0] != 0x04:
            raise KeyMaterialError(
                f"an SM2 public key is an uncompressed point (0x04 first), not 0x{data[0]:02x}"
            )
        x = int.from_bytes(data[1:33], "big")
        y = int.from_bytes(data[33:], "big")
        if x >= P or y >= P:
            raise KeyMaterialError("an SM2 public key's coordinates must be below the prime p")
        if (y * y - (x * x * x + A * x + B)) % P != 0:
            raise KeyMaterialError("the point is not on the SM2 curve")
        # The cofactor is 1: a point on the curve other than infinity has order n.
        library = _lib()
        pkey = _d2i(library, library.d2i_PUBKEY, _SPKI_PREFIX + data)
        if not pkey:
            library.ERR_clear_error()
            raise KeyMaterialError("libcrypto refuses the SM2 public key")
        return cls(x, y, pkey)

    def to_bytes(self) -> bytes:
        """The uncompressed point ``0x04 || x || y``, 65 bytes."""
        return b"\x04" + self.x.to_bytes(32, "big") + self.y.to_bytes(32, "big")

    @classmethod
    def from_pem(cls, data: bytes) -> Self:
        """The key from a PEM SubjectPublicKeyInfo as OpenSSL writes it (id-ecPublicKey with
        the SM2 curve and an uncompressed point)."""
        der = _pem_body(data, b"PUBLIC KEY")
        if len(der) != len(_SPKI_PREFIX) + PUBLIC_KEY_LENGTH or not der.startswith(_SPKI_PREFIX):
            raise KeyMaterialError(
                "not an SM2 public key (SubjectPublicKeyInfo, id-ecPublicKey with the SM2 "
                "curve, an uncompressed point)"
            )
        return cls.from_bytes(der[len(_SPKI_PREFIX) :])

    def to_pem(self) -> bytes:
        """PEM SubjectPublicKeyInfo, readable by ``openssl pkey -pubin``."""
        return _pem(b"PUBLIC KEY", _SPKI_PREFIX + self.to_bytes())

    def verify(self, signature: bytes, data: bytes) -> None:
        """Check an r || s signature (64 bytes) of ``data``; raises ``InvalidSignature`` for
        any signature that is not one, whatever its bytes."""
        if len(signature) != SIGNATURE_LENGTH:
            raise InvalidSignature
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < N and 0 < s < N):
            raise InvalidSignature
        der = encode_dss_signature(r, s)
        data = data if type(data) is bytes else bytes(data)
        library = _lib()
        md_ctx, pkey_ctx = _digest_contexts(library, self._pkey)
        try:
            if library.EVP_DigestVerifyInit(md_ctx, None, library.sm3, None, self._pkey) != 1:
                raise _failed(library, "EVP_DigestVerifyInit")
            result = library.EVP_DigestVerify(md_ctx, der, len(der), data, len(data))
        finally:
            library.EVP_MD_CTX_free(md_ctx)
            library.EVP_PKEY_CTX_free(pkey_ctx)
        if result != 1:
            library.ERR_clear_error()
            raise InvalidSignature

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SM2PublicKey):
            return NotImplemented
        return (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))

    def __repr__(self) -> str:
        return f"SM2PublicKey({self.to_bytes().hex()})"


class SM2PrivateKey:
    """An SM2 private key on the recommended curve. ``sign`` is GM/T 0003.2 signing with
    preprocessing: over SM3(Z_A || data), Z_A from ``SM2_DEFAULT_ID``, as OpenSSL signs
    with ``distid:1234567812345678``."""

    __slots__ = ("__weakref__", "_pkey", "_public_key")

    def __init__(self, pkey: int) -> None:
        """Use ``generate``, ``from_pem`` or ``from_private_value``."""
        self._pkey = pkey
        _free_on_collect(self, pkey)
        library = _lib()
        point = ctypes.create_string_buffer(PUBLIC_KEY_LENGTH + 1)
        length = ctypes.c_size_t(0)
        if (
            library.EVP_PKEY_get_octet_string_param(
                pkey, b"encoded-pub-key", point, len(point), ctypes.byref(length)
            )
            != 1
        ):
            raise _failed(library, "EVP_PKEY_get_octet_string_param")
        self._public_key = SM2PublicKey.from_bytes(point.raw[: length.value])

    @classmethod
    def generate(cls) -> Self:
        """A new key from the operating system's random source."""
        return cls.from_private_value(secrets.randbelow(N - 2) + 1)

    @classmethod
    def from_private_value(cls, value: int) -> Self:
        """The key with the private scalar ``value`` (test vectors, key import), which
        GM/T 0003.1 takes from [1, n - 2]."""
        if not 1 <= value <= N - 2:
            raise KeyMaterialError("an SM2 private value is in [1, n - 2]")
        library = _lib()
        pkey = _d2i(library, library.d2i_AutoPrivateKey, _pkcs8(value))
        if not pkey:
            raise _failed(library, "d2i_AutoPrivateKey")
        # Loaded once to compute the public point, then again with it, so that to_pem
        # writes the key whole, as OpenSSL's own keys are (some readers need the point).
        point = cls(pkey).public_key().to_bytes()
        pkey = _d2i(library, library.d2i_AutoPrivateKey, _pkcs8(value, point))
        if not pkey:
            raise _failed(library, "d2i_AutoPrivateKey")
        return cls(pkey)

    @classmethod
    def from_pem(cls, data: bytes, password: bytes | None = None) -> Self:
        """The key from PEM (PKCS#8, encrypted with ``password`` or not). Raises
        ``TypeError`` when a password is missing or given for a key without one, as
        ``cryptography``'s loaders do, and ``KeyMaterialError`` (a ``ValueError``) for a
        wrong password or a PEM that is not an SM2 private key."""
        return cls(_pem_private_key(bytes(data), password))

    def to_pem(self, password: bytes | None = None) -> bytes:
        """PEM PKCS#8 in the form OpenSSL 3 writes (id-ecPublicKey with the SM2 curve),
        readable by ``openssl pkey``. With ``password``: PBES2 with PBKDF2-HMAC-SHA256 (2,048
        iterations, OpenSSL's default) and AES-256-CBC, the same as ``cryptography``'s
        ``BestAvailableEncryption`` writes today."""
        if password is not None and not password:
            raise ValueError("an empty password protects nothing")
        library = _lib()
        bio = library.BIO_new(library.BIO_s_mem())
        if not bio:
            raise MemoryError("libcrypto: BIO_new")
        try:
            cipher = library.aes_256_cbc if password is not None else None
            written = library.PEM_write_bio_PKCS8PrivateKey(
                bio, self._pkey, cipher, password, len(password or b""), None, None
            )
            if written != 1:
                raise _failed(library, "PEM_write_bio_PKCS8PrivateKey")
            start = ctypes.c_char_p()
            length = library.BIO_ctrl(bio, _BIO_CTRL_INFO, 0, ctypes.byref(start))
            return ctypes.string_at(start, length)
        finally:
            library.BIO_free(bio)

    def public_key(self) -> SM2PublicKey:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        """The signature r || s of ``data``, 64 bytes (each half big-endian)."""
        data = data if type(data) is bytes else bytes(data)
        library = _lib()
        md_ctx, pkey_ctx = _digest_contexts(library, self._pkey)
        der = ctypes.create_string_buffer(80)  # an SM2 DER signature is at most 72 bytes
        length = ctypes.c_size_t(len(der))
        try:
            if library.EVP_DigestSignInit(md_ctx, None, library.sm3, None, self._pkey) != 1:
                raise _failed(library, "EVP_DigestSignInit")
            if library.EVP_DigestSign(md_ctx, der, ctypes.byref(length), data, len(data)) != 1:
                raise _failed(library, "EVP_DigestSign")
        finally:
            library.EVP_MD_CTX_free(md_ctx)
            library.EVP_PKEY_CTX_free(pkey_ctx)
        r, s = decode_dss_signature(der.raw[: length.value])
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __repr__(self) -> str:
        return f"SM2PrivateKey(public={self._public_key.to_bytes().hex()})"


def _digest_contexts(library: _LibCrypto, pkey: int) -> tuple[int, int]:
    """A digest context joined to a key context that carries the default user id; the
    caller frees both (EVP_MD_CTX_set_pkey_ctx does not hand over the key context)."""
    md_ctx: int | None = library.EVP_MD_CTX_new()
    pkey_ctx: int | None = library.EVP_PKEY_CTX_new_from_pkey(None, pkey, None)
    if not md_ctx or not pkey_ctx:
        library.EVP_MD_CTX_free(md_ctx)
        library.EVP_PKEY_CTX_free(pkey_ctx)
        raise MemoryError("libcrypto: EVP_MD_CTX_new or EVP_PKEY_CTX_new_from_pkey")
    if library.EVP_PKEY_CTX_set1_id(pkey_ctx, SM2_DEFAULT_ID, len(SM2_DEFAULT_ID)) != 1:
        library.EVP_MD_CTX_free(md_ctx)
        library.EVP_PKEY_CTX_free(pkey_ctx)
        raise _failed(library, "EVP_PKEY_CTX_set1_id")
    library.EVP_MD_CTX_set_pkey_ctx(md_ctx, pkey_ctx)
    return md_ctx, pkey_ctx


def _failed(library: _LibCrypto, function: str) -> RuntimeError:
    """A libcrypto call that does not fail on any input failed: report it, leave the
    error queue empty."""
    library.ERR_clear_error()
    return RuntimeError(f"libcrypto: {function} failed")


def _pem(label: bytes, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    armoured = [b"-----BEGIN " + label + b"-----", *lines, b"-----END " + label + b"-----"]
    return b"\n".join(armoured) + b"\n"


def _pem_body(data: bytes, label: bytes) -> bytes:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    start = data.find(begin)
    stop = data.find(end, start + len(begin))
    if start < 0 or stop < 0:
        raise KeyMaterialError(f"not PEM with a {label.decode()} block")
    try:
        return base64.b64decode(b"".join(data[start + len(begin) : stop].split()), validate=True)
    except ValueError:
        raise KeyMaterialError(f"the {label.decode()} block is not base64") from None
