"""Revocation status lists in the style of the IETF OAuth Token Status List, and their deltas.

One bit per card, at the card's status index (the index in its codes): 0 valid, 1 not valid
(suspended, lost or revoked; a terminal denies all three). Index ``i`` is bit ``i % 8``
(least significant first) of byte ``i // 8``, and the bytes travel ZLIB-compressed (level 9)
and base64url-encoded as ``{"bits": 1, "lst": ...}``, as draft-ietf-oauth-status-list
specifies. A delta lists the indices set and cleared between two versions, as sorted gaps in
LEB128 varints, so a terminal that syncs every minute downloads only what changed.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from idcode import b64url
from idcode.claims import MAX_STATUS_INDEX
from idcode.errors import StatusListError as StatusListError

MAX_ENTRIES = MAX_STATUS_INDEX + 1


_b64url = b64url.encode
STATUS_LIST_MEMBERS = frozenset({"bits", "size", "lst"})
DELTA_MEMBERS = frozenset({"base", "target", "size", "invalidated", "validated", "revoked_devices"})
#: The most device ids one bundle or delta lists (docs/code-format.md section 8).
MAX_REVOKED_DEVICES = 100_000


def _unb64url(text: object, what: str) -> bytes:
    try:
        return b64url.decode(text)
    except b64url.Base64UrlError as exc:
        raise StatusListError(f"{what}: {exc}") from None


def _inflate(data: bytes, limit: int, what: str) -> bytes:
    """ZLIB-decompress at most ``limit`` bytes: a small hostile input cannot expand to
    gigabytes. Exactly one ZLIB stream: nothing may follow its end (a second stream or junk
    would be bytes the signer did not mean and other decoders read differently)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, max(limit, 1))  # 0 would mean "no limit" to zlib
    except zlib.error:
        raise StatusListError(f"{what} is not ZLIB data") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise StatusListError(f"{what} decompresses to more than {limit} bytes or is truncated")
    if inflater.unused_data:
        raise StatusListError(f"{what} has data after the end of its ZLIB stream")
    return out


def _members(document: object, allowed: frozenset[str], what: str) -> dict[str, Any]:
    """``document`` as a JSON object with no members but ``allowed``: an unknown member is
    refused, not ignored, so a format change an older terminal cannot read fails loudly."""
    if not isinstance(document, dict):
        raise StatusListError(f"{what} is a JSON object")
    unknown = sorted(str(name)[:32] for name in document.keys() - allowed)
    if unknown:
        raise StatusListError(f"{what} has unknown members {unknown}")
    return document


def _integer(value: object, name: str, low: int, high: int) -> int:
    # type() rather than isinstance(): True and False are ints to Python, and 1.0 is not one.
    if type(value) is not int or not low <= value <= high:
        raise StatusListError(f"{name} must be an integer in {low}..{high}")
    return value


