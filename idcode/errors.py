"""Every error idcode raises on purpose, in one tree, so a caller reads it in one file and
writes one ``except IdcodeError``.

The verifier never raises these on bad codes (it returns a verdict with a reason); they
signal input that is not what it claims to be, misuse of the library, unusable
configuration, a refusal with a machine-readable reason, or a dependency that is away.
The modules that raise an error also export it under their own name (``idcode.bundle``
exports ``BundleError``), so older imports keep working.

    IdcodeError
    ├── FormatError (ValueError): bytes or text that are not what they claim to be
    │   ├── CborError, CoseError, CodeFormatError, StatusListError, Base64UrlError,
│   │   UnstorableText
    │   └── ClaimsError
    │       └── PassWindowError
    ├── BundleError (ValueError): a trust bundle or status delta is refused
    ├── KeyMaterialError (ValueError): a key or JWK is unusable
    ├── KeyStoreError: the key store cannot give what was asked
    │   ├── SecretFileExists
    │   └── UnsafeFileError: a trusted file others could have changed
    ├── SceneError (ValueError): a scene adapter, its data or its decision is unusable
    ├── InvalidIdNumber (ValueError): not a valid national ID number
    ├── PersonalDataError: personal data cannot be sealed or opened
    ├── ConfigurationError: a setting is unusable
    │   └── RedisURLError (ValueError): IDCODE_REDIS_URL names no usable Redis
    ├── UsageError: a command's input is unusable (exit status 2)
    ├── ProvisioningError: a terminal's directory or registration is unusable
    ├── ServiceError: the service answered a terminal with an error
    │   └── BadResponse: an answer the service does not give (garbled, redirected, too big)
    ├── Refusal: the service refuses a request, with a machine-readable ``reason``
    │   ├── AuthError: an ID token is missing or refused
    │   ├── TerminalAuthError: a terminal's request token is refused
    │   ├── DeviceAuthError: a citizen's device's request token is refused
    │   ├── SignInRefused: the development IdP refuses a sign-in (RFC 6749 error codes)
    │   │   ├── UntrustedRedirect: unknown client or redirect URI (an error page, no redirect)
    │   │   └── AuthorizationRefused: an error sent back to the redirect URI
    │   ├── CardError: a card operation cannot be done
    │   └── RequestRefused: a terminal, scene-data or event request cannot be done
    └── UnavailableError: something idcode needs is away (exit status 3)
        ├── ServiceUnreachable: the service, from a terminal or a command
        └── DatabaseUnavailable: the database, from a service command
"""

from __future__ import annotations


class IdcodeError(Exception):
    """Base of every error idcode raises on purpose."""


# -- input that is not what it claims to be ----------------------------------------------------


class FormatError(IdcodeError, ValueError):
    """Bytes or text that are not in the format idcode reads."""


class CborError(FormatError):
    """Not CBOR of the strict subset idcode reads (no tags, floats or indefinite lengths)."""


class CoseError(FormatError):
    """The bytes are not a COSE_Sign1 message of the shape idcode issues."""


class CodeFormatError(FormatError):
    """The code text is not prefix + base45 of the right length and alphabet."""


class StatusListError(FormatError):
    """A status list or status delta is not well formed."""


class Base64UrlError(FormatError):
    """The text is not canonical unpadded base64url."""


class UnstorableText(FormatError):
    """Text with a character the database cannot store (NUL, an unpaired surrogate)."""


class ClaimsError(FormatError):
    """The claims are not a valid idcode claims set."""


