"""The GM primitives (idcode.gm) against the published examples of their standards and
against OpenSSL's command line, an independent implementation, and under hostile input."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from idcode import gm
from idcode.errors import KeyMaterialError

N = gm.N
DISTID = "distid:1234567812345678"  # GM/T 0009's default id, spelt out: not read from gm

# GB/T 32918.5-2016 Annex A (and GM/T 0003.5-2012): a signature on the recommended curve
# with the default user id, made with the fixed k = 59276E27...BC21 (OpenSSL's
# test/sm2_internal_test.c checks the same example).
VECTOR_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
VECTOR_X = 0x09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020
VECTOR_Y = 0xCCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13
VECTOR_MESSAGE = b"message digest"
VECTOR_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
VECTOR_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
VECTOR_SIGNATURE = VECTOR_R.to_bytes(32, "big") + VECTOR_S.to_bytes(32, "big")


def openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)


def raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def der(signature: bytes) -> bytes:
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    return encode_dss_signature(r, s)


def signature_of(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@pytest.fixture(scope="module")
def key() -> gm.SM2PrivateKey:
    return gm.SM2PrivateKey.generate()


# -- SM3, HMAC-SM3, SM4 ------------------------------------------------------------------------


def test_sm3_gives_the_digests_of_the_gbt_32905_examples() -> None:
    assert gm.sm3(b"abc") == bytes.fromhex(
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert gm.sm3(b"abcd" * 16) == bytes.fromhex(
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


@pytest.mark.parametrize("key_length", [16, 64, 100])
def test_hmac_sm3_agrees_with_openssl(tmp_path: Path, key_length: int) -> None:
    mac_key = os.urandom(key_length)  # 100 bytes: longer than a block, hashed first
    message = os.urandom(333)
    result = openssl(
        "dgst", "-sm3", "-mac", "HMAC", "-macopt", f"hexkey:{mac_key.hex()}", "-r", stdin=message
    )
    assert result.returncode == 0, result.stderr
    assert gm.hmac_sm3(mac_key, message).hex() == result.stdout.split()[0].decode()


def test_sm4_underneath_gives_the_gbt_32907_example() -> None:
    # SM4GCM is built on cryptography's SM4: its block cipher is the standard one.
    sm4_key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    # One block through ECB is the bare block cipher, what a known-answer test needs.
    encryptor = Cipher(algorithms.SM4(sm4_key), modes.ECB()).encryptor()  # noqa: S305
    ciphertext = encryptor.update(sm4_key) + encryptor.finalize()
    assert ciphertext == bytes.fromhex("681edf34d206965e86b3e94f536e4246")


RFC8998_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
RFC8998_NONCE = bytes.fromhex("00001234567800000000ABCD")
RFC8998_AAD = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
RFC8998_PLAINTEXT = bytes.fromhex(
    "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
    "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
)
RFC8998_SEALED = bytes.fromhex(
    "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
    "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    "83DE3541E4C2B58177E065A9BF7B62EC"  # the tag
)


def test_sm4_gcm_gives_the_rfc_8998_example_and_opens_it() -> None:
    aead = gm.SM4GCM(RFC8998_KEY)
    assert aead.encrypt(RFC8998_NONCE, RFC8998_PLAINTEXT, RFC8998_AAD) == RFC8998_SEALED
    assert aead.decrypt(RFC8998_NONCE, RFC8998_SEALED, RFC8998_AAD) == RFC8998_PLAINTEXT


def test_sm4_gcm_without_associated_data_round_trips() -> None:
    aead = gm.SM4GCM(gm.SM4GCM.generate_key())
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, b"", None)
    assert len(sealed) == 16
    assert aead.decrypt(nonce, sealed, None) == b""
    assert aead.decrypt(nonce, aead.encrypt(nonce, b"card", b""), None) == b"card"


@pytest.mark.parametrize("where", [0, 63, 64, 79])
def test_sm4_gcm_refuses_a_changed_ciphertext_or_tag(where: int) -> None:
    damaged = bytearray(RFC8998_SEALED)
    damaged[where] ^= 0x01
    with pytest.raises(InvalidTag):
        gm.SM4GCM(RFC8998_KEY).decrypt(RFC8998_NONCE, bytes(damaged), RFC8998_AAD)


def test_sm4_gcm_refuses_other_associated_data_nonce_key_or_a_cut_ciphertext() -> None:
    aead = gm.SM4GCM(RFC8998_KEY)
    with pytest.raises(InvalidTag):
        aead.decrypt(RFC8998_NONCE, RFC8998_SEALED, RFC8998_AAD + b"x")
    with pytest.raises(InvalidTag):
        aead.decrypt(RFC8998_NONCE, RFC8998_SEALED, None)
    with pytest.raises(InvalidTag):
        aead.decrypt(bytes(12), RFC8998_SEALED, RFC8998_AAD)
    with pytest.raises(InvalidTag):
        gm.SM4GCM(bytes(16)).decrypt(RFC8998_NONCE, RFC8998_SEALED, RFC8998_AAD)
    for cut in (RFC8998_SEALED[:-1], RFC8998_SEALED[:16], RFC8998_SEALED[:15], b""):
        with pytest.raises(InvalidTag):
            aead.decrypt(RFC8998_NONCE, cut, RFC8998_AAD)


def test_sm4_gcm_refuses_a_wrong_key_or_nonce_length_by_name() -> None:
    with pytest.raises(ValueError, match="SM4 key is 16 bytes, not 32"):
        gm.SM4GCM(bytes(32))
    with pytest.raises(ValueError, match="nonce is 12 bytes, not 16"):
        gm.SM4GCM(RFC8998_KEY).encrypt(bytes(16), b"x", None)
    with pytest.raises(ValueError, match="nonce is 12 bytes, not 8"):
        gm.SM4GCM(RFC8998_KEY).decrypt(bytes(8), RFC8998_SEALED, None)


# -- SM2: the published example ------------------------------------------------------------------


def test_sm2_private_value_of_the_example_gives_its_public_key() -> None:
    public = gm.SM2PrivateKey.from_private_value(VECTOR_D).public_key()
    assert (public.x, public.y) == (VECTOR_X, VECTOR_Y)


def test_sm2_verifies_the_gbt_32918_5_example_signature() -> None:
    public = gm.SM2PublicKey.from_bytes(
        b"\x04" + VECTOR_X.to_bytes(32, "big") + VECTOR_Y.to_bytes(32, "big")
    )
    public.verify(VECTOR_SIGNATURE, VECTOR_MESSAGE)
    with pytest.raises(InvalidSignature):
        public.verify(VECTOR_SIGNATURE, b"message digesT")
    with pytest.raises(InvalidSignature):
        public.verify(signature_of(VECTOR_R, VECTOR_S ^ 1), VECTOR_MESSAGE)


def test_sm2_example_signature_is_what_the_fixed_k_gives() -> None:
    # OpenSSL takes no fixed k, so the signature is rebuilt from its definition
    # (GB/T 32918.2 6.1): e = SM3(Z_A || M), r = (e + x1) mod n with (x1, y1) = [k]G,
    # s = (1 + d)^-1 (k - r d) mod n. [k]G is computed as the public key of the value k.
    k = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
    a = gm.A.to_bytes(32, "big")
    b = gm.B.to_bytes(32, "big")
    generator = gm.SM2PrivateKey.from_private_value(1).public_key().to_bytes()[1:]
    public = VECTOR_X.to_bytes(32, "big") + VECTOR_Y.to_bytes(32, "big")
    entity = (16 * 8).to_bytes(2, "big") + b"1234567812345678"
    z = gm.sm3(entity + a + b + generator + public)
    e = int.from_bytes(gm.sm3(z + VECTOR_MESSAGE), "big")
    x1 = gm.SM2PrivateKey.from_private_value(k).public_key().x
    assert (e + x1) % N == VECTOR_R
    assert pow(1 + VECTOR_D, -1, N) * (k - VECTOR_R * VECTOR_D) % N == VECTOR_S


# -- SM2: against OpenSSL's command line ---------------------------------------------------------


def test_openssl_verifies_idcode_signatures_with_the_default_id(
    key: gm.SM2PrivateKey, tmp_path: Path
) -> None:
    (tmp_path / "public.pem").write_bytes(key.public_key().to_pem())
    message = os.urandom(200)
    (tmp_path / "message").write_bytes(message)
    (tmp_path / "other").write_bytes(message + b"!")
    for attempt in range(3):  # three signatures: each with its own random k
        (tmp_path / f"sig{attempt}").write_bytes(der(key.sign(message)))
        verify = [
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(tmp_path / "public.pem"),
            "-rawin",
            "-digest",
            "sm3",
            "-pkeyopt",
            DISTID,
            "-sigfile",
            str(tmp_path / f"sig{attempt}"),
        ]
        good = openssl(*verify, "-in", str(tmp_path / "message"))
        assert b"Signature Verified Successfully" in good.stdout, good.stderr
        bad = openssl(*verify, "-in", str(tmp_path / "other"))
        assert bad.returncode != 0 and b"Verification Failure" in bad.stdout
    # Another tool, the same check: openssl dgst with the id as a signature option.
    dgst = openssl(
        "dgst",
        "-sm3",
        "-verify",
        str(tmp_path / "public.pem"),
        "-sigopt",
        DISTID,
        "-signature",
        str(tmp_path / "sig0"),
        str(tmp_path / "message"),
    )
    assert dgst.stdout.strip() == b"Verified OK", dgst.stderr


def test_idcode_verifies_openssl_signatures_and_reads_its_keys(tmp_path: Path) -> None:
    private_pem = tmp_path / "key.pem"
    assert openssl("genpkey", "-algorithm", "SM2", "-out", str(private_pem)).returncode == 0
    public_pem = openssl("pkey", "-in", str(private_pem), "-pubout").stdout
    key = gm.SM2PrivateKey.from_pem(private_pem.read_bytes())
    public = gm.SM2PublicKey.from_pem(public_pem)
    assert key.public_key() == public
    message = os.urandom(150)
    (tmp_path / "message").write_bytes(message)
    signed = openssl(
        "pkeyutl",
        "-sign",
        "-inkey",
        str(private_pem),
        "-rawin",
        "-digest",
        "sm3",
        "-pkeyopt",
        DISTID,
        "-in",
        str(tmp_path / "message"),
    )
    assert signed.returncode == 0, signed.stderr
    public.verify(raw(signed.stdout), message)
    with pytest.raises(InvalidSignature):
        public.verify(raw(signed.stdout), message[:-1])


def test_a_signature_with_another_user_id_is_refused(tmp_path: Path) -> None:
    # OpenSSL signs with an empty id when none is given (as Node's crypto does): not ours.
    private_pem = tmp_path / "key.pem"
    assert openssl("genpkey", "-algorithm", "SM2", "-out", str(private_pem)).returncode == 0
    (tmp_path / "message").write_bytes(b"code")
    for options in ([], ["-pkeyopt", "distid:1234567812345679"]):
        signed = openssl(
            "pkeyutl",
            "-sign",
            "-inkey",
            str(private_pem),
            "-rawin",
            "-digest",
            "sm3",
            *options,
            "-in",
            str(tmp_path / "message"),
        )
        assert signed.returncode == 0, signed.stderr
        public = gm.SM2PrivateKey.from_pem(private_pem.read_bytes()).public_key()
        with pytest.raises(InvalidSignature):
            public.verify(raw(signed.stdout), b"code")


def test_openssl_reads_the_pem_idcode_writes(key: gm.SM2PrivateKey, tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_bytes(key.to_pem())
    (tmp_path / "locked.pem").write_bytes(key.to_pem(b"correct horse"))
    (tmp_path / "public.pem").write_bytes(key.public_key().to_pem())
    expected = key.public_key().to_pem()
    plain = openssl("pkey", "-in", str(tmp_path / "key.pem"), "-pubout")
    locked = openssl(
        "pkey", "-in", str(tmp_path / "locked.pem"), "-passin", "pass:correct horse", "-pubout"
    )
    public = openssl("pkey", "-pubin", "-in", str(tmp_path / "public.pem"), "-pubout")
    assert plain.stdout == locked.stdout == public.stdout == expected
    text = openssl("pkey", "-in", str(tmp_path / "key.pem"), "-text", "-noout").stdout
    assert b"ASN1 OID: SM2" in text
    # The structure of OpenSSL's own SM2 keys: PKCS#8 with id-ecPublicKey and the SM2 curve,
    # the ECPrivateKey inside holding the public point too.
    parsed = openssl("asn1parse", "-in", str(tmp_path / "key.pem")).stdout
    assert b":id-ecPublicKey" in parsed and b":sm2" in parsed
    assert b"A144034200" + key.public_key().to_bytes().hex().upper().encode() in parsed
    wrong = openssl("pkey", "-in", str(tmp_path / "locked.pem"), "-passin", "pass:wrong")
    assert wrong.returncode != 0


def test_idcode_reads_an_encrypted_key_openssl_writes(tmp_path: Path) -> None:
    private_pem = tmp_path / "key.pem"
    assert openssl("genpkey", "-algorithm", "SM2", "-out", str(private_pem)).returncode == 0
    locked = openssl("pkey", "-in", str(private_pem), "-aes-256-cbc", "-passout", "pass:s3cret")
    assert b"ENCRYPTED PRIVATE KEY" in locked.stdout
    key = gm.SM2PrivateKey.from_pem(locked.stdout, b"s3cret")
    assert key.public_key() == gm.SM2PrivateKey.from_pem(private_pem.read_bytes()).public_key()


# -- SM2: keys and round trips ------------------------------------------------------------------


def test_sign_gives_64_bytes_that_verify_and_differ_each_time(key: gm.SM2PrivateKey) -> None:
    first, second = key.sign(b"code"), key.sign(b"code")
    assert len(first) == len(second) == 64
    assert first != second  # a fresh k for every signature
    key.public_key().verify(first, b"code")
    key.public_key().verify(second, b"code")
    with pytest.raises(InvalidSignature):
        gm.SM2PrivateKey.generate().public_key().verify(first, b"code")


def test_public_key_coordinates_are_read_only(key: gm.SM2PrivateKey) -> None:
    public = key.public_key()
    with pytest.raises(AttributeError):
        public.x = VECTOR_X  # type: ignore[misc]
    assert public.x != VECTOR_X


def test_byte_like_messages_sign_and_verify(key: gm.SM2PrivateKey) -> None:
    # Typed as bytes; untyped callers pass what hashing would take, and libcrypto gets bytes.
    signature = key.sign(bytearray(b"code"))  # type: ignore[arg-type]
    key.public_key().verify(signature, memoryview(b"code"))  # type: ignore[arg-type]
    with pytest.raises(InvalidSignature):
        key.public_key().verify(bytearray(signature), bytearray(b"cod"))  # type: ignore[arg-type]


def test_pem_round_trips_with_and_without_a_password(key: gm.SM2PrivateKey) -> None:
    again = gm.SM2PrivateKey.from_pem(key.to_pem())
    assert again.public_key() == key.public_key()
    locked = key.to_pem(b"pass\x00word")  # any bytes, a NUL included
    assert b"ENCRYPTED PRIVATE KEY" in locked
    assert gm.SM2PrivateKey.from_pem(locked, b"pass\x00word").public_key() == key.public_key()
    assert gm.SM2PublicKey.from_pem(key.public_key().to_pem()) == key.public_key()
    public = key.public_key()
    assert gm.SM2PublicKey.from_bytes(public.to_bytes()) == public
    assert public.to_bytes() == b"\x04" + public.x.to_bytes(32, "big") + public.y.to_bytes(
        32, "big"
    )


def test_private_pem_with_a_missing_wrong_or_needless_password_is_refused(
    key: gm.SM2PrivateKey,
) -> None:
    locked = key.to_pem(b"right")
    with pytest.raises(TypeError, match="encrypted, and no password"):
        gm.SM2PrivateKey.from_pem(locked)
    with pytest.raises(KeyMaterialError, match="wrong password"):
        gm.SM2PrivateKey.from_pem(locked, b"wrong")
    with pytest.raises(KeyMaterialError, match="wrong password"):
        gm.SM2PrivateKey.from_pem(locked, b"r" * 5000)  # longer than OpenSSL's buffer
    with pytest.raises(TypeError, match="not encrypted"):
        gm.SM2PrivateKey.from_pem(key.to_pem(), b"right")
    with pytest.raises(ValueError, match="empty password"):
        key.to_pem(b"")


def test_keys_of_other_algorithms_or_garbage_are_refused_as_pem() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    ed25519 = Ed25519PrivateKey.generate()
    for other in (p256, ed25519):
        pem = other.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with pytest.raises(KeyMaterialError, match="not on the SM2 curve"):
            gm.SM2PrivateKey.from_pem(pem)
        public_pem = other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        with pytest.raises(KeyMaterialError, match="not an SM2 public key"):
            gm.SM2PublicKey.from_pem(public_pem)
    for garbage in (
        b"",
        os.urandom(300),
        b"-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
    ):
        with pytest.raises(KeyMaterialError):
            gm.SM2PrivateKey.from_pem(garbage)
        with pytest.raises(KeyMaterialError):
            gm.SM2PublicKey.from_pem(garbage)
    with pytest.raises(KeyMaterialError, match="not base64"):
        gm.SM2PublicKey.from_pem(b"-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n")


@pytest.mark.parametrize("value", [0, N - 1, N, 2**256, -1])
def test_private_value_outside_1_to_n_minus_2_is_refused(value: int) -> None:
    with pytest.raises(KeyMaterialError, match=r"in \[1, n - 2\]"):
        gm.SM2PrivateKey.from_private_value(value)


# -- SM2: hostile public keys and signatures -----------------------------------------------------


def point(x: int, y: int) -> bytes:
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        (b"\x00", "point at infinity"),
        (b"", "65 bytes .* not 0"),
        (b"\x04", "65 bytes .* not 1"),
        (b"\x02" + bytes(32), "65 bytes .* not 33"),  # compressed: not taken
        (point(VECTOR_X, VECTOR_Y)[1:], "65 bytes .* not 64"),
        (point(VECTOR_X, VECTOR_Y) + b"\x00", "65 bytes .* not 66"),
        (b"\x03" + point(VECTOR_X, VECTOR_Y)[1:], "uncompressed point .* not 0x03"),
        (point(VECTOR_X, VECTOR_Y + 1), "not on the SM2 curve"),
        (point(0, 0), "not on the SM2 curve"),
        (b"\x04" + b"\xff" * 64, "below the prime"),  # x and y >= p
        (point(gm.P, VECTOR_Y), "below the prime"),  # x = p, congruent to 0
    ],
    ids=lambda value: value.hex()[:12] if isinstance(value, bytes) else None,
)
def test_public_key_bytes_are_refused_with_the_reason(encoded: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        gm.SM2PublicKey.from_bytes(encoded)


HOSTILE_SIGNATURES = {
    "empty": b"",
    "truncated": VECTOR_SIGNATURE[:-1],
    "overlong": VECTOR_SIGNATURE + b"\x00",
    "doubled": VECTOR_SIGNATURE * 2,
    "DER instead of raw": encode_dss_signature(VECTOR_R, VECTOR_S),
    "r = 0": signature_of(0, VECTOR_S),
    "s = 0": signature_of(VECTOR_R, 0),
    "r = n": signature_of(N, VECTOR_S),
    "s = n": signature_of(VECTOR_R, N),
    "r = n - 1": signature_of(N - 1, VECTOR_S),
    "n - s": signature_of(VECTOR_R, N - VECTOR_S),
    "all ones": b"\xff" * 64,
    "all zeros": bytes(64),
    "r + s = n": signature_of(VECTOR_R, N - VECTOR_R),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_SIGNATURES))
def test_hostile_signatures_raise_invalid_signature_only(name: str) -> None:
    public = gm.SM2PublicKey.from_bytes(point(VECTOR_X, VECTOR_Y))
    with pytest.raises(InvalidSignature):
        public.verify(HOSTILE_SIGNATURES[name], VECTOR_MESSAGE)


@settings(max_examples=150, deadline=None)
@given(signature=st.binary(min_size=0, max_size=80), message=st.binary(max_size=64))
def test_random_bytes_never_verify_and_raise_only_invalid_signature(
    signature: bytes, message: bytes
) -> None:
    public = gm.SM2PublicKey.from_bytes(point(VECTOR_X, VECTOR_Y))
    with pytest.raises(InvalidSignature):
        public.verify(signature, message)


@settings(max_examples=150, deadline=None)
@given(encoded=st.binary(min_size=0, max_size=70))
def test_random_public_key_bytes_raise_only_value_error(encoded: bytes) -> None:
    with pytest.raises(ValueError):
        gm.SM2PublicKey.from_bytes(encoded)


def test_failures_leave_libcrypto_error_queue_empty(key: gm.SM2PrivateKey) -> None:
    # Python's ssl and hashlib read the same (per-thread) queue: a stale error there would
    # be reported as theirs.
    libcrypto = ctypes.CDLL("libcrypto.so.3")
    libcrypto.ERR_peek_error.restype = ctypes.c_ulong
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature_of(1, 1), b"x")
    with pytest.raises(KeyMaterialError):
        gm.SM2PrivateKey.from_pem(key.to_pem(b"a"), b"b")
    with pytest.raises(KeyMaterialError):
        gm.SM2PrivateKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert libcrypto.ERR_peek_error() == 0


def test_keys_sign_and_verify_from_many_threads(key: gm.SM2PrivateKey) -> None:
    public = key.public_key()
    failures: list[str] = []

    def work(worker: int) -> None:
        for i in range(40):
            message = f"{worker}:{i}".encode()
            signature = key.sign(message)
            try:
                public.verify(signature, message)
            except InvalidSignature:
                failures.append(message.decode())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc/self/statm")
def test_keys_and_calls_free_what_libcrypto_allocates(key: gm.SM2PrivateKey) -> None:
    def resident_kib() -> int:
        return (
            int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE") // 1024
        )

    public = key.public_key()
    encoded = public.to_bytes()
    signature = key.sign(b"x")

    def churn(times: int) -> None:
        for _ in range(times):
            gm.SM2PublicKey.from_bytes(encoded)  # an EVP_PKEY made and dropped
            public.verify(signature, b"x")  # two contexts made and freed
            with pytest.raises(InvalidSignature):
                public.verify(signature, b"y")

    churn(300)  # allocator and caches warmed up
    before = resident_kib()
    churn(2000)
    # A leak of one key or context per call would be well over a kilobyte each: megabytes.
    assert resident_kib() - before < 1024


def test_sm2_backend_names_openssl_3() -> None:
    assert gm.sm2_backend().startswith("OpenSSL 3.")
