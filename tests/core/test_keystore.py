"""The file key store: creation, permissions, passphrases, key ids, rotation and JWKS export."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from idcode.codetext import prefix_for
from idcode.cose import Algorithm
from idcode.errors import KeyStoreError, UnsafeFileError
from idcode.gm import SM2PrivateKey
from idcode.issuer import MAX_TTL, mint_code
from idcode.keys import KID_ALPHABET, PrivateKey, PublicKey, Signer, jwks, keys_from_jwks
from idcode.keystore import (
    RETAIN_AFTER_SIGNING,
    FileKeyStore,
    SigningKeyCache,
    initialise,
    open_key_store,
    rotate,
)
from idcode.reasons import Reason
from idcode.testing import random_card
from idcode.verifier import Trust, Verdict, verify

NOW = 1_800_000_000  # a fixed clock: the key store takes time as an argument
DAY = 86_400
PREFIX = prefix_for()


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"  # does not exist yet: the store creates it


@pytest.fixture
def store(keys_dir: Path) -> FileKeyStore:
    return open_key_store(keys_dir)


@pytest.fixture
def rooted(store: FileKeyStore) -> FileKeyStore:
    """A store with only its root key (which signs the manifest of issuer keys)."""
    store.create_root_key()
    return store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _mint(signer: Signer, at: int, ttl: int = 60) -> str:
    code, _ = mint_code(random_card(), signer, prefix=PREFIX, now=at, ttl=ttl)
    return code


def _verify(
    code: str,
    keys: list[PublicKey],
    at: int,
    algorithms: tuple[Algorithm, ...] = (Algorithm.EDDSA,),
    clock_skew: int = 30,
) -> Verdict:
    trust = Trust.of(keys, prefix=PREFIX, algorithms=algorithms, clock_skew=clock_skew)
    return verify(code, trust, at)


def _kids(keys: list[PublicKey]) -> set[str]:
    return {key.kid for key in keys}


# -- first use ---------------------------------------------------------------------------


def test_first_use_creates_the_directory_with_mode_0700(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)

    assert keys_dir.is_dir()
    assert _mode(keys_dir) == 0o700


def test_first_use_creates_a_root_key_and_one_issuer_key(
    store: FileKeyStore, keys_dir: Path
) -> None:
    created = initialise(store, NOW, 90)

    assert len(created) == 2
    assert created[0].startswith("root key root-")
    assert created[1].startswith("issuer key ")
    assert store.root_key().kid.startswith("root-")
    issuer_keys = store.issuer_keys()
    assert len(issuer_keys) == 1
    assert issuer_keys[0].not_before == NOW
    assert issuer_keys[0].not_after == NOW + 90 * DAY
    assert store.signing_key(NOW).kid == issuer_keys[0].kid
    assert sorted(p.name for p in keys_dir.iterdir()) == sorted(
        [
            ".lock",  # held while creating keys, so replicas starting together agree
            "root.pem",
            "root.json",
            "manifest.jwt",  # the issuer keys the store wrote, signed by the root key
            f"issuer-{ord(issuer_keys[0].kid):02x}.pem",
            f"issuer-{ord(issuer_keys[0].kid):02x}.json",
        ]
    )


def test_private_key_files_are_created_with_mode_0600(store: FileKeyStore, keys_dir: Path) -> None:
    initialise(store, NOW, 90)

    pem_files = sorted(keys_dir.glob("*.pem"))
    assert len(pem_files) == 2
    for path in pem_files:
        assert _mode(path) == 0o600, path.name


def test_initialise_a_second_time_creates_nothing(store: FileKeyStore, keys_dir: Path) -> None:
    initialise(store, NOW, 90)
    before = {path.name: path.read_bytes() for path in keys_dir.iterdir()}

    created = initialise(store, NOW + 60, 90)

    assert created == []
    assert {path.name: path.read_bytes() for path in keys_dir.iterdir()} == before


def test_initialise_adds_an_issuer_key_but_no_root_when_no_key_signs_any_more(
    store: FileKeyStore,
) -> None:
    initialise(store, NOW, 1)
    root_kid = store.root_key().kid

    created = initialise(store, NOW + 2 * DAY, 1)

    assert len(created) == 1
    assert created[0].startswith("issuer key ")
    assert store.root_key().kid == root_kid
    assert len(store.issuer_keys()) == 2


# -- passphrases and permissions -----------------------------------------------------------


def test_with_a_passphrase_private_key_files_are_encrypted(keys_dir: Path) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90)

    pem_files = sorted(keys_dir.glob("*.pem"))
    assert len(pem_files) == 2
    for path in pem_files:
        assert b"ENCRYPTED" in path.read_bytes(), path.name


def test_encrypted_keys_load_and_sign_with_the_right_passphrase(keys_dir: Path) -> None:
    store = open_key_store(keys_dir, "correct horse")
    initialise(store, NOW, 90)

    reopened = open_key_store(keys_dir, "correct horse")
    code = _mint(reopened.signing_key(NOW), NOW)

    assert reopened.root_key().kid == store.root_key().kid
    assert _verify(code, reopened.published_keys(NOW), NOW).reason is Reason.OK


def test_encrypted_key_with_a_wrong_passphrase_is_refused_with_a_clear_message(
    keys_dir: Path,
) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90)

    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        open_key_store(keys_dir, "battery staple").signing_key(NOW)
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        open_key_store(keys_dir, "battery staple").root_key()


def test_encrypted_key_without_a_passphrase_asks_for_idcode_key_passphrase(
    keys_dir: Path,
) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90)

    with pytest.raises(KeyStoreError, match="encrypted; set IDCODE_KEY_PASSPHRASE"):
        open_key_store(keys_dir).signing_key(NOW)


def test_an_empty_passphrase_is_refused_rather_than_writing_keys_in_the_clear(
    keys_dir: Path,
) -> None:
    with pytest.raises(KeyStoreError, match="set but empty"):
        open_key_store(keys_dir, "")


def test_unencrypted_key_opened_with_a_passphrase_is_refused_with_a_clear_message(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)

    with pytest.raises(KeyStoreError, match="not encrypted but a passphrase was given"):
        open_key_store(keys_dir, "correct horse").signing_key(NOW)


def test_public_keys_are_readable_without_the_passphrase(keys_dir: Path) -> None:
    store = open_key_store(keys_dir, "correct horse")
    initialise(store, NOW, 90)

    assert _kids(open_key_store(keys_dir).published_keys(NOW)) == _kids(store.issuer_keys())


# -- Argon2id key files (docs/keys.md, "Encrypted key files") ------------------------------

PASSPHRASE = "correct horse"  # noqa: S105 (the test stores' passphrase, not a secret)


def _envelope(path: Path) -> dict[str, Any]:
    """The JSON inside a key file, read the way docs/keys.md describes it."""
    lines = path.read_text("ascii").strip().splitlines()
    assert lines[0] == "-----BEGIN IDCODE ENCRYPTED PRIVATE KEY-----"
    assert lines[-1] == "-----END IDCODE ENCRYPTED PRIVATE KEY-----"
    document: dict[str, Any] = json.loads(base64.b64decode("".join(lines[1:-1])))
    return document


def _write_envelope(path: Path, document: dict[str, Any]) -> None:
    body = base64.b64encode(json.dumps(document).encode()).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = "\n".join(
        [
            "-----BEGIN IDCODE ENCRYPTED PRIVATE KEY-----",
            *lines,
            "-----END IDCODE ENCRYPTED PRIVATE KEY-----",
        ]
    )
    _replace_key_file(path, (text + "\n").encode())


def _replace_key_file(path: Path, content: bytes) -> None:
    path.unlink()
    path.write_bytes(content)
    path.chmod(0o600)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def sealed_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store written with a passphrase, made once: each test copies it (an Argon2id
    derivation per file written is the cost this module would otherwise pay per test)."""
    directory = tmp_path_factory.mktemp("sealed") / "keys"
    initialise(open_key_store(directory, PASSPHRASE), NOW, 90)
    return directory


