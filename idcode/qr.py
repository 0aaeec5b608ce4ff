"""QR rendering of code text, in alphanumeric mode at error-correction level M."""

from __future__ import annotations

from pathlib import Path

import qrcode
import qrcode.constants
import qrcode.image.svg

from idcode.errors import IdcodeError

ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M


def _qr(code: str) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECTION, box_size=8, border=4)
    # optimize=0 keeps the whole text as one alphanumeric segment: base45 and the prefix use
    # only QR alphanumeric characters, and mode switches would cost bits, not save them.
    qr.add_data(code, optimize=0)
    qr.make(fit=True)
    return qr


def qr_version(code: str) -> int:
    """The smallest QR version (1-40) that holds ``code`` at level M."""
    return int(_qr(code).version)


def write_qr(code: str, path: Path) -> int:
    """Render ``code`` to a PNG or SVG file chosen by the suffix; returns the QR version."""
    qr = _qr(code)
    suffix = path.suffix.lower()
    if suffix == ".png":
        image = qr.make_image()
    elif suffix == ".svg":
        image = qr.make_image(image_factory=qrcode.image.svg.SvgPathImage)
    else:
        raise IdcodeError(f"cannot tell the image format from {path.name!r}; use .png or .svg")
    with path.open("wb") as handle:
        image.save(handle)
    return int(qr.version)
