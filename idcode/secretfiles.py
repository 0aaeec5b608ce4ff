"""Writing secret files: atomically, mode 0600, in a 0700 directory, never over another."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

from idcode.errors import KeyStoreError


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0700, or check an existing one.

    An existing directory keeps its mode: the files in it are 0600 either way (a checkout's
    keys/ is 0755 because it holds a tracked README). One that others can write to is
    refused, since they could replace a key file.
    """
    try:
        directory.mkdir(mode=0o700, parents=True)
        return
    except FileExistsError:
        pass  # already there (perhaps made a moment ago by another process): check it
    if not directory.is_dir():
        raise KeyStoreError(f"{directory} is not a directory")
    if os.name == "posix" and directory.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeyStoreError(
            f"{directory} is writable by group or others, who could swap a key file; "
            f"'chmod go-w {directory}' or use a private directory"
        )


class SecretFileExists(KeyStoreError):
    """The secret file is already there (possibly written a moment ago by another process)."""


def write_secret_file(path: Path, content: bytes, *, replace: bool = False) -> None:
    """Write ``content`` to ``path`` with mode 0600; refuse to overwrite unless ``replace``.

    The file appears whole or not at all. Without ``replace`` it is linked into place, which
    fails atomically when the path exists, so of two processes creating the same file at
    once exactly one wins and the other gets SecretFileExists.
    """
    ensure_private_directory(path.parent)
    if path.exists() and not replace:
        raise SecretFileExists(f"{path} already exists")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise SecretFileExists(f"{path} already exists") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_or_create_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """The secret in ``path``, created with ``make()`` if missing; concurrent creators agree
    on whichever file was linked first."""
    if not path.exists():
        with suppress(SecretFileExists):
            write_secret_file(path, make())
    check_private(path)
    return path.read_bytes()


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (POSIX ``flock``; a no-op elsewhere), so that
    processes starting together create a key store once."""
    ensure_private_directory(directory)
    if fcntl is None:
        yield
        return
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_private(path: Path) -> None:
    """Refuse a secret file that group or others can read, as ssh does."""
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyStoreError(
            f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