@pytest.fixture
def sealed(sealed_store_template: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    shutil.copytree(sealed_store_template, directory)  # modes kept: 0700, files 0600
    return directory


def _issuer_pem(keys_dir: Path) -> Path:
    (path,) = keys_dir.glob("issuer-*.pem")
    return path


def _as_written_by_a_pbkdf2_release(keys_dir: Path, passphrase: str = PASSPHRASE) -> None:
    """Rewrite each private key file as releases before Argon2id did: PKCS#8 PEM encrypted
    with cryptography's BestAvailableEncryption (PBES2, PBKDF2)."""
    store = open_key_store(keys_dir, passphrase)
    keys: dict[Path, PrivateKey] = {
        keys_dir / "root.pem": store.root_key().private_key,
        _issuer_pem(keys_dir): store.signing_key(NOW).private_key,
    }
    for path, private_key in keys.items():
        assert not isinstance(private_key, SM2PrivateKey)
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        )
        _replace_key_file(path, pem)


def test_key_files_are_argon2id_envelopes_with_rfc_9106_second_recommended_parameters(
    sealed: Path,
) -> None:
    root = _envelope(sealed / "root.pem")
    issuer = _envelope(_issuer_pem(sealed))
    kid = open_key_store(sealed).issuer_keys()[0].kid

    assert (root["v"], root["key"], issuer["key"]) == (1, "root", f"issuer:{kid}")
    for document in (root, issuer):
        kdf = document["kdf"]
        assert (kdf["alg"], kdf["v"], kdf["m"], kdf["t"], kdf["p"]) == ("argon2id", 19, 65536, 3, 4)
        assert len(_unb64url(kdf["salt"])) == 16
        assert document["aead"]["alg"] == "A256GCM"
    assert root["kdf"]["salt"] != issuer["kdf"]["salt"]  # a salt per file


def test_a_key_file_decrypts_by_the_documented_steps_alone(sealed: Path) -> None:
    """An independent reader of docs/keys.md: Argon2id over the passphrase, then AES-256-GCM
    with the canonical JSON of the other fields as associated data, gives PKCS#8 DER."""
    document = _envelope(sealed / "root.pem")
    kdf = document["kdf"]
    kek = Argon2id(
        salt=_unb64url(kdf["salt"]),
        length=32,
        iterations=kdf["t"],
        lanes=kdf["p"],
        memory_cost=kdf["m"],
    ).derive(PASSPHRASE.encode())
    header = {name: value for name, value in document.items() if name != "ct"}
    associated = (
        b"idcode-key-file\n" + json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    )
    der = AESGCM(kek).decrypt(
        _unb64url(document["aead"]["nonce"]), _unb64url(document["ct"]), associated
    )
    private_key = serialization.load_der_private_key(der, None)

    assert isinstance(private_key, Ed25519PrivateKey)
    assert _root_x(private_key) == open_key_store(sealed).root_public_jwk()["x"]


def _root_x(private_key: Ed25519PrivateKey) -> str:
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return _b64url(raw)


def test_a_store_written_with_pbkdf2_opens_and_signs_without_being_rewritten(
    sealed: Path,
) -> None:
    _as_written_by_a_pbkdf2_release(sealed)
    before = {path: path.read_bytes() for path in sealed.glob("*.pem")}

    store = open_key_store(sealed, PASSPHRASE)
    code = _mint(store.signing_key(NOW), NOW)
    root = store.root_key()

    assert _verify(code, store.published_keys(NOW), NOW).reason is Reason.OK
    assert root.kid == store.root_kid()
    assert {path: path.read_bytes() for path in sealed.glob("*.pem")} == before  # read only
    assert all(b"BEGIN ENCRYPTED PRIVATE KEY" in pem for pem in before.values())


