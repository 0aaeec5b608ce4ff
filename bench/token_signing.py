#!/usr/bin/env python3
"""Issuance with the issuer key on a PKCS#11 token (SoftHSM2) against the file key store.

Mints codes in this process (``mint_code``: claims, COSE, signature, base45), the way the
service's ``POST /v1/codes`` does after its database and Redis work, with each store's signer,
for EdDSA and ES256, alternately in several rounds so both see the same noise; then signs
trust bundles with each root key. Prints microseconds per code and the ratio token / file.

    .venv/bin/python bench/token_signing.py [--rounds R] [--codes N]

Needs SoftHSM2 (``apt-get install softhsm2``) and the [pkcs11] extra. The token lives in a
temporary directory (SOFTHSM2_CONF), removed at the end. The HTTP figure follows from these:
issuance costs the service about 1 ms of CPU per request besides the signature (bench/README.md),
so a signature's extra microseconds weigh in that proportion.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from idcode.bundle import sign_bundle  # noqa: E402
from idcode.config import TokenSettings  # noqa: E402
from idcode.cose import Algorithm  # noqa: E402
from idcode.issuer import mint_code  # noqa: E402
from idcode.keys import PublicKey, Signer  # noqa: E402
from idcode.keystore import (  # noqa: E402
    ManagedKeyStore,
    RootKey,
    initialise,
    open_key_store,
    rotate,
)
from idcode.statuslist import StatusList  # noqa: E402
from idcode.testing import random_card  # noqa: E402

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so")


def per_call_us(action: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - start) / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--codes", type=int, default=2000, help="codes per store per round")
    args = parser.parse_args()
    util = shutil.which("softhsm2-util")
    module = next((Path(m) for m in MODULES if Path(m).is_file()), None)
    if util is None or module is None:
        print("needs SoftHSM2: apt-get install softhsm2", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="idcode-bench-") as scratch:
        work = Path(scratch)
        (work / "tokens").mkdir()
        conf = work / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {work / 'tokens'}\nlog.level = ERROR\n")
        os.environ["SOFTHSM2_CONF"] = str(conf)
        pin = secrets.token_hex(6)
        subprocess.run(
            [util, "--init-token", "--free", "--label", "bench", "--pin", pin, "--so-pin", pin],
            check=True,
            capture_output=True,
        )
        from idcode.pkcs11store import open_token_key_store  # after SOFTHSM2_CONF is set

        stores: dict[str, ManagedKeyStore] = {
            "file": open_key_store(work / "keys"),
            "token": open_token_key_store(TokenSettings(module, "bench", SecretStr(pin), None)),
        }
        now = int(time.time())
        card = random_card()
        print(f"python {sys.version.split()[0]}, {module}, {args.rounds} rounds x {args.codes}")
        print(f"{'figure':<34}{'file us':>10}{'token us':>10}{'token/file':>12}")
        for number, alg in enumerate((Algorithm.EDDSA, Algorithm.ES256)):
            signers: dict[str, Signer] = {}
            for name, store in stores.items():
                if number == 0:
                    initialise(store, now, 90, alg)
                else:
                    rotate(store, now + number, 90, alg, starts_in=0)
                signers[name] = store.signing_key(now + number)
            times: dict[str, list[float]] = {name: [] for name in stores}
            for _ in range(args.rounds):
                for name, signer in signers.items():

                    def mint(signer: Signer = signer, at: int = now + number) -> object:
                        return mint_code(card, signer, prefix="WH1:", now=at)

                    times[name].append(per_call_us(mint, args.codes))
            file_us, token_us = (statistics.median(times[n]) for n in ("file", "token"))
            print(
                f"{'mint a code, ' + alg.jose_name:<34}{file_us:>10.1f}{token_us:>10.1f}"
                f"{token_us / file_us:>11.2f}x"
            )
        status = StatusList(65_536)
        bundle_times = {}
        for name, store in stores.items():
            root = store.root_key()
            keys = store.published_keys(now + 2)

            def bundle(root: RootKey = root, keys: list[PublicKey] = keys) -> object:
                return sign_bundle(
                    root, version=now, issued_at=now, max_age=3600, keys=keys, status=status
                )

            bundle_times[name] = statistics.median(per_call_us(bundle, 50) for _ in range(3))
        print(
            f"{'sign a trust bundle (64 Ki cards)':<34}{bundle_times['file']:>10.1f}"
            f"{bundle_times['token']:>10.1f}{bundle_times['token'] / bundle_times['file']:>11.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