class StatusList:
    """A mutable list of ``size`` status bits."""

    def __init__(self, size: int, bits: bytes | bytearray | None = None) -> None:
        if not 0 <= size <= MAX_ENTRIES:
            raise StatusListError(f"a status list holds 0..{MAX_ENTRIES} entries")
        length = (size + 7) // 8
        self.size = size
        self._bits = bytearray(bits) if bits is not None else bytearray(length)
        if len(self._bits) != length:
            raise StatusListError("the bit array does not match the list's size")

    def is_invalid(self, index: int) -> bool:
        """True when the card at ``index`` must be denied. An index past the end belongs to a
        card enrolled after this list was made, which nothing can have revoked yet."""
        if 0 <= index < self.size:
            return bool(self._bits[index >> 3] >> (index & 7) & 1)
        return False

    def set(self, index: int, invalid: bool) -> None:
        if not 0 <= index < self.size:
            raise StatusListError(f"index {index} is outside the list (size {self.size})")
        if invalid:
            self._bits[index >> 3] |= 1 << (index & 7)
        else:
            self._bits[index >> 3] &= ~(1 << (index & 7)) & 0xFF

    def invalid_indices(self) -> list[int]:
        return [i for i in range(self.size) if self.is_invalid(i)]

    def to_json(self) -> dict[str, Any]:
        return {"bits": 1, "size": self.size, "lst": _b64url(zlib.compress(bytes(self._bits), 9))}

    @classmethod
    def from_json(cls, document: object) -> StatusList:
        """Read ``{"bits": 1, "size": N, "lst": ...}`` strictly: exactly these members,
        ``bits`` the integer 1 (one bit per card; not ``true``, not ``1.0``), ``size`` an
        integer, ``lst`` canonical unpadded base64url of one ZLIB stream that inflates to
        exactly the bytes ``size`` needs."""
        document = _members(document, STATUS_LIST_MEMBERS, "a status list")
        if type(document.get("bits")) is not int or document["bits"] != 1:
            raise StatusListError('a status list is {"bits": 1, "size": N, "lst": ...}')
        size = _integer(document.get("size"), "size", 0, MAX_ENTRIES)
        bits = _inflate(_unb64url(document.get("lst"), "lst"), (size + 7) // 8, "lst")
        if len(bits) != (size + 7) // 8:
            raise StatusListError("the bit array does not match the list's size")
        if size % 8 and bits[-1] >> (size % 8):
            # Padding bits past the end would mark future cards revoked when the list grows.
            raise StatusListError("bits past the end of the list must be zero")
        return cls(size, bits)

    def copy(self) -> StatusList:
        return StatusList(self.size, self._bits)

    def grown(self, size: int) -> StatusList:
        """This list extended (with valid entries) to ``size``."""
        if size < self.size:
            raise StatusListError("a status list never shrinks")
        grown = StatusList(size)
        grown._bits[: len(self._bits)] = self._bits
        return grown

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StatusList) and (self.size, self._bits) == (
            other.size,
            other._bits,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable


def _varints(numbers: Iterable[int]) -> bytes:
    out = bytearray()
    for number in numbers:
        while True:
            byte = number & 0x7F
            number >>= 7
            out.append(byte | (0x80 if number else 0))
            if not number:
                break
    return bytes(out)


def _read_varints(data: bytes, limit: int) -> list[int]:
    numbers, value, shift = [], 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if shift > 35:
            raise StatusListError("a varint is too long")
        if not byte & 0x80:
            if byte == 0 and shift > 7:
                # 0x80 0x00 is 0 in two bytes: each number has one encoding, the shortest.
                raise StatusListError("a varint is not in its shortest form")
            numbers.append(value)
            value, shift = 0, 0
            if len(numbers) > limit:
                raise StatusListError(f"more than {limit} changes")
    if shift:
        raise StatusListError("a varint is truncated")
    return numbers


def _encode_indices(indices: Iterable[int]) -> str:
    ordered = sorted(set(indices))
    gaps = [b - a for a, b in zip([-1, *ordered], ordered, strict=False)]
    return _b64url(zlib.compress(_varints(gaps), 9))


def _decode_indices(text: object, size: int, what: str) -> list[int]:
    gaps = _read_varints(_inflate(_unb64url(text, what), 5 * MAX_ENTRIES, what), MAX_ENTRIES)
    indices, position = [], -1
    for gap in gaps:
        if gap < 1:
            raise StatusListError("indices must be strictly increasing")
        position += gap
        if position >= size:
            raise StatusListError(f"index {position} is outside the list (size {size})")
        indices.append(position)
    return indices


@dataclass(frozen=True)
class StatusDelta:
    """What changed from list version ``base`` to ``target``."""

    base: int
    target: int
    size: int
    invalidated: tuple[int, ...]
    validated: tuple[int, ...]
    #: Devices removed in versions (base, target]: terminals add them to their bundle's list.
    revoked_devices: tuple[bytes, ...] = ()

    @classmethod
    def between(cls, old: StatusList, new: StatusList, base: int, target: int) -> StatusDelta:
        if new.size < old.size:
            raise StatusListError("a status list never shrinks")
        old = old.grown(new.size)
        invalidated: list[int] = []
        validated: list[int] = []
        for byte_index, (before, after) in enumerate(zip(old._bits, new._bits, strict=True)):
            changed = before ^ after
            while changed:
                bit = changed & -changed
                index = byte_index * 8 + bit.bit_length() - 1
                (invalidated if after & bit else validated).append(index)
                changed ^= bit
        return cls(base, target, new.size, tuple(invalidated), tuple(validated))

    def apply(self, status: StatusList) -> StatusList:
        if self.size < status.size:
            raise StatusListError("a delta cannot shrink a status list")
        updated = status.grown(self.size)
        for index in self.invalidated:
            updated.set(index, True)
        for index in self.validated:
            updated.set(index, False)
        return updated

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "target": self.target,
            "size": self.size,
            "invalidated": _encode_indices(self.invalidated),
            "validated": _encode_indices(self.validated),
            **(
                {"revoked_devices": device_ids_to_json(self.revoked_devices)}
                if self.revoked_devices
                else {}
            ),
        }

    @classmethod
    def from_json(cls, document: object) -> StatusDelta:
        """Read a delta as strictly as a status list: exactly its five members and
        optionally ``revoked_devices`` (a list, as in a bundle), integers that are ints,
        index lists in canonical base64url of one ZLIB stream each."""
        document = _members(document, DELTA_MEMBERS, "a delta")
        base, target, size = (document.get(name) for name in ("base", "target", "size"))
        if not (
            type(base) is int
            and type(target) is int
            and type(size) is int
            and 0 <= base <= target
            and 0 <= size <= MAX_ENTRIES
        ):
            raise StatusListError("need integers 0 <= base <= target and 0 <= size")
        invalidated = tuple(_decode_indices(document.get("invalidated"), size, "invalidated"))
        validated = tuple(_decode_indices(document.get("validated"), size, "validated"))
        if set(invalidated) & set(validated):
            raise StatusListError("an index cannot become both invalid and valid")
        revoked = (
            tuple(device_ids_from_json(document["revoked_devices"]))
            if "revoked_devices" in document
            else ()
        )
        return cls(base, target, size, invalidated, validated, revoked)