def test_rotation_rewrites_a_pbkdf2_store_as_argon2id_key_files_holding_the_same_keys(
    sealed: Path,
) -> None:
    _as_written_by_a_pbkdf2_release(sealed)
    store = open_key_store(sealed, PASSPHRASE)
    old_kid = store.signing_key(NOW).kid
    old_code = _mint(store.signing_key(NOW), NOW)
    root_x = _root_x(_ed25519(store.root_key().private_key))

    new_kid = rotate(store, NOW, 90, starts_in=DAY).kid
    reopened = open_key_store(sealed, PASSPHRASE)

    pem_files = sorted(sealed.glob("*.pem"))
    assert len(pem_files) == 3
    assert {_envelope(path)["key"] for path in pem_files} == {
        "root",
        f"issuer:{old_kid}",
        f"issuer:{new_kid}",
    }
    assert _root_x(_ed25519(reopened.root_key().private_key)) == root_x
    # The old key, rewritten, still signs until the switch, and its earlier code verifies.
    assert reopened.signing_key(NOW).kid == old_kid
    published = reopened.published_keys(NOW)
    assert _verify(_mint(reopened.signing_key(NOW), NOW), published, NOW).reason is Reason.OK
    assert _verify(old_code, published, NOW).reason is Reason.OK
    assert reopened.signing_key(NOW + DAY).kid == new_kid


def test_upgrading_key_files_rewrites_only_pbkdf2_ones_and_is_a_no_op_without_a_passphrase(
    sealed: Path,
) -> None:
    _as_written_by_a_pbkdf2_release(sealed)

    without = open_key_store(sealed).upgrade_key_files()
    rewritten = open_key_store(sealed, PASSPHRASE).upgrade_key_files()
    again = open_key_store(sealed, PASSPHRASE).upgrade_key_files()

    assert without == []
    assert sorted(rewritten) == sorted(sealed.glob("*.pem"))
    assert again == []
    assert (
        _verify(
            _mint(open_key_store(sealed, PASSPHRASE).signing_key(NOW), NOW),
            open_key_store(sealed).published_keys(NOW),
            NOW,
        ).reason
        is Reason.OK
    )


def test_a_pbkdf2_file_holding_another_key_is_not_rewritten_and_still_refused_to_sign(
    sealed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _as_written_by_a_pbkdf2_release(sealed)
    issuer_pem = _issuer_pem(sealed)
    stranger = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )
    _replace_key_file(issuer_pem, stranger)

    rewritten = open_key_store(sealed, PASSPHRASE).upgrade_key_files()

    assert rewritten == [sealed / "root.pem"]
    assert issuer_pem.read_bytes() == stranger
    assert "not re-encrypting" in caplog.text
    with pytest.raises(KeyStoreError, match="does not hold the private half"):
        open_key_store(sealed, PASSPHRASE).signing_key(NOW)


