"""A terminal's identity: its id, scene, site and service, its own key and the pinned root key.

Provisioning creates the terminal's key (Ed25519, or SM2 under the GM crypto profile; in a
0600 file that never leaves the terminal), registers the public half with the service under
an operator's token, and pins the city's root key from a file the operator hands over.
Everything lives in the terminal's directory: ``terminal.json``, ``terminal-key.pem`` and
``root.json``. Loading refuses a directory or file that another user owns, that others can
write to, or that is a symbolic link (idcode.secretfiles), as the key store does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from idcode.bundle import load_root_jwk
from idcode.config import core_settings
from idcode.cose import Algorithm
from idcode.errors import ProvisioningError
from idcode.gm import SM2PrivateKey
from idcode.jws import SM2Algorithm
from idcode.scenes import scene_names
from idcode.secretfiles import (
    check_private,
    check_trusted_directory,
    check_trusted_file,
    ensure_private_directory,
    write_secret_file,
)

IDENTITY_FILE = "terminal.json"
KEY_FILE = "terminal-key.pem"
ROOT_FILE = "root.json"
#: A terminal's key: it signs its request tokens with ``alg`` EdDSA, or ``SM2`` (idcode.jws).
TerminalKey = Ed25519PrivateKey | SM2PrivateKey


@dataclass(frozen=True)
class TerminalIdentity:
    id: str
    scene: str
    site: str
    server: str
    private_key: TerminalKey
    root_jwk: dict[str, Any]

    @property
    def alg(self) -> str:
        """The JWS ``alg`` of its request tokens: its key's."""
        return key_algorithm(self.private_key).jose_name

    @property
    def public_jwk(self) -> dict[str, Any]:
        return public_jwk_of(self.private_key)

    def check(self, *, scene: str | None, site: str | None, server: str | None) -> None:
        """Refuse to run as another scene, site or service than the one provisioned."""
        for name, given, held in (
            ("scene", scene, self.scene),
            ("site", site, self.site),
            ("server", server.rstrip("/") if server else None, self.server),
        ):
            if given is not None and given != held:
                raise ProvisioningError(
                    f"this terminal was provisioned with {name} {held!r}, not {given!r}; "
                    "provision a new terminal directory to change it"
                )


def new_terminal_key(alg: Algorithm = Algorithm.EDDSA) -> TerminalKey:
    """A new key of ``alg``: the crypto profile's ``terminal_key_algorithm`` when provisioning."""
    if alg is Algorithm.SM2:
        return SM2PrivateKey.generate()
    if alg is Algorithm.EDDSA:
        return Ed25519PrivateKey.generate()
    raise ValueError(f"a terminal key is Ed25519 or SM2, not {alg.jose_name}")


def key_algorithm(private_key: TerminalKey) -> Algorithm:
    return Algorithm.SM2 if isinstance(private_key, SM2PrivateKey) else Algorithm.EDDSA


def public_jwk_of(private_key: TerminalKey) -> dict[str, Any]:
    """The public JWK the service registers: OKP Ed25519, or EC SM2 with ``alg`` SM2."""
    if isinstance(private_key, SM2PrivateKey):
        return SM2Algorithm.to_jwk(private_key, as_dict=True)
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    return jwk


def save(directory: Path, identity: TerminalIdentity) -> None:
    ensure_private_directory(directory)
    key = identity.private_key
    if isinstance(key, SM2PrivateKey):
        pem = key.to_pem()
    else:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    write_secret_file(directory / KEY_FILE, pem, replace=True)
    write_secret_file(
        directory / ROOT_FILE, json.dumps(identity.root_jwk, indent=2).encode(), replace=True
    )
    document = {
        "id": identity.id,
        "scene": identity.scene,
        "site": identity.site,
        "server": identity.server,
        "alg": identity.alg,
    }
    # Written last: a terminal directory with terminal.json is complete.
    write_secret_file(
        directory / IDENTITY_FILE, json.dumps(document, indent=2).encode(), replace=True
    )


def is_provisioned(directory: Path) -> bool:
    return (directory / IDENTITY_FILE).exists()


def load(directory: Path) -> TerminalIdentity:
    if not is_provisioned(directory):
        raise ProvisioningError(f"{directory} holds no provisioned terminal ({IDENTITY_FILE})")
    try:
        # The pinned root key decides what this terminal trusts: whoever could replace it (or
        # the directory around it) could make the terminal accept codes they signed.
        check_trusted_directory(directory)
        for name in (IDENTITY_FILE, KEY_FILE):
            check_private(directory / name)
        check_trusted_file(directory / ROOT_FILE)
        document = json.loads((directory / IDENTITY_FILE).read_text())
        profile = core_settings().profile
        private_key: object
        if document.get("alg") == Algorithm.SM2.jose_name:
            # cryptography has no SM2 curve: idcode.gm reads what it wrote.
            private_key = SM2PrivateKey.from_pem((directory / KEY_FILE).read_bytes())
        else:
            private_key = serialization.load_pem_private_key(
                (directory / KEY_FILE).read_bytes(), password=None
            )
        root_jwk = load_root_jwk(json.loads((directory / ROOT_FILE).read_text()), profile)
    except (OSError, ValueError) as exc:
        raise ProvisioningError(f"cannot read the terminal in {directory}: {exc}") from None
    if not isinstance(private_key, Ed25519PrivateKey | SM2PrivateKey):
        raise ProvisioningError("the terminal key must be Ed25519 or SM2")
    alg = key_algorithm(private_key)
    if alg is not profile.terminal_key_algorithm:
        # Its service would refuse every token: say so here, not at each request.
        raise ProvisioningError(
            f"the terminal in {directory} signs with {alg.jose_name}, but the {profile.name} "
            f"crypto profile's terminals sign with {profile.terminal_key_algorithm.jose_name}: "
            f"set IDCODE_CRYPTO_PROFILE to the terminal's profile, or provision it again"
        )
    if document.get("scene") not in scene_names():
        raise ProvisioningError(f"unknown scene in {directory / IDENTITY_FILE}")
    return TerminalIdentity(
        id=str(document["id"]),
        scene=document["scene"],
        site=str(document["site"]),
        server=str(document["server"]),
        private_key=private_key,
        root_jwk=root_jwk,
    )
