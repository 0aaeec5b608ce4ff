"""The access log (uvicorn's, one line per request) without pairwise subjects.

``PUT``/``DELETE /v1/links/{subject}`` carry a relying party's subject in the path, and
``idcode serve`` logs every request line by default; docs/identity.md promises that no log
line holds a subject. The subject is written as ``{subject}`` before any handler sees the line
(request paths, even malformed ones, are the caller's text: they are masked whatever they hold).
Likewise the authorization code the identity provider sends the web wallet back with
(``/wallet/?code=...``), and the operator console (``/console/auth/callback?code=...``), is
written ``{code}``: it is short-lived and bound to a PKCE verifier, but a log is no place for a
credential.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
_LINK_PATH = re.compile(r"(/v1/links/)[^?\s]*")
#: The wallet's and the console's sign-in answer: an authorization code in its query.
_AUTHORIZATION_CODE = re.compile(r"([?&]code=)[^&\s]*")


class MaskSubjects(logging.Filter):
    """Rewrites the path of uvicorn's access lines (``%s - "%s %s HTTP/%s" %d``) so that a
    subject in a links path does not reach any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            masked = _LINK_PATH.sub(r"\1{subject}", args[2])
            if masked.startswith(("/wallet", "/console/auth/callback")):
                masked = _AUTHORIZATION_CODE.sub(r"\1{code}", masked)
            if masked != args[2]:
                record.args = (*args[:2], masked, *args[3:])
        return True


def install() -> None:
    """Mask subjects in the access log of this process (once, however many apps it builds)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, MaskSubjects) for existing in logger.filters):
        logger.addFilter(MaskSubjects())
