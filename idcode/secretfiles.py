"""Writing secret files: atomically, mode 0600, in a 0700 directory, never over another."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from idcode.errors import KeyStoreError


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0700, or check an existing one.

    An existing directory keeps its mode: the files in it are 0600 either way (a checkout's
    keys/ is 0755 because it holds a tracked README). One that others can write to is
    refused, since they could replace a key file.
    """
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        return
    if not directory.is_dir():
        raise KeyStoreError(f"{directory} is not a directory")
    if os.name == "posix" and directory.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeyStoreError(f"{directory} is writable by others; use a private directory")


def write_secret_file(path: Path, content: bytes, *, replace: bool = False) -> None:
    """Write ``content`` to ``path`` with mode 0600; refuse to overwrite unless ``replace``."""
    ensure_private_directory(path.parent)
    if path.exists() and not replace:
        raise KeyStoreError(f"{path} already exists")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others can read, as ssh does."""
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