class PassWindowError(ClaimsError):
    """A visitor pass window that may not be issued; ``reason`` is the machine-readable
    cause (too long, too far ahead, reversed)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- trust and keys ----------------------------------------------------------------------------


class BundleError(IdcodeError, ValueError):
    """A trust bundle or status delta is refused: not signed by the pinned root key, the
    wrong type, or contents that are not allowed."""


class KeyMaterialError(IdcodeError, ValueError):
    """A key or JWK is unusable (wrong type, curve, kid or validity)."""


class KeyStoreError(IdcodeError):
    """The key store cannot provide what was asked (no signing key, locked key, bad files)."""


class SecretFileExists(KeyStoreError):
    """A secret file is already there; it is never overwritten."""


class UnsafeFileError(KeyStoreError):
    """A file or directory idcode trusts (keys, the pinned root key, a terminal's trust) could
    have been changed by someone else: another user owns it, others may write to it, or it is
    a symbolic link. Refused on every read, not only when written."""


# -- scenes and people -------------------------------------------------------------------------


class SceneError(IdcodeError, ValueError):
    """A scene adapter, its scene data or one of its decisions is unusable."""


class InvalidIdNumber(IdcodeError, ValueError):
    """Not a valid national ID number (GB 11643). The message never repeats the number."""


class PersonalDataError(IdcodeError):
    """Personal data cannot be sealed or opened (missing or wrong keys, tampered value)."""


# -- configuration and use ---------------------------------------------------------------------


class ConfigurationError(IdcodeError):
    """A setting is unusable; the message names the ``IDCODE_*`` variable."""


class RedisURLError(ConfigurationError, ValueError):
    """An ``IDCODE_REDIS_URL`` that names no usable Redis (idcode.service.redistopology); the
    message never repeats the URL, which may hold a password. A ValueError, so that the
    settings' validator reports it as a bad value."""


class UsageError(IdcodeError):
    """A command's input is unusable; the CLI reports it with exit status 2."""


class ProvisioningError(IdcodeError):
    """A terminal's directory, key or registration is unusable."""


class ServiceError(IdcodeError):
    """The service answered a terminal's request with an error (``status``, ``reason``)."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"the service answered {status} {reason}: {detail}".rstrip(": "))
        self.status = status
        self.reason = reason


class BadResponse(ServiceError):
    """An answer the service does not give: not well-formed HTTP, cut short, redirected, or not
    the content asked for (a captive portal's page, a broken proxy, a hostile network).
    ``reason`` is ``bad_response`` (``response_too_large`` for an answer over the size a terminal
    reads); ``status`` is the HTTP status read, 0 when there was none.
    Nothing in it is acted on: the terminal keeps its trust and its events, and tries again."""

    def __init__(self, status: int, detail: str, reason: str = "bad_response") -> None:
        IdcodeError.__init__(
            self,
            f"unusable answer from the service ({f'HTTP {status}' if status else 'no HTTP status'}"
            f", {reason}): {detail}",
        )
        self.status = status
        self.reason = reason


# -- refusals with a reason (the service) ------------------------------------------------------


class Refusal(IdcodeError):
    """The service refuses a request; ``reason`` is the machine-readable cause that the API
    returns in its problem document."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AuthError(Refusal):
    """The caller's ID token is missing or refused (missing_token, token_expired,
    invalid_token, idp_unavailable)."""


class TerminalAuthError(Refusal):
    """A terminal's request token is refused."""


class RelyingPartyAuthError(Refusal):
    """A relying party's request token is refused."""


class DeviceAuthError(Refusal):
    """A citizen's device's request token is refused."""


class ConsentRefused(Refusal):
    """An identification is refused: the code, its consent or the card does not allow it."""

    def __init__(self, reason: str, message: str, status: int = 403) -> None:
        super().__init__(reason, message)
        self.status = status


class SignInRefused(Refusal):
    """A sign-in request the development identity provider refuses (idcode.service.devidp):
    ``reason`` is RFC 6749's error code (``invalid_request``, ``invalid_grant``...), ``status``
    the HTTP status of a token request's answer."""

    def __init__(self, reason: str, message: str, status: int = 400) -> None:
        super().__init__(reason, message)
        self.status = status


class UntrustedRedirect(SignInRefused):
    """An authorization request whose client or redirect URI cannot be trusted: the error is
    shown to the person, never sent to the redirect URI (RFC 6749 section 4.1.2.1)."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_request", message)


class AuthorizationRefused(SignInRefused):
    """An authorization request refused with an error sent back to its (trusted) redirect
    URI, with the request's state."""

    def __init__(self, reason: str, message: str, redirect_uri: str, state: str | None) -> None:
        super().__init__(reason, message)
        self.redirect_uri, self.state = redirect_uri, state


class CardError(Refusal):
    """A card operation cannot be done."""


class RequestRefused(Refusal):
    """A request about terminals, scene data or events cannot be done."""


# -- something needed is away -------------------------------------------------------------------


class UnavailableError(IdcodeError):
    """Something idcode needs is away (the service, the database); trying later may work.
    The CLI reports it with exit status 3."""


class ServiceUnreachable(UnavailableError):
    """No answer from the service: the network or the service is down."""


class DatabaseUnavailable(UnavailableError):
    """The database cannot be reached."""


class RecordingFailed(IdcodeError):
    """The transaction that was to record a group of identifications failed: nothing of
    this identification was recorded or disclosed. ``unavailable``: the database could not
    be used (a 503); otherwise a defect (a 500)."""

    def __init__(self, unavailable: bool) -> None:
        super().__init__("the identification could not be recorded")
        self.unavailable = unavailable
