"""QR rendering: a realistic code is version 7 at level M, in PNG and SVG."""

from __future__ import annotations

from pathlib import Path

import pytest

from idcode.claims import AgeBand, Programme, Residency
from idcode.errors import IdcodeError
from idcode.qr import qr_version, write_qr
from idcode.testing import TestIssuer, random_card


def realistic_code(issuer: TestIssuer) -> str:
    card = random_card(
        status_index=12_345_678,
        residency=Residency.REGISTERED,
        age_band=AgeBand.AGE_65_69,
        programmes=Programme.HOME_CARE | Programme.MEAL_SUBSIDY,
    )
    return issuer.mint(card)


def test_realistic_code_has_170_base45_characters_and_fits_qr_7_m(issuer: TestIssuer) -> None:
    code = realistic_code(issuer)
    assert len(code) == len("WH1:") + 170
    assert qr_version(code) == 7


def test_es256_code_is_the_same_size(es256_issuer: TestIssuer) -> None:
    assert qr_version(realistic_code(es256_issuer)) == 7


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_qr_is_written_as_png_or_svg(
    issuer: TestIssuer, tmp_path: Path, suffix: str, magic: bytes
) -> None:
    path = tmp_path / f"code{suffix}"
    assert write_qr(realistic_code(issuer), path) == 7
    assert path.read_bytes().startswith(magic)


def test_unknown_image_format_is_an_error(issuer: TestIssuer, tmp_path: Path) -> None:
    with pytest.raises(IdcodeError, match=r"\.png or \.svg"):
        write_qr(realistic_code(issuer), tmp_path / "code.gif")