_DEVICE_ID = re.compile(r"[0-9a-f]{16}")


def device_ids_to_json(device_ids: Iterable[bytes]) -> list[str]:
    """Device ids (8 bytes each) as a bundle or delta lists them: sorted lower-case hex.
    StatusListError past MAX_REVOKED_DEVICES: terminals would refuse the document (and keep
    their old trust until it went stale), so it is refused where it is signed."""
    ids = sorted({device_id.hex() for device_id in device_ids})
    if len(ids) > MAX_REVOKED_DEVICES:
        raise StatusListError(
            f"revoked_devices lists at most {MAX_REVOKED_DEVICES} ids, got {len(ids)}"
        )
    return ids


def device_ids_from_json(document: object) -> frozenset[bytes]:
    """The device ids of a ``revoked_devices`` member, read strictly: a list of at most
    MAX_REVOKED_DEVICES distinct 16-character lower-case hex strings in increasing order."""
    if not isinstance(document, list) or len(document) > MAX_REVOKED_DEVICES:
        raise StatusListError(f"revoked_devices is a list of at most {MAX_REVOKED_DEVICES} ids")
    previous = ""
    for item in document:
        if not isinstance(item, str) or not _DEVICE_ID.fullmatch(item):
            raise StatusListError("a revoked device id is 16 lower-case hex characters")
        if item <= previous:
            raise StatusListError("revoked device ids must be sorted and distinct")
        previous = item
    return frozenset(bytes.fromhex(item) for item in document)