def _edit(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(document: dict[str, Any]) -> None:
        target = document
        *parents, name = field.split(".")
        for parent in parents:
            target = target[parent]
        target[name] = value

    return edit


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    return lambda document: document.pop(field)


def _flip_ciphertext(document: dict[str, Any]) -> None:
    ciphertext = bytearray(_unb64url(document["ct"]))
    ciphertext[len(ciphertext) // 2] ^= 0x01
    document["ct"] = _b64url(bytes(ciphertext))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_edit("v", 2), "format version 2; this idcode reads version 1"),
        (_edit("kdf.m", 1), r"memory cost m=1 KiB is below the floor of 65536 KiB"),
        (_edit("kdf.t", 1), r"iterations t=1 is below the floor of 3"),
        (_edit("kdf.p", 0), r"lanes p=0 is below the floor of 1"),
        (_edit("kdf.m", 2**32 - 1), r"m=4294967295 KiB is above the 262144 KiB idcode accepts"),
        (_edit("kdf.t", 2**31), r"t=2147483648 is above the 10 idcode accepts"),
        (_edit("kdf.p", 2**24 - 1), r"p=16777215 is above the 16 idcode accepts"),
        (_edit("kdf.m", "65536"), "parameter m is not an integer"),
        (_edit("kdf.alg", "pbkdf2"), "key derivation 'pbkdf2'"),
        (_edit("kdf.salt", _b64url(b"short")), "salt has 5 bytes"),
        (_edit("aead.alg", "A128GCM"), "cipher 'A128GCM'"),
        (_edit("aead.nonce", "not base64url!"), "'nonce' is not base64url"),
        (_edit("ct", _b64url(b"x" * 16)), "ciphertext has 16 bytes"),
        (_drop("aead"), "is not a valid idcode key file: it has the fields"),
        (_edit("key", "root"), r"holds the private key of 'root', not of 'issuer:"),
        # Changes within the accepted bounds are caught by the associated data.
        (_edit("kdf.p", 1), "wrong passphrase, or the file was altered"),
        (_edit("kdf.m", 131072), "wrong passphrase, or the file was altered"),
        (_flip_ciphertext, "wrong passphrase, or the file was altered"),
    ],
)
def test_a_hostile_key_file_is_refused_with_a_precise_reason_before_any_costly_derivation(
    sealed: Path, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    issuer_pem = _issuer_pem(sealed)
    document = _envelope(issuer_pem)
    edit(document)
    _write_envelope(issuer_pem, document)

    with pytest.raises(KeyStoreError, match=message) as refused:
        open_key_store(sealed, PASSPHRASE).signing_key(NOW)
    assert str(issuer_pem) in str(refused.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda pem: pem[: len(pem) // 2], "is truncated: it has no '-----END"),
        (lambda pem: pem.replace(b"\n", b"\n!", 1), "body is not base64 of a JSON document"),
        (
            lambda pem: (
                b"-----BEGIN IDCODE ENCRYPTED PRIVATE KEY-----\nWzFd\n"
                b"-----END IDCODE ENCRYPTED PRIVATE KEY-----\n"
            ),
            "not a JSON object",
        ),
        (lambda pem: pem + b" " * 20_000, "larger than any key file idcode writes"),
        (lambda pem: pem.replace(b"BEGIN IDCODE", b"BEGIN\xffIDCODE"), "wrong passphrase or not"),
    ],
)
def test_a_damaged_key_file_is_refused_with_a_precise_reason(
    sealed: Path, content: Callable[[bytes], bytes], message: str
) -> None:
    root_pem = sealed / "root.pem"
    _replace_key_file(root_pem, content(root_pem.read_bytes()))

    with pytest.raises(KeyStoreError, match=message):
        open_key_store(sealed, PASSPHRASE).root_key()


def test_swapped_key_files_are_refused_naming_whose_key_the_file_holds(sealed: Path) -> None:
    issuer_pem = _issuer_pem(sealed)
    _replace_key_file(issuer_pem, (sealed / "root.pem").read_bytes())

    with pytest.raises(KeyStoreError, match="holds the private key of 'root', not of 'issuer:"):
        open_key_store(sealed, PASSPHRASE).signing_key(NOW)

    # Relabelled to pass for the issuer key: the associated data still binds it to the root.
    relabelled = _envelope(issuer_pem)
    relabelled["key"] = "issuer:" + open_key_store(sealed).issuer_keys()[0].kid
    _write_envelope(issuer_pem, relabelled)
    with pytest.raises(KeyStoreError, match="wrong passphrase, or the file was altered"):
        open_key_store(sealed, PASSPHRASE).signing_key(NOW)


def test_an_argon2id_key_file_without_a_passphrase_asks_for_idcode_key_passphrase(
    sealed: Path,
) -> None:
    with pytest.raises(KeyStoreError, match="encrypted; set IDCODE_KEY_PASSPHRASE"):
        open_key_store(sealed).root_key()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_issuer_key_file_readable_by_others_is_refused_with_a_chmod_600_hint(
    store: FileKeyStore, keys_dir: Path, mode: int
) -> None:
    initialise(store, NOW, 90)
    (issuer_pem,) = keys_dir.glob("issuer-*.pem")
    issuer_pem.chmod(mode)

    with pytest.raises(KeyStoreError, match="chmod 600") as excinfo:
        store.signing_key(NOW)
    assert str(issuer_pem) in str(excinfo.value)


def test_root_key_file_readable_by_others_is_refused_with_a_chmod_600_hint(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    (keys_dir / "root.pem").chmod(0o644)

    with pytest.raises(KeyStoreError, match="chmod 600"):
        store.root_key()


def test_missing_private_key_file_is_a_key_store_error_naming_the_file(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    (issuer_pem,) = keys_dir.glob("issuer-*.pem")
    issuer_pem.unlink()

    with pytest.raises(KeyStoreError, match="missing") as excinfo:
        store.signing_key(NOW)
    assert str(issuer_pem) in str(excinfo.value)


# -- key ids ---------------------------------------------------------------------------------


def test_kids_are_single_ascii_letters_or_digits_distinct_across_all_keys(
    rooted: FileKeyStore,
) -> None:
    for _ in KID_ALPHABET:
        rooted.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)

    kids = [key.kid for key in rooted.issuer_keys()]
    assert len(kids) == len(KID_ALPHABET) == 62
    assert set(kids) == set(KID_ALPHABET)
    for kid in kids:
        assert len(kid) == 1
        assert kid.isascii()
        assert kid.isalnum()


def test_creating_a_key_when_every_kid_is_taken_says_to_delete_retired_keys(
    rooted: FileKeyStore,
) -> None:
    for _ in KID_ALPHABET:
        rooted.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)

    with pytest.raises(KeyStoreError, match="delete retired issuer keys"):
        rooted.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)


def test_key_file_names_use_the_hex_kid_so_lower_and_upper_case_kids_cannot_collide(
    rooted: FileKeyStore, keys_dir: Path
) -> None:
    for _ in KID_ALPHABET:
        rooted.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)

    names = [path.name for path in keys_dir.glob("issuer-*")]
    assert len(names) == 2 * len(KID_ALPHABET)
    # On a case-insensitive file system these names would still all be different.
    assert len({name.lower() for name in names}) == len(names)
    assert (keys_dir / "issuer-61.pem").exists()  # kid 'a'
    assert (keys_dir / "issuer-41.pem").exists()  # kid 'A'
    meta_a = json.loads((keys_dir / "issuer-61.json").read_text())
    meta_upper_a = json.loads((keys_dir / "issuer-41.json").read_text())
    assert meta_a["public_jwk"]["kid"] == "a"
    assert meta_upper_a["public_jwk"]["kid"] == "A"


def test_a_key_signing_period_must_end_after_it_starts(rooted: FileKeyStore) -> None:
    with pytest.raises(KeyStoreError, match="must end after it starts"):
        rooted.create_issuer_key(Algorithm.EDDSA, NOW, NOW)


# -- signing key -----------------------------------------------------------------------------


def test_signing_key_on_an_empty_store_raises_key_store_error(store: FileKeyStore) -> None:
    with pytest.raises(KeyStoreError, match="no issuer key"):
        store.signing_key(NOW)


def test_signing_key_raises_key_store_error_before_and_after_every_signing_period(
    store: FileKeyStore,
) -> None:
    initialise(store, NOW, 1)

    assert store.signing_key(NOW).kid == store.signing_key(NOW + DAY - 1).kid
    with pytest.raises(KeyStoreError, match="may sign now"):
        store.signing_key(NOW - 1)
    with pytest.raises(KeyStoreError, match="may sign now"):
        store.signing_key(NOW + DAY)


