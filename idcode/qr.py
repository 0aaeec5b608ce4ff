"""QR rendering of code text, in alphanumeric mode at error-correction level M."""

from __future__ import annotations

import io
from pathlib import Path

import qrcode
import qrcode.constants
import qrcode.exceptions
import qrcode.image.svg

from idcode.errors import IdcodeError

ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M


def _qr(code: str) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECTION, box_size=8, border=4)
    # optimize=0 keeps the whole text as one alphanumeric segment: base45 and the prefix use
    # only QR alphanumeric characters, and mode switches would cost bits, not save them.
    qr.add_data(code, optimize=0)
    try:
        qr.make(fit=True)
    except (ValueError, qrcode.exceptions.DataOverflowError):
        raise IdcodeError(f"{len(code)} characters do not fit in any QR code at level M") from None
    return qr


def qr_version(code: str) -> int:
    """The smallest QR version (1-40) that holds ``code`` at level M."""
    return int(_qr(code).version)


def qr_image(code: str, media_type: str) -> bytes:
    """``code`` as a QR image, ``image/png`` or ``image/svg+xml``."""
    qr = _qr(code)
    if media_type == "image/png":
        image = qr.make_image()
    elif media_type == "image/svg+xml":
        image = qr.make_image(image_factory=qrcode.image.svg.SvgPathImage)
    else:
        raise IdcodeError(f"no QR rendering as {media_type}; use image/png or image/svg+xml")
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue()


def write_qr(code: str, path: Path) -> int:
    """Render ``code`` to a PNG or SVG file chosen by the suffix; returns the QR version."""
    media_type = {".png": "image/png", ".svg": "image/svg+xml"}.get(path.suffix.lower())
    if media_type is None:
        raise IdcodeError(f"cannot tell the image format from {path.name!r}; use .png or .svg")
    path.write_bytes(qr_image(code, media_type))
    return qr_version(code)
