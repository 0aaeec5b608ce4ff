"""SoftHSM2, the distribution's software token, for the PKCS#11 key store's tests.

scripts/test installs it where it is missing and sets IDCODE_TEST_SOFTHSM=required, so that
there these tests fail rather than skip without it (as IDCODE_TEST_PROMTOOL does for
promtool). IDCODE_TEST_SOFTHSM_MODULE names the module where it is not in a usual place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

SOFTHSM_UTIL = shutil.which("softhsm2-util")
_CANDIDATES = (
    os.environ.get("IDCODE_TEST_SOFTHSM_MODULE"),
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)
MODULE = next((Path(c) for c in _CANDIDATES if c and Path(c).is_file()), None)
MISSING = (
    "SoftHSM2 is missing (softhsm2-util and libsofthsm2.so): apt-get install softhsm2 (Debian)"
    if SOFTHSM_UTIL is None or MODULE is None
    else None
)
if MISSING and os.environ.get("IDCODE_TEST_SOFTHSM") == "required":
    raise RuntimeError(MISSING)

needs_softhsm = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
