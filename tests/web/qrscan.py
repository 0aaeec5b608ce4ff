"""Reading the QR code off a screenshot, as a terminal's camera would: zxing-cpp on the
pixels, nothing taken from the page's own text."""

from __future__ import annotations

import io

import zxingcpp
from PIL import Image


def read_qr(png: bytes) -> zxingcpp.Barcode:
    """The one QR code in ``png``; AssertionError when there is none or more than one."""
    found = [
        barcode
        for barcode in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
        if barcode.format == zxingcpp.BarcodeFormat.QRCode and barcode.valid
    ]
    assert len(found) == 1, f"expected one QR code in the screenshot, found {len(found)}"
    return found[0]
