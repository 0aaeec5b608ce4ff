"""One exception tree for idcode, so a caller can write a single ``except IdcodeError``.

The verifier never raises these on bad codes (it returns a verdict); they signal misuse of
the library or unusable configuration: bad keys, a broken key store, invalid claims to sign.
"""

from __future__ import annotations


class IdcodeError(Exception):
    """Base of every error idcode raises on purpose."""


class ClaimsError(IdcodeError, ValueError):
    """The claims are not a valid idcode claims set."""


class CoseError(IdcodeError, ValueError):
    """The bytes are not a COSE_Sign1 message of the shape idcode issues."""


class CodeFormatError(IdcodeError, ValueError):
    """The code text is not prefix + base45 of the right length and alphabet."""


class KeyMaterialError(IdcodeError, ValueError):
    """A key or JWK is unusable (wrong type, curve, kid or validity)."""


class KeyStoreError(IdcodeError):
    """The key store cannot provide what was asked (no signing key, locked key, bad files)."""


class UnsafeFileError(KeyStoreError):
    """A file or directory idcode trusts (keys, the pinned root key, a terminal's trust) could
    have been changed by someone else: another user owns it, others may write to it, or it is
    a symbolic link. Refused on every read, not only when written."""
