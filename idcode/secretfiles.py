"""Secret and trusted files: written atomically, mode 0600, in a 0700 directory, never over
another; and checked on every read (owner, mode, no symbolic link), not only when written."""

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

from idcode.errors import KeyStoreError, SecretFileExists, UnsafeFileError


def ensure_private_directory(directory: Path) -> None:
    """Create ``directory`` with mode 0700, or check an existing one.

    An existing directory keeps its mode: the files in it are 0600 either way (a checkout's
    keys/ is 0755 because it holds a tracked README). One that others can write to, or that
    another user owns, is refused (check_trusted_directory), since they could swap a file.
    """
    try:
        directory.mkdir(mode=0o700, parents=True)
        return
    except FileExistsError:
        pass  # already there (perhaps made a moment ago by another process): check it
    check_trusted_directory(directory)


def _trusted_owner(uid: int) -> bool:
    """Files this process may trust: its own, or root's (root can replace any file anyway,
    so trusting what root owns adds no one; ssh's StrictModes draws the same line)."""
    return uid in (os.geteuid(), 0)


def _owner_problem(path: Path, uid: int) -> str:
    return (
        f"{path} is owned by uid {uid}, not by this process's user (uid {os.geteuid()}), "
        f"who could replace what idcode trusts there; 'chown' it to the user idcode runs as"
    )


def check_trusted_directory(directory: Path) -> None:
    """Refuse a directory whose files idcode cannot trust: one that group or others can write
    to, or that another user owns (either could add or swap a file in it).

    A symbolic link to a directory is followed and the target checked, so a deployment may
    point ``IDCODE_KEYS_DIR`` at a mounted secrets directory.
    """
    try:
        status = directory.stat()
    except FileNotFoundError:
        raise KeyStoreError(f"{directory} does not exist") from None
    except OSError as exc:
        raise KeyStoreError(f"cannot read {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(status.st_mode):
        raise KeyStoreError(f"{directory} is not a directory")
    if os.name != "posix":  # pragma: no cover (Windows has ACLs, not modes)
        return
    if not _trusted_owner(status.st_uid):
        raise UnsafeFileError(_owner_problem(directory, status.st_uid))
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFileError(
            f"{directory} is writable by group or others "
            f"(mode {stat.S_IMODE(status.st_mode):o}), who could swap a key file; "
            f"'chmod go-w {directory}' or use a private directory"
        )


def check_trusted_file(path: Path, *, secret: bool = False) -> None:
    """Refuse a file idcode cannot trust: a symbolic link or anything but a regular file
    (idcode writes its files itself, by rename, never as links, so a link was put there by
    someone else and may point anywhere), a file another user owns, or one that group or
    others can write to. A ``secret`` file must not be readable by them either, as ssh
    refuses a private key that others can read.

    Raises FileNotFoundError when there is no file, so a caller can tell "missing" apart.
    """
    status = path.lstat()
    if stat.S_ISLNK(status.st_mode):
        raise UnsafeFileError(
            f"{path} is a symbolic link; idcode refuses links in its key and terminal "
            "directories (it never writes one): replace it with the file itself"
        )
    if not stat.S_ISREG(status.st_mode):
        raise UnsafeFileError(f"{path} is not a regular file")
    if os.name != "posix":  # pragma: no cover
        return
    mode = stat.S_IMODE(status.st_mode)
    if not _trusted_owner(status.st_uid):
        raise UnsafeFileError(_owner_problem(path, status.st_uid))
    if secret and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UnsafeFileError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFileError(
            f"{path} is writable by group or others (mode {mode:o}), who could replace "
            f"what it holds; 'chmod go-w {path}'"
        )


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
    on whichever file was linked first. The directory and the file are checked on every read,
    not only when written: a development key another user could swap is refused."""
    if not path.exists() and not path.is_symlink():
        with suppress(SecretFileExists):
            write_secret_file(path, make())
    check_trusted_directory(path.parent)
    check_private(path)
    return path.read_bytes()


def read_existing_secret(path: Path, missing: str) -> bytes:
    """The secret in ``path``, which must already exist; ``missing`` says why, and what to do.

    For a command that works with the keys of a running service (``dev-token``, ``cards
    import``): creating one there would only make a token the service refuses, or enrol
    cards the service cannot find, so the command stops with the absolute path instead."""
    if not path.exists() and not path.is_symlink():
        raise KeyStoreError(f"no {path.name} in {path.parent.absolute()}: {missing}")
    check_trusted_directory(path.parent)
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
    """Refuse a secret file that group or others can read or write, that another user owns,
    or that is a symbolic link (check_trusted_file)."""
    check_trusted_file(path, secret=True)