def test_root_key_on_an_empty_store_raises_key_store_error(store: FileKeyStore) -> None:
    with pytest.raises(KeyStoreError, match="no root key"):
        store.root_key()


# -- rotation ----------------------------------------------------------------------------------

SWITCH_IN = 3_600


@pytest.fixture
def rotated(store: FileKeyStore) -> tuple[FileKeyStore, str, str]:
    """A store whose first key signs from NOW; a second key rotated in at NOW + SWITCH_IN."""
    initialise(store, NOW, 90)
    old_kid = store.signing_key(NOW).kid
    new_kid = rotate(store, NOW, 90, starts_in=SWITCH_IN).kid
    return store, old_kid, new_kid


def test_rotation_gives_the_new_key_a_different_kid(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    _, old_kid, new_kid = rotated

    assert new_kid != old_kid


def test_rotated_key_is_published_immediately(rotated: tuple[FileKeyStore, str, str]) -> None:
    store, old_kid, new_kid = rotated

    assert _kids(store.published_keys(NOW)) == {old_kid, new_kid}


def test_old_key_keeps_signing_until_the_switch_and_the_new_key_signs_from_it(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, new_kid = rotated

    assert store.signing_key(NOW).kid == old_kid
    assert store.signing_key(NOW + SWITCH_IN - 1).kid == old_kid
    assert store.signing_key(NOW + SWITCH_IN).kid == new_kid
    assert store.signing_key(NOW + 90 * DAY).kid == new_kid


def test_codes_from_the_old_key_before_the_switch_still_verify_after_it(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, _ = rotated
    issued = NOW + SWITCH_IN - 10
    code = _mint(store.signing_key(issued), issued, ttl=60)

    checked = NOW + SWITCH_IN + 20
    verdict = _verify(code, store.published_keys(checked), checked)

    assert verdict.reason is Reason.OK
    assert verdict.kid == old_kid


def test_codes_from_the_new_key_verify_from_the_switch(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, _, new_kid = rotated
    code = _mint(store.signing_key(NOW + SWITCH_IN), NOW + SWITCH_IN)

    verdict = _verify(code, store.published_keys(NOW + SWITCH_IN), NOW + SWITCH_IN + 1)

    assert verdict.reason is Reason.OK
    assert verdict.kid == new_kid


def test_old_key_used_after_the_switch_makes_codes_verifiers_refuse_as_unknown_key(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, _ = rotated
    stale_signer = store.signing_key(NOW)  # e.g. a process that loaded the key before rotating
    issued = NOW + SWITCH_IN + 5
    code = _mint(stale_signer, issued)

    verdict = _verify(code, store.published_keys(issued), issued)

    assert verdict.reason is Reason.UNKNOWN_KEY
    assert verdict.kid == old_kid


def test_old_key_stays_published_until_its_signing_end_plus_the_retention(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, new_kid = rotated
    old_end = NOW + SWITCH_IN

    assert _kids(store.published_keys(old_end)) == {old_kid, new_kid}
    assert _kids(store.published_keys(old_end + RETAIN_AFTER_SIGNING - 1)) == {old_kid, new_kid}
    assert _kids(store.published_keys(old_end + RETAIN_AFTER_SIGNING)) == {new_kid}


def test_longest_lived_code_from_the_old_key_verifies_until_it_expires_after_rotation(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, old_kid, _ = rotated
    issued = NOW + SWITCH_IN - 1  # the old key's last signing second
    code = _mint(store.signing_key(issued), issued, ttl=MAX_TTL)
    max_skew = 300
    last_valid = issued + MAX_TTL + max_skew - 1

    verdict = _verify(code, store.published_keys(last_valid), last_valid, clock_skew=max_skew)
    after = _verify(code, store.published_keys(last_valid + 1), last_valid + 1, clock_skew=max_skew)

    assert verdict.reason is Reason.OK
    assert verdict.kid == old_kid
    assert after.reason is Reason.EXPIRED


def test_rotation_cannot_start_a_key_in_the_past(store: FileKeyStore) -> None:
    initialise(store, NOW, 90)

    with pytest.raises(KeyStoreError, match="past"):
        rotate(store, NOW, 90, starts_in=-1)
    assert len(store.issuer_keys()) == 1


def test_end_signing_period_of_an_unknown_kid_is_a_key_store_error(store: FileKeyStore) -> None:
    initialise(store, NOW, 90)
    unused = next(kid for kid in KID_ALPHABET if kid != store.signing_key(NOW).kid)

    with pytest.raises(KeyStoreError, match="no issuer key"):
        store.end_signing_period(unused, NOW)


# -- ES256 and JWKS ------------------------------------------------------------------------------


def test_es256_keys_sign_codes_that_verify_with_es256_accepted(store: FileKeyStore) -> None:
    initialise(store, NOW, 90, Algorithm.ES256)
    signer = store.signing_key(NOW)
    code = _mint(signer, NOW)

    verdict = _verify(code, store.published_keys(NOW), NOW, algorithms=(Algorithm.ES256,))

    assert signer.alg is Algorithm.ES256
    assert store.issuer_keys()[0].alg is Algorithm.ES256
    assert verdict.reason is Reason.OK


def test_es256_codes_are_refused_by_a_verifier_accepting_only_eddsa(store: FileKeyStore) -> None:
    initialise(store, NOW, 90, Algorithm.ES256)
    code = _mint(store.signing_key(NOW), NOW)

    verdict = _verify(code, store.published_keys(NOW), NOW, algorithms=(Algorithm.EDDSA,))

    assert verdict.reason is Reason.UNSUPPORTED_ALG


def test_encrypted_es256_keys_load_with_the_passphrase(keys_dir: Path) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90, Algorithm.ES256)

    signer = open_key_store(keys_dir, "correct horse").signing_key(NOW)
    code = _mint(signer, NOW)

    assert signer.alg is Algorithm.ES256
    assert _verify(code, [signer.public], NOW, algorithms=(Algorithm.ES256,)).valid


def test_jwks_export_round_trips_through_keys_from_jwks(
    rotated: tuple[FileKeyStore, str, str],
) -> None:
    store, _, _ = rotated
    published = store.published_keys(NOW)

    document = json.loads(json.dumps(jwks(published)))
    loaded = keys_from_jwks(document)

    assert loaded == published
    assert [(k.kid, k.alg, k.not_before, k.not_after) for k in loaded] == [
        (k.kid, k.alg, k.not_before, k.not_after) for k in published
    ]


def test_jwks_export_holds_no_private_key_member(store: FileKeyStore, keys_dir: Path) -> None:
    initialise(store, NOW, 90)
    rotate(store, NOW, 90, Algorithm.ES256, starts_in=SWITCH_IN)

    document = jwks(store.published_keys(NOW))

    assert len(document["keys"]) == 2
    for jwk in document["keys"]:
        assert "d" not in jwk
    assert "d" not in store.root_key().public_jwk

    def members(value: object) -> set[str]:
        if isinstance(value, dict):
            return set(value).union(*(members(v) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(members(v) for v in value))
        return set()

    for meta in keys_dir.glob("*.json"):  # the public metadata files never hold one either
        # Parsed, not searched as text: a key's one-letter kid may itself be "d".
        assert "d" not in members(json.loads(meta.read_text())), meta


def test_codes_verify_with_keys_loaded_from_the_exported_jwks(store: FileKeyStore) -> None:
    initialise(store, NOW, 90)
    code = _mint(store.signing_key(NOW), NOW)

    keys = keys_from_jwks(json.loads(json.dumps(jwks(store.published_keys(NOW)))))

    assert _verify(code, keys, NOW).reason is Reason.OK


# -- a key store idcode cannot trust (outside review, issue 10 finding 2) ---------------------
#
# Writing keys always refused a directory others can write to; loading them did not, and
# published every issuer-*.json it found. Whoever could write to the directory got their key
# into /.well-known/jwks.json and into every root-signed trust bundle.

NOBODY = 65534


def _attacker_jwk(kid: str = "Z", not_before: int = NOW) -> tuple[Signer, dict[str, object]]:
    """An issuer key the attacker holds, and its public JWK as they would plant it."""
    from idcode.keys import IssuerKey

    key = IssuerKey.generate(kid, Algorithm.EDDSA, not_before, not_before + 365 * DAY)
    return key, key.public.to_jwk()


def _plant(keys_dir: Path, jwk: dict[str, object], with_private: Signer | None = None) -> Path:
    """Drop an issuer-<hex>.json (and its .pem) as the reviewer's reproducer does."""
    from cryptography.hazmat.primitives import serialization

    kid = str(jwk["kid"])
    meta = keys_dir / f"issuer-{ord(kid):02x}.json"
    meta.write_text(json.dumps({"public_jwk": jwk}))
    meta.chmod(0o600)
    if with_private is not None:
        pem = keys_dir / f"issuer-{ord(kid):02x}.pem"
        pem.write_bytes(
            with_private.private_key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pem.chmod(0o600)
    return meta


def _every_read(store: FileKeyStore) -> dict[str, object]:
    """Each way idcode reads a key store (service start, CLI commands)."""
    return {
        "issuer_keys": store.issuer_keys,
        "published_keys": lambda: store.published_keys(NOW),
        "signing_key": lambda: store.signing_key(NOW),
        "root_key": store.root_key,
        "root_public_jwk": store.root_public_jwk,
    }


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="changing a file's owner needs root"
)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o720, 0o702, 0o755 | 0o020])
def test_loading_a_key_directory_others_can_write_to_is_refused_naming_it(
    store: FileKeyStore, keys_dir: Path, mode: int
) -> None:
    initialise(store, NOW, 90)
    keys_dir.chmod(mode)
    _, jwk = _attacker_jwk()
    _plant(keys_dir, jwk)

    for name, read in _every_read(open_key_store(keys_dir)).items():
        with pytest.raises(UnsafeFileError, match="writable by group or others") as excinfo:
            read()  # type: ignore[operator]
        assert str(keys_dir) in str(excinfo.value), name


@needs_root
def test_loading_a_key_directory_another_user_owns_is_refused(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    os.chown(keys_dir, NOBODY, -1)

    for name, read in _every_read(open_key_store(keys_dir)).items():
        with pytest.raises(UnsafeFileError, match=f"owned by uid {NOBODY}") as excinfo:
            read()  # type: ignore[operator]
        assert str(keys_dir) in str(excinfo.value), name


@pytest.mark.parametrize("name", ["root.json", "manifest.jwt", "root.pem", "issuer.pem"])
@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_key_file_others_can_write_to_is_refused_on_load(
    store: FileKeyStore, keys_dir: Path, name: str, mode: int
) -> None:
    initialise(store, NOW, 90)
    path = next(keys_dir.glob("issuer-*.pem")) if name == "issuer.pem" else keys_dir / name
    path.chmod(mode)

    with pytest.raises(UnsafeFileError) as excinfo:
        reopened = open_key_store(keys_dir)
        reopened.published_keys(NOW)
        reopened.root_key()
        reopened.signing_key(NOW)
    assert str(path) in str(excinfo.value)


@needs_root
@pytest.mark.parametrize("name", ["root.json", "manifest.jwt", "root.pem", "issuer.pem"])
def test_a_key_file_another_user_owns_is_refused_on_load(
    store: FileKeyStore, keys_dir: Path, name: str
) -> None:
    initialise(store, NOW, 90)
    path = next(keys_dir.glob("issuer-*.pem")) if name == "issuer.pem" else keys_dir / name
    os.chown(path, NOBODY, -1)

    with pytest.raises(UnsafeFileError, match=f"owned by uid {NOBODY}") as excinfo:
        reopened = open_key_store(keys_dir)
        reopened.published_keys(NOW)
        reopened.root_key()
        reopened.signing_key(NOW)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("name", ["root.json", "manifest.jwt", "root.pem", "issuer.pem"])
def test_a_key_file_that_is_a_symbolic_link_is_refused_even_to_a_safe_target(
    store: FileKeyStore, keys_dir: Path, tmp_path: Path, name: str
) -> None:
    initialise(store, NOW, 90)
    path = next(keys_dir.glob("issuer-*.pem")) if name == "issuer.pem" else keys_dir / name
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    target = elsewhere / name
    path.rename(target)  # the same, unchanged file, only reached through a link now
    path.symlink_to(target)

    with pytest.raises(UnsafeFileError, match="symbolic link") as excinfo:
        reopened = open_key_store(keys_dir)
        reopened.published_keys(NOW)
        reopened.root_key()
        reopened.signing_key(NOW)
    assert str(path) in str(excinfo.value)


def test_a_key_directory_reached_through_a_link_is_checked_at_its_target(
    store: FileKeyStore, keys_dir: Path, tmp_path: Path
) -> None:
    initialise(store, NOW, 90)
    link = tmp_path / "mounted-keys"
    link.symlink_to(keys_dir)

    assert _kids(open_key_store(link).published_keys(NOW)) == _kids(store.issuer_keys())
    keys_dir.chmod(0o777)
    with pytest.raises(UnsafeFileError, match="writable by group or others"):
        open_key_store(link).published_keys(NOW)


def test_a_planted_issuer_key_in_a_safe_directory_is_not_published_and_its_codes_fail(
    store: FileKeyStore, keys_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    initialise(store, NOW, 90)
    ours = store.signing_key(NOW).kid
    attacker, jwk = _attacker_jwk(kid="Z" if ours != "Z" else "Y")
    planted = _plant(keys_dir, jwk)
    attacker_code = _mint(attacker, NOW)

    reopened = open_key_store(keys_dir)
    published = reopened.published_keys(NOW)

    assert _kids(published) == {ours}
    assert _verify(attacker_code, published, NOW).reason is Reason.UNKNOWN_KEY
    assert _verify(_mint(reopened.signing_key(NOW), NOW), published, NOW).reason is Reason.OK
    assert f"ignoring {planted}" in caplog.text


def test_a_planted_key_with_its_private_half_never_signs_nor_is_published(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    ours = store.signing_key(NOW).kid
    # Newer than ours, so today's store would have made it the signing key.
    attacker, jwk = _attacker_jwk(kid="Z" if ours != "Z" else "Y", not_before=NOW + 1)
    _plant(keys_dir, jwk, with_private=attacker)

    reopened = open_key_store(keys_dir)

    assert reopened.signing_key(NOW + 10).kid == ours
    assert _kids(reopened.published_keys(NOW + 10)) == {ours}


def test_a_replaced_issuer_private_key_is_refused_when_it_would_sign(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    (issuer_pem,) = keys_dir.glob("issuer-*.pem")
    attacker, _ = _attacker_jwk()
    issuer_pem.unlink()
    _plant(keys_dir, {"kid": "x"}, with_private=attacker)  # writes issuer-78.pem
    (keys_dir / "issuer-78.pem").rename(issuer_pem)
    (keys_dir / "issuer-78.json").unlink()

    with pytest.raises(KeyStoreError, match="does not hold the private half") as excinfo:
        open_key_store(keys_dir).signing_key(NOW)
    assert str(issuer_pem) in str(excinfo.value)


def test_a_tampered_manifest_is_refused(store: FileKeyStore, keys_dir: Path) -> None:
    initialise(store, NOW, 90)
    manifest = keys_dir / "manifest.jwt"
    header, payload, signature = manifest.read_text().strip().split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    _, jwk = _attacker_jwk()
    claims["keys"].append(jwk)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    manifest.write_text(f"{header}.{forged}.{signature}\n")

    with pytest.raises(KeyStoreError, match="does not verify with the root key") as excinfo:
        open_key_store(keys_dir).published_keys(NOW)
    assert str(manifest) in str(excinfo.value)


def test_a_manifest_signed_by_another_key_under_our_root_kid_is_refused(
    store: FileKeyStore, keys_dir: Path, tmp_path: Path
) -> None:
    initialise(store, NOW, 90)
    root_kid = store.root_key().kid
    _, jwk = _attacker_jwk()
    other = open_key_store(tmp_path / "attacker")
    forged = jwt.encode(
        {"iss": "idcode", "iat": NOW, "root": root_kid, "seq": 99, "keys": [jwk], "removed": []},
        _ed25519(other.create_root_key().private_key),
        algorithm="EdDSA",
        headers={"kid": root_kid, "typ": "idcode-key-manifest+jwt"},
    )
    (keys_dir / "manifest.jwt").write_text(forged + "\n")

    with pytest.raises(KeyStoreError, match="does not verify with the root key"):
        open_key_store(keys_dir).published_keys(NOW)


def test_a_swapped_root_json_cannot_vouch_for_a_forged_manifest(
    store: FileKeyStore, keys_dir: Path, tmp_path: Path
) -> None:
    initialise(store, NOW, 90)
    running = open_key_store(keys_dir)  # the service, which read the root key at start-up
    running.published_keys(NOW)
    # Someone replaces root.json and the manifest with their own root key's.
    attacker_store = open_key_store(tmp_path / "attacker")
    initialise(attacker_store, NOW, 90)
    for name in ("root.json", "manifest.jwt"):
        (keys_dir / name).write_bytes((tmp_path / "attacker" / name).read_bytes())

    with pytest.raises(KeyStoreError, match="does not verify with the root key"):
        running.published_keys(NOW)
    with pytest.raises(KeyStoreError, match="does not match the root public key"):
        open_key_store(keys_dir).root_key()  # bundles are never signed for that manifest


def test_an_older_manifest_put_back_does_not_bring_a_removed_key_back(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    first = store.signing_key(NOW).kid
    rotate(store, NOW, 90, starts_in=0)
    before_removal = (keys_dir / "manifest.jwt").read_bytes()
    running = open_key_store(keys_dir)
    running.published_keys(NOW)
    store.remove_issuer_key(first, NOW)
    assert first not in _kids(running.published_keys(NOW))

    (keys_dir / "manifest.jwt").write_bytes(before_removal)

    with pytest.raises(KeyStoreError, match="older"):
        running.published_keys(NOW)


def test_a_removed_kid_is_never_reused_even_when_its_renamed_files_are_deleted(
    rooted: FileKeyStore, keys_dir: Path
) -> None:
    removed = rooted.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY).kid
    rooted.remove_issuer_key(removed, NOW)
    for path in keys_dir.glob("removed-*"):
        path.unlink()

    for _ in range(len(KID_ALPHABET) - 1):
        assert rooted.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY).kid != removed
    with pytest.raises(KeyStoreError, match="key ids are in use"):
        rooted.create_issuer_key(Algorithm.EDDSA, NOW, NOW + DAY)


def test_the_manifest_lists_removed_kids_with_their_removal_time(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    kid = store.signing_key(NOW).kid
    store.remove_issuer_key(kid, NOW + 5)

    manifest = store.manifest()

    assert manifest.removed == {kid: NOW + 5}
    assert manifest.keys == {}
    assert sorted(p.name for p in keys_dir.glob("removed-*")) == sorted(
        [
            f"removed-{NOW + 5}-issuer-{ord(kid):02x}.json",
            f"removed-{NOW + 5}-issuer-{ord(kid):02x}.pem",
        ]
    )


# -- stores made before the manifest ----------------------------------------------------------


def _as_made_by_an_earlier_idcode(keys_dir: Path) -> None:
    (keys_dir / "manifest.jwt").unlink()


def test_a_store_without_a_manifest_gets_one_listing_only_keys_with_their_private_half(
    store: FileKeyStore, keys_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    initialise(store, NOW, 90)
    ours = store.signing_key(NOW).kid
    store.remove_issuer_key(ours, NOW)
    second = rotate(store, NOW, 90, starts_in=0).kid
    _as_made_by_an_earlier_idcode(keys_dir)
    attacker, jwk = _attacker_jwk(kid=next(k for k in "XYZ" if k not in {ours, second}))
    _plant(keys_dir, jwk)  # planted before the upgrade, without a private key
    attacker_code = _mint(attacker, NOW)

    upgraded = open_key_store(keys_dir)
    published = upgraded.published_keys(NOW)

    assert _kids(published) == {second}
    assert (keys_dir / "manifest.jwt").exists()
    assert upgraded.manifest().removed == {ours: NOW}
    assert _verify(attacker_code, published, NOW).reason is Reason.UNKNOWN_KEY
    assert "wrote" in caplog.text and "not adopting" in caplog.text


def test_an_encrypted_store_without_a_manifest_asks_for_the_passphrase_to_write_it(
    keys_dir: Path,
) -> None:
    initialise(open_key_store(keys_dir, "correct horse"), NOW, 90)
    _as_made_by_an_earlier_idcode(keys_dir)

    with pytest.raises(KeyStoreError, match="IDCODE_KEY_PASSPHRASE"):
        open_key_store(keys_dir).published_keys(NOW)
    assert len(open_key_store(keys_dir, "correct horse").published_keys(NOW)) == 1
    assert len(open_key_store(keys_dir).published_keys(NOW)) == 1  # then no passphrase needed


def test_a_store_without_a_manifest_in_an_unsafe_directory_is_refused_not_adopted(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    _as_made_by_an_earlier_idcode(keys_dir)
    keys_dir.chmod(0o777)

    with pytest.raises(UnsafeFileError):
        open_key_store(keys_dir).published_keys(NOW)
    assert not (keys_dir / "manifest.jwt").exists()


# -- the service's view: start-up and re-reads ------------------------------------------------


def test_the_service_view_refuses_to_start_on_a_directory_others_can_write_to(
    store: FileKeyStore, keys_dir: Path
) -> None:
    initialise(store, NOW, 90)
    keys_dir.chmod(0o777)

    with pytest.raises(UnsafeFileError):
        SigningKeyCache(open_key_store(keys_dir)).load(NOW)


def test_a_file_planted_while_the_service_runs_is_not_published_and_the_last_keys_stay(
    store: FileKeyStore, keys_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    initialise(store, NOW, 90)
    ours = store.signing_key(NOW).kid
    view = SigningKeyCache(open_key_store(keys_dir), recheck_seconds=1)
    view.load(NOW)
    assert view.signer(NOW).kid == ours
    _, jwk = _attacker_jwk(kid="Z" if ours != "Z" else "Y")

    _plant(keys_dir, jwk)  # in the safe directory: not in the manifest
    assert _kids(view.published(NOW + 2)) == {ours}
    keys_dir.chmod(0o777)  # the directory opened up, and another file dropped in
    _plant(keys_dir, {**jwk, "kid": "Q" if ours != "Q" else "R"})

    assert _kids(view.published(NOW + 4)) == {ours}
    assert view.signer(NOW + 4).kid == ours
    assert "keeping the issuer keys read before" in caplog.text
    assert caplog.text.count("keeping the issuer keys read before") == 1  # once, not per second
    view.published(NOW + 6)
    assert caplog.text.count("keeping the issuer keys read before") == 1


def _ed25519(key: object) -> Ed25519PrivateKey:
    """A root key of the standard profile, as pyjwt and these helpers take it."""
    assert isinstance(key, Ed25519PrivateKey)
    return key
